"""Evaluation tags unseen in training: error by default (each tag and count), or scored under ignore/as_o."""

import pytest

from tagtune import TrainConfig
from tagtune.data import Sentence, build_corpus
from tagtune.errors import ConfigError, DataError

TRAIN = [Sentence(["Anna", "lebt", "in", "Köln"], ["B-PER", "O", "O", "B-LOC"], "train.tsv:1")]
DEV = [
    Sentence(["Nord", "rhein", "ist", "da"], ["B-LOCpart", "I-LOCpart", "O", "O"], "dev.tsv:1"),
    Sentence(["Bonn", "und", "X", "Y"], ["B-LOC", "O", "B-ORG", "I-LOCpart"], "dev.tsv:6"),
]


def corpus(policy):
    cfg = TrainConfig(train_file="train.tsv", validation_file="dev.tsv", unseen_eval_labels=policy)
    return build_corpus({"train": list(TRAIN), "validation": list(DEV)}, cfg)


def test_default_error_names_each_tag_with_its_count_and_the_first_place():
    with pytest.raises(DataError) as err:
        corpus("error")
    msg = str(err.value)
    assert "'I-LOCpart' x2" in msg and "'B-LOCpart' x1" in msg and "'B-ORG' x1" in msg
    assert "dev.tsv:1" in msg and "--unseen_eval_labels" in msg


@pytest.mark.parametrize("policy", ["as_o", "ignore"])
def test_as_o_and_ignore_keep_the_real_gold_for_scoring(policy):
    c = corpus(policy)
    assert c.unseen_eval_words == 4
    assert c.eval_gold_tags == [s.tags for s in DEV]  # scored against the split's own tags
    assert [s.tags for s in c.eval] == [["O", "O", "O", "O"], ["B-LOC", "O", "O", "O"]]  # model-side ids
    assert c.labels == ["B-LOC", "B-PER", "O"]


def test_policy_value_is_validated():
    with pytest.raises(ConfigError, match="unseen_eval_labels"):
        TrainConfig(train_file="t", unseen_eval_labels="drop")
    with pytest.raises(ConfigError, match="tagging_scheme"):
        TrainConfig(train_file="t", tagging_scheme="BIO")
    with pytest.raises(ConfigError, match="constrain_decoding"):
        TrainConfig(train_file="t", tagging_scheme="none", constrain_decoding=True)
