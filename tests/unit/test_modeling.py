"""Parameter counts of the study, from configs alone (meta device: no weights, no download)."""

import pytest
from transformers import BertConfig, RobertaConfig

from tagtune import TrainConfig
from tagtune.modeling import AdapterSpec, count_parameters, model_from_config

LABELS = {i: f"T{i}" for i in range(48)}


def bert_base_cased():
    return BertConfig(vocab_size=28996, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})


def roberta_base():
    return RobertaConfig(
        vocab_size=50265,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )


@pytest.mark.parametrize(
    "make, trainable, total, unique, pct",
    [
        (bert_base_cased, 331_824, 108_088_416, 108_051_504, 0.3070),
        (roberta_base, 331_824, 124_423_776, 124_386_864, 0.2667),
    ],
)
def test_lora_counts_match_the_study(make, trainable, total, unique, pct):
    cfg = TrainConfig(dataset_name="synthetic:pos", method="lora")
    c = count_parameters(model_from_config(make(), AdapterSpec.from_config(cfg)))
    assert (c.trainable, c.total, c.unique) == (trainable, total, unique)
    assert round(c.trainable_pct, 4) == pct
    assert c.as_dict()["trainable_pct"] == pct


def test_full_counts_everything_trainable():
    cfg = TrainConfig(dataset_name="synthetic:pos", method="full")
    c = count_parameters(model_from_config(bert_base_cased(), AdapterSpec.from_config(cfg)))
    # the LoRA unique count minus its 294,912 LoRA weights: no pooler in token classification
    assert c.trainable == c.total == c.unique == 108_051_504 - 294_912


def test_lora_rank_and_targets_change_counts():
    cfg = TrainConfig(
        dataset_name="synthetic:pos", method="lora", lora_r=16, lora_target_modules=["query", "key", "value"]
    )
    c = count_parameters(model_from_config(bert_base_cased(), AdapterSpec.from_config(cfg)))
    assert c.trainable == 12 * 3 * 16 * (768 + 768) + 36_912
