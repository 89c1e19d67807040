"""Metrics against hand-computed values, including seqeval's POS quirk."""

import pytest

from tagtune.metrics import (
    compute_metrics,
    confusion,
    label_distribution,
    per_tag_scores,
    seqeval_report_compatible,
    token_accuracy,
)


def test_seqeval_pos_quirk_from_the_notes():
    gold, pred = [["NN", "IN", "DT", "NN"]], [["NN", "NN", "DT", "NN"]]
    sq = seqeval_report_compatible(gold, pred)
    assert sq["precision"] == sq["recall"] == sq["f1"] == 1.0  # seqeval is blind to the error...
    m = compute_metrics(gold, pred)
    assert m["accuracy"] == 0.75  # ...token accuracy is not
    assert m["seqeval_f1"] == 1.0 and m["macro_f1"] < 1.0


def test_per_tag_hand_computed():
    gold = ["DT", "NN", "NN", "VB", "DT", "NN"]
    pred = ["DT", "NN", "VB", "VB", "NN", "NN"]
    s = per_tag_scores(gold, pred)
    # DT: tp1 fp0 fn1 -> P1 R.5 F2/3; NN: tp2 fp1 fn1 -> P2/3 R2/3 F2/3; VB: tp1 fp1 fn0 -> P.5 R1 F2/3
    assert s["per_tag"]["DT"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert s["per_tag"]["NN"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert s["per_tag"]["VB"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert s["macro"]["precision"] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert s["macro"]["f1"] == pytest.approx(2 / 3)
    assert s["weighted"]["recall"] == pytest.approx((2 * 0.5 + 3 * 2 / 3 + 1 * 1.0) / 6)  # = accuracy
    assert token_accuracy(gold, pred) == pytest.approx(4 / 6)


def test_punctuation_dropped_by_seqeval_but_not_by_us():
    gold, pred = [[",", "NN", "."]], [[".", "NN", ","]]
    m = compute_metrics(gold, pred)
    assert m["accuracy"] == pytest.approx(1 / 3) and m["per_tag"][","]["f1"] == 0.0
    # seqeval reads "," and "." as prefix + empty type, so swapped punctuation mostly escapes it
    assert m["seqeval_f1"] == pytest.approx(2 / 3) and m["seqeval_f1"] > m["accuracy"]


def test_confusion_and_distribution():
    labels = ["DT", "NN", "VB"]
    m = confusion(["DT", "NN", "NN", "VB"], ["DT", "VB", "NN", "VB"], labels)
    assert m.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert label_distribution([["NN", "DT"], ["NN", "VB", "NN"]]) == [("NN", 3), ("DT", 1), ("VB", 1)]


def test_length_mismatch_rejected():
    with pytest.raises(ValueError):
        token_accuracy(["A"], ["A", "B"])


def test_scores_match_the_libraries_on_a_random_split():
    """per_tag_scores (one pass on ids) and seqeval_report_compatible (one pass) give exactly what
    scikit-learn's and seqeval's own functions give on the string tags, tags seen only in pred included."""
    import random

    from seqeval.metrics import f1_score, precision_score, recall_score
    from sklearn.metrics import precision_recall_fscore_support

    from tagtune.metrics import per_tag_scores, seqeval_report_compatible

    rng = random.Random(3)
    tags = ["NN", "VB", "IN", "B-NP", "I-NP", "O", "$"]
    gold = [[rng.choice(tags[:-1]) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in gold]
    g = [t for s in gold for t in s]
    p = [t for s in pred for t in s]
    ours = per_tag_scores(g, p)
    labels = sorted(set(g) | set(p))
    assert "$" in labels and "$" not in g
    for avg in ("macro", "weighted"):
        ref = precision_recall_fscore_support(g, p, labels=labels, average=avg, zero_division=0)
        assert [ours[avg][k] for k in ("precision", "recall", "f1")] == pytest.approx(ref[:3], abs=1e-12)
    ref = precision_recall_fscore_support(g, p, labels=labels, zero_division=0)
    assert [ours["per_tag"][t]["f1"] for t in labels] == pytest.approx(list(ref[2]), abs=1e-12)
    assert [ours["per_tag"][t]["support"] for t in labels] == list(ref[3])
    sq = seqeval_report_compatible(gold, pred)
    assert sq["precision"] == pytest.approx(precision_score(gold, pred), abs=1e-12)
    assert sq["recall"] == pytest.approx(recall_score(gold, pred), abs=1e-12)
    assert sq["f1"] == pytest.approx(f1_score(gold, pred), abs=1e-12)
