"""Pure metric functions on word-level (gold, predicted) tag sequences. No processes, no tensors.

Which metric is primary depends on the tagging scheme (``tagtune.schemes``):

- flat tags (POS, scheme ``none``): token accuracy and per-tag precision/recall/F1 with macro and
  weighted averages (scikit-learn). The study's seqeval P/R/F1 is kept as "report-compatible" only:
  seqeval parses tags as IOB chunks, so for prefix-less POS tags it reads IN as "I- of type N",
  NNP as type "NP" and drops punctuation tags; its numbers are not per-tag scores.
- span schemes (NER, chunking): entity-level precision/recall/F1 from seqeval, strict mode for
  IOB2/IOBES/BILOU (a span counts only if it is well formed in the scheme and matches type and
  both ends exactly), seqeval's default (conlleval) mode for IOB1, with one row per entity type.
  Token accuracy stays as a secondary number.

``compute_metrics`` names the primary metric in its result (``primary_metric``) so every table
and comparison can show and rank by it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

Sents = Sequence[Sequence[str]]


def _flat(sents: Sents) -> list[str]:
    return [t for s in sents for t in s]


def token_accuracy(gold: Sequence[str], pred: Sequence[str]) -> float:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} tags but pred has {len(pred)}")
    return float(np.mean([g == p for g, p in zip(gold, pred)])) if gold else 0.0


def per_tag_scores(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """Per-tag P/R/F1/support over tags present in gold or pred, plus macro and weighted averages.

    One scikit-learn pass on tag ids (on strings it sorts and compares strings, three passes were
    ~0.2 s per 25k words); the averages are scikit-learn's definitions, taken from the per-tag rows.
    """
    from sklearn.metrics import precision_recall_fscore_support

    tags = sorted(set(gold) | set(pred))
    index = {t: i for i, t in enumerate(tags)}
    g = np.fromiter((index[t] for t in gold), dtype=np.int64, count=len(gold))
    q = np.fromiter((index[t] for t in pred), dtype=np.int64, count=len(pred))
    p, r, f, s = precision_recall_fscore_support(g, q, labels=np.arange(len(tags)), zero_division=0)
    per_tag = {
        t: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, t in enumerate(tags)
    }
    out: dict[str, Any] = {"per_tag": per_tag}
    # weights: the gold support, never all zero (scikit-learn refuses an empty split above)
    for avg, weights in (("macro", None), ("weighted", s)):
        out[avg] = {k: float(np.average(v, weights=weights)) for k, v in (("precision", p), ("recall", r), ("f1", f))}
    return out


def seqeval_report_compatible(gold_sents: Sents, pred_sents: Sents) -> dict[str, float]:
    """seqeval's overall P/R/F1/accuracy exactly as the HF NER recipe (and the study) computes them
    (its micro average, from one pass over the chunks instead of one per number)."""
    import warnings

    from seqeval.metrics import accuracy_score
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    g = [list(s) for s in gold_sents]
    p = [list(s) for s in pred_sents]
    with warnings.catch_warnings():  # "X seems not to be NE tag", once per chunk: the known misuse
        warnings.simplefilter("ignore", UserWarning)
        precision, recall, f1, _ = precision_recall_fscore_support(g, p, average="micro", zero_division=0)
        return {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "accuracy": float(accuracy_score(g, p)),
        }


def load_libraries() -> None:
    """Import scikit-learn and seqeval now (~1.2 s), at set-up, so that no evaluation's time includes it."""
    import seqeval.metrics  # noqa: F401
    import sklearn.metrics  # noqa: F401


