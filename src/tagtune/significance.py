"""Is a difference real? Pure functions, no files and no processes.

Two ways to put a 95% interval on "B minus A" for a metric such as token accuracy:
- over seeds (several runs per cell): Welch's t-interval for the difference of two means;
- over test sentences (one run per cell): a paired bootstrap, resampling sentences with replacement,
  both systems scored on the same resampled sentences.
A verdict reads the interval against the study's claim "the two are within +-margin".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """B - A with a confidence interval; ``method`` says how it was obtained."""

    diff: float
    low: float
    high: float
    method: str
    level: float = 0.95

    def text(self, digits: int = 4) -> str:
        return f"{self.diff:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0.0 for a single value) and count."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("mean_std of no values")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """t-interval for mean(b) - mean(a), unequal variances (Welch-Satterthwaite degrees of freedom).
    Needs two or more values on each side."""
    from scipy.stats import t

    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a t-interval over seeds needs >= 2 runs per side (got {len(a)} and {len(b)})")
    ma, sa, na = mean_std(a)
    mb, sb, nb = mean_std(b)
    va, vb = sa**2 / na, sb**2 / nb
    se = math.sqrt(va + vb)
    diff = mb - ma
    if se == 0.0:
        return Interval(diff, diff, diff, f"t-interval over seeds (n={na}, {nb}; no spread)", level)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = float(t.ppf(0.5 + level / 2, df)) * se
    return Interval(diff, diff - half, diff + half, f"Welch t-interval over seeds (n={na}, {nb}; df={df:.1f})", level)


def paired_bootstrap(
    correct_a: Sequence[int],
    correct_b: Sequence[int],
    words: Sequence[int],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Percentile interval of accuracy(b) - accuracy(a), resampling the same sentences for both.
    ``correct_*[i]`` = correctly tagged words of sentence i, ``words[i]`` = its word count."""
    ca, cb, w = (np.asarray(x, dtype=np.int64) for x in (correct_a, correct_b, words))
    if not (ca.shape == cb.shape == w.shape) or w.size == 0:
        raise ValueError(f"need equal, non-empty per-sentence arrays (got {ca.size}, {cb.size}, {w.size})")
    if w.sum() == 0:
        raise ValueError("no words to score")
    rng = np.random.default_rng(seed)
    diff = float((cb.sum() - ca.sum()) / w.sum())
    d = cb - ca
    samples = np.empty(n_resamples)
    for start in range(0, n_resamples, 500):  # bounded memory on long test sets
        idx = rng.integers(0, w.size, size=(min(500, n_resamples - start), w.size))
        samples[start : start + idx.shape[0]] = d[idx].sum(axis=1) / np.maximum(w[idx].sum(axis=1), 1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(diff, float(low), float(high), f"paired bootstrap over {w.size} test sentences", level)


def per_sentence_correct(rows: Sequence[dict]) -> tuple[list[int], list[int]]:
    """(correct words, words) per sentence from eval_predictions.jsonl rows ({"words", "labels", "tags"})."""
    correct, words = [], []
    for r in rows:
        correct.append(sum(g == p for g, p in zip(r["labels"], r["tags"])))
        words.append(len(r["labels"]))
    return correct, words


def verdict(iv: Interval, margin: float, a: str, b: str) -> str:
    """One sentence: does "b and a are within +-margin" hold, given the interval of b - a?"""
    where = f"{b} − {a} = {iv.text()} ({int(iv.level * 100)}% interval)"
    if -margin <= iv.low and iv.high <= margin:
        return f"holds: {where} lies within ±{margin:g}, so the two are equivalent at the study's margin."
    better, worse = (b, a) if iv.diff > 0 else (a, b)
    if iv.low > margin or iv.high < -margin:
        return f"does not hold: {where} lies beyond ±{margin:g}; {better} is really better than {worse}."
    if iv.low > 0 or iv.high < 0:
        return (
            f"partly: {where} excludes 0, so {better} is really (slightly) better than {worse}, "
            f"but the interval reaches past ±{margin:g}; more seeds would tell."
        )
    return f"undecided: {where} contains 0 but reaches past ±{margin:g}; the runs cannot tell (more seeds needed)."
