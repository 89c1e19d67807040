"""Pure metric functions on word-level (gold, predicted) tag sequences. No processes, no tensors.

Primary POS metrics: token accuracy and per-tag precision/recall/F1 with macro and weighted
averages (scikit-learn). The study's seqeval P/R/F1 is kept as "report-compatible" only:
seqeval parses tags as IOB chunks, so for prefix-less POS tags it reads IN as "I- of type N",
NNP as type "NP" and drops punctuation tags; its numbers are not per-tag scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

Sents = Sequence[Sequence[str]]


def _flat(sents: Sents) -> list[str]:
    return [t for s in sents for t in s]


def token_accuracy(gold: Sequence[str], pred: Sequence[str]) -> float:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} tags but pred has {len(pred)}")
    return float(np.mean([g == p for g, p in zip(gold, pred)])) if gold else 0.0


def per_tag_scores(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """Per-tag P/R/F1/support over tags present in gold or pred, plus macro and weighted averages."""
    from sklearn.metrics import precision_recall_fscore_support

    tags = sorted(set(gold) | set(pred))
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=tags, zero_division=0)
    per_tag = {
        t: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, t in enumerate(tags)
    }
    out: dict[str, Any] = {"per_tag": per_tag}
    for avg in ("macro", "weighted"):
        pa, ra, fa, _ = precision_recall_fscore_support(gold, pred, labels=tags, average=avg, zero_division=0)
        out[avg] = {"precision": float(pa), "recall": float(ra), "f1": float(fa)}
    return out


def seqeval_report_compatible(gold_sents: Sents, pred_sents: Sents) -> dict[str, float]:
    """seqeval's overall P/R/F1/accuracy exactly as the HF NER recipe (and the study) computes them."""
    import warnings

    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    g = [list(s) for s in gold_sents]
    p = [list(s) for s in pred_sents]
    with warnings.catch_warnings():  # "X seems not to be NE tag", once per chunk: the known misuse
        warnings.simplefilter("ignore", UserWarning)
        return {
            "precision": float(precision_score(g, p, zero_division=0)),
            "recall": float(recall_score(g, p, zero_division=0)),
            "f1": float(f1_score(g, p, zero_division=0)),
            "accuracy": float(accuracy_score(g, p)),
        }


def confusion(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts[i, j] = words of true tag labels[i] predicted as labels[j]."""
    index = {t: i for i, t in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, pred):
        m[index[g], index[p]] += 1
    return m


def compute_metrics(gold_sents: Sents, pred_sents: Sents) -> dict[str, Any]:
    """All evaluation metrics for one pass over a labelled split."""
    gold, pred = _flat(gold_sents), _flat(pred_sents)
    scores = per_tag_scores(gold, pred)
    return {
        "accuracy": token_accuracy(gold, pred),
        "macro_precision": scores["macro"]["precision"],
        "macro_recall": scores["macro"]["recall"],
        "macro_f1": scores["macro"]["f1"],
        "weighted_precision": scores["weighted"]["precision"],
        "weighted_recall": scores["weighted"]["recall"],
        "weighted_f1": scores["weighted"]["f1"],
        "seqeval_precision": (sq := seqeval_report_compatible(gold_sents, pred_sents))["precision"],
        "seqeval_recall": sq["recall"],
        "seqeval_f1": sq["f1"],
        "num_words": len(gold),
        "num_sentences": len(gold_sents),
        "per_tag": scores["per_tag"],
    }


def label_distribution(sents: Sents) -> list[tuple[str, int]]:
    """(tag, count) sorted by count desc, then tag: the study's Table 2."""
    return sorted(Counter(_flat(sents)).items(), key=lambda kv: (-kv[1], kv[0]))
