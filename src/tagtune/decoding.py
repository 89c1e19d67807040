"""Constrained decoding: the best tag sequence that is a valid span sequence (Viterbi).

A per-word argmax can emit ``O I-PER`` or ``B-LOC I-PER``, spans no scheme allows. ``viterbi``
picks the sequence with the highest summed log-probability among those whose every transition
``allowed`` permits. It is a pure function of per-word scores: no model, no tensors, no processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .schemes import allowed


def transition_mask(labels: Sequence[str], scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start[j], trans[i, j], end[i]) as 0 (allowed) or -inf (forbidden)."""
    n = len(labels)
    trans = np.zeros((n, n))
    start, end = np.zeros(n), np.zeros(n)
    for j, b in enumerate(labels):
        start[j] = 0.0 if allowed("<s>", b, scheme) else -np.inf
        end[j] = 0.0 if allowed(b, "</s>", scheme) else -np.inf
        for i, a in enumerate(labels):
            trans[i, j] = 0.0 if allowed(a, b, scheme) else -np.inf
    return start, trans, end


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def viterbi(scores: np.ndarray, start: np.ndarray, trans: np.ndarray, end: np.ndarray) -> list[int]:
    """Best label index per word under the masks; ``scores`` is [words, labels] log-probabilities.

    Falls back to the argmax when no valid sequence exists (a label set without O, for example).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[0] == 0:
        return []
    best = scores[0] + start
    back = np.zeros(scores.shape, dtype=np.int64)
    for t in range(1, scores.shape[0]):
        cand = best[:, None] + trans  # [from, to]
        back[t] = cand.argmax(axis=0)
        best = cand.max(axis=0) + scores[t]
    best = best + end
    if not np.isfinite(best.max()):
        return scores.argmax(axis=-1).tolist()
    path = [int(best.argmax())]
    for t in range(scores.shape[0] - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


def constrained_decode(
    word_scores: Sequence[np.ndarray], labels: Sequence[str], scheme: str, logits: bool = True
) -> list[list[str]]:
    """Tag each sentence (its [words, labels] scores) with the best valid sequence of ``scheme``."""
    start, trans, end = transition_mask(labels, scheme)
    out = []
    for s in word_scores:
        lp = log_softmax(np.asarray(s, dtype=np.float64)) if logits else np.asarray(s, dtype=np.float64)
        out.append([labels[i] for i in viterbi(lp, start, trans, end)])
    return out
