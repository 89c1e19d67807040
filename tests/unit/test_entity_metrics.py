"""Entity-level metrics for span schemes, scheme detection, invalid spans, unseen evaluation tags."""

import numpy as np
import pytest

from tagtune.errors import ConfigError
from tagtune.metrics import compute_metrics, confusion, entity_scores
from tagtune.schemes import allowed, detect_scheme, resolve_scheme

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O"]]


@pytest.mark.parametrize(
    "sents, scheme",
    [
        ([["B-PER", "I-PER", "O"], ["O", "B-LOC"]], "IOB2"),
        ([["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]], "IOB1"),
        ([["B-PER", "E-PER", "O", "S-LOC"]], "IOBES"),
        ([["B-PER", "L-PER", "O", "U-LOC"]], "BILOU"),
        ([["NN", "IN", "DT"]], "none"),
        ([["B-NP", "I-NP", "VBZ"]], "none"),  # one prefix-less tag: flat tags
        ([["O", "O"]], "none"),
    ],
)
def test_detect_scheme(sents, scheme):
    assert detect_scheme(sents)[0] == scheme


def test_explicit_scheme_must_fit_the_tags():
    assert resolve_scheme("IOB2", [["B-PER", "O"]])[0] == "IOB2"
    with pytest.raises(ConfigError, match="tagging_scheme") as err:
        resolve_scheme("IOB2", [["B-PER", "S-LOC"]])
    assert "S-LOC" in str(err.value)


def test_entity_prf_hand_computed_with_per_type_rows():
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "B-LOC"]]
    m = compute_metrics(GOLD, pred, "IOB2")
    # gold: PER(0-1) LOC(3) ORG(s1,1); pred: PER(0-1) ORG(3) ORG(s1,1) LOC(s1,2): 2 correct of 4 predicted, 3 gold
    assert (m["gold_entities"], m["pred_entities"], m["correct_entities"]) == (3, 4, 2)
    assert m["entity_precision"] == pytest.approx(0.5) and m["entity_recall"] == pytest.approx(2 / 3)
    assert m["entity_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["per_entity"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_entity"]["ORG"]["precision"] == 0.5 and m["per_entity"]["ORG"]["support"] == 1
    assert m["primary_metric"] == "entity_f1" and m["primary"] == m["entity_f1"]
    assert m["accuracy"] == pytest.approx(5 / 7)  # secondary, still there


def test_pos_keeps_accuracy_primary_and_no_entity_keys():
    m = compute_metrics([["NN", "IN"]], [["NN", "NN"]])
    assert m["tagging_scheme"] == "none" and m["primary_metric"] == "accuracy" and m["primary"] == 0.5
    assert "entity_f1" not in m and m["seqeval_f1"] == 1.0  # seqeval's report-compatible number, blind as before


@pytest.mark.parametrize(
    "pred, scheme, counts, f1",
    [
        # IOB2 strict: "I-PER" after O is no entity -> 1 predicted, 1 correct
        (["O", "I-PER", "O", "B-LOC"], "IOB2", (2, 1, 1), 2 / 3),
        # IOB1 (default mode): the same I-PER opens a one-word PER span -> 2 predicted, 1 correct
        (["O", "I-PER", "O", "B-LOC"], "IOB1", (2, 2, 1), 0.5),
        # B-LOC I-PER: strict drops the I-PER; default mode makes it a second span
        (["B-LOC", "I-PER", "O", "B-LOC"], "IOB2", (2, 2, 1), 0.5),
        (["B-LOC", "I-PER", "O", "B-LOC"], "IOB1", (2, 3, 1), 0.4),
    ],
)
def test_invalid_spans_counted_as_the_mode_prescribes(pred, scheme, counts, f1):
    s = entity_scores([["B-PER", "I-PER", "O", "B-LOC"]], [pred], scheme)
    assert (s["gold_entities"], s["pred_entities"], s["correct_entities"]) == counts
    assert s["entity_f1"] == pytest.approx(f1)


def test_unseen_eval_labels_as_o_counts_a_missed_entity_and_ignore_drops_words():
    gold = [["B-LOC", "I-LOCpart", "O", "B-PER"]]
    pred = [["B-LOC", "O", "O", "B-PER"]]  # the model cannot emit I-LOCpart
    known = ["B-LOC", "B-PER", "I-LOC", "O"]
    # a well-formed gold span whose I- tag the training split lacks
    gold2 = [["B-LOCpart", "I-LOCpart", "O", "B-PER"]]
    known2 = ["B-LOCpart", "B-PER", "O"]
    as_o = compute_metrics(gold2, [["B-LOCpart", "O", "O", "B-PER"]], "IOB2", known2, "as_o")
    assert as_o["unseen_label_words"] == 1
    assert as_o["gold_entities"] == 2 and as_o["correct_entities"] == 1  # the LOCpart span is missed
    assert as_o["entity_recall"] == 0.5 and as_o["accuracy"] == 0.75
    ign = compute_metrics(gold2, [["B-LOCpart", "O", "O", "B-PER"]], "IOB2", known2, "ignore")
    assert ign["unseen_label_words"] == 1 and ign["num_words"] == 3
    assert ign["entity_f1"] == 1.0 and ign["accuracy"] == 1.0
    # B-LOC I-LOCpart is ill-formed in strict IOB2 (the type changes): seqeval keeps only the B-LOC
    plain = compute_metrics(gold, pred, "IOB2", known, "as_o")
    assert plain["unseen_label_words"] == 1 and plain["gold_entities"] == 2


def test_confusion_uses_the_given_label_order_and_skips_unknown_gold():
    m = confusion(["O", "B-PER", "I-X"], ["O", "O", "O"], ["B-PER", "O"])
    assert m.tolist() == [[0, 1], [0, 1]] and m.dtype == np.int64


@pytest.mark.parametrize(
    "prev, tag, scheme, ok",
    [
        ("O", "I-PER", "IOB2", False),
        ("B-LOC", "I-PER", "IOB2", False),
        ("B-PER", "I-PER", "IOB2", True),
        ("<s>", "I-PER", "IOB2", False),
        ("O", "I-PER", "IOB1", True),
        ("O", "B-PER", "IOB1", False),
        ("I-PER", "B-PER", "IOB1", True),
        ("B-PER", "O", "IOBES", False),
        ("B-PER", "E-PER", "IOBES", True),
        ("S-PER", "E-PER", "IOBES", False),
        ("I-PER", "</s>", "IOBES", False),
        ("U-PER", "B-LOC", "BILOU", True),
        ("B-PER", "L-LOC", "BILOU", False),
        ("NN", "IN", "none", True),
    ],
)
def test_allowed_transitions(prev, tag, scheme, ok):
    assert allowed(prev, tag, scheme) is ok