def confusion(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts[i, j] = words of true tag labels[i] predicted as labels[j] (words of other tags are left out)."""
    from sklearn.metrics import confusion_matrix

    if not len(gold):
        return np.zeros((len(labels), len(labels)), dtype=np.int64)
    return confusion_matrix(list(gold), list(pred), labels=list(labels)).astype(np.int64)


PRIMARY = {"none": "accuracy", "span": "entity_f1"}


def primary_metric(scheme: str) -> str:
    """The metric a run of this scheme is judged by: token accuracy for flat tags, entity F1 for spans."""
    return PRIMARY["none" if scheme == "none" else "span"]


def entity_scores(gold_sents: Sents, pred_sents: Sents, scheme: str) -> dict[str, Any]:
    """Entity-level P/R/F1 (micro over spans), entity counts, and one row per entity type (seqeval)."""
    import warnings

    from seqeval import scheme as sq_scheme
    from seqeval.metrics import classification_report

    g = [list(s) for s in gold_sents]
    p = [list(s) for s in pred_sents]
    # IOB1: seqeval's default mode (conlleval's lenient chunking); else strict: an ill-formed span
    # (I-X after O or after B-Y in IOB2) is no entity at all
    kw: dict[str, Any] = {} if scheme == "IOB1" else {"mode": "strict", "scheme": getattr(sq_scheme, scheme)}
    gold_set, pred_set = entity_set(g, scheme), entity_set(p, scheme)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = classification_report(g, p, output_dict=True, zero_division=0, **kw)
    micro = report.pop("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    macro = report.pop("macro avg", {"f1-score": 0.0})
    report.pop("weighted avg", None)
    per_entity = {
        t: {
            "precision": float(r["precision"]),
            "recall": float(r["recall"]),
            "f1": float(r["f1-score"]),
            "support": int(r["support"]),
        }
        for t, r in sorted(report.items())
    }
    return {
        "entity_precision": float(micro["precision"]),
        "entity_recall": float(micro["recall"]),
        "entity_f1": float(micro["f1-score"]),
        "entity_macro_f1": float(macro["f1-score"]),
        "gold_entities": len(gold_set),
        "pred_entities": len(pred_set),
        "correct_entities": len(gold_set & pred_set),
        "per_entity": per_entity,
    }


def entity_set(sents: list[list[str]], scheme: str) -> set[tuple]:
    """The (sentence, type, start, end) spans seqeval scores under ``scheme``'s mode."""
    from seqeval import scheme as sq_scheme
    from seqeval.metrics.sequence_labeling import get_entities

    if scheme == "IOB1":
        return {(i, t, a, b) for i, s in enumerate(sents) for t, a, b in get_entities(s)}
    if not any(sents):
        return set()
    ents = sq_scheme.Entities(sents, getattr(sq_scheme, scheme)).entities
    return {(e.sent_id, e.tag, e.start, e.end) for sent in ents for e in sent}


def drop_words(gold_sents: Sents, pred_sents: Sents, keep: Any) -> tuple[list[list[str]], list[list[str]]]:
    """Both sequences without the words where ``keep(gold_tag)`` is false (as if those words were absent)."""
    g_out, p_out = [], []
    for g, p in zip(gold_sents, pred_sents):
        idx = [i for i, t in enumerate(g) if keep(t)]
        g_out.append([g[i] for i in idx])
        p_out.append([p[i] for i in idx])
    return g_out, p_out


def compute_metrics(
    gold_sents: Sents,
    pred_sents: Sents,
    scheme: Optional[str] = None,
    known_labels: Optional[Sequence[str]] = None,
    unseen_eval_labels: str = "error",
) -> dict[str, Any]:
    """All evaluation metrics for one pass over a labelled split.

    ``gold_sents`` are the split's own tags, including any the training split lacks
    (``known_labels``). Those words are counted (``unseen_label_words``); under ``ignore`` they
    are left out of every score, under ``as_o`` (and ``error``) they are scored as they are: the
    model cannot predict such a tag, so the word is a token error and its span a missed entity.
    """
    if scheme is None:  # callers that know the training split pass its scheme; else read it off the gold tags
        from .schemes import detect_scheme

        scheme = detect_scheme(gold_sents)[0]
    known = set(known_labels) if known_labels is not None else None
    n_unseen = sum(t not in known for t in _flat(gold_sents)) if known is not None else 0
    if n_unseen and unseen_eval_labels == "ignore":
        gold_sents, pred_sents = drop_words(gold_sents, pred_sents, lambda t: t in known)
    gold, pred = _flat(gold_sents), _flat(pred_sents)
    scores = per_tag_scores(gold, pred)
    out: dict[str, Any] = {"primary_metric": primary_metric(scheme), "tagging_scheme": scheme}
    if scheme != "none":
        out.update(entity_scores(gold_sents, pred_sents, scheme))
    out.update(
        {
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
            "unseen_label_words": n_unseen,
            "per_tag": scores["per_tag"],
        }
    )
    out["primary"] = out[out["primary_metric"]]
    return out


def label_distribution(sents: Sents) -> list[tuple[str, int]]:
    """(tag, count) sorted by count desc, then tag: the study's Table 2."""
    return sorted(Counter(_flat(sents)).items(), key=lambda kv: (-kv[1], kv[0]))
