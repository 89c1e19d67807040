"""Constrained (Viterbi) decoding on hand-made score tables."""

import itertools

import numpy as np
import pytest

from tagtune.decoding import constrained_decode, transition_mask, viterbi
from tagtune.schemes import allowed

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def lp(rows):
    return np.log(np.asarray(rows, dtype=float))


def test_argmax_invalid_sequence_is_repaired_to_the_best_valid_one():
    # argmax: O I-PER I-PER (invalid). Valid candidates: O O O = .5*.3*.3 = .045, B-PER I-PER I-PER = .3*.6*.6 = .108
    scores = lp([[0.5, 0.3, 0.1, 0.05, 0.05], [0.3, 0.05, 0.6, 0.0001, 0.0499], [0.3, 0.05, 0.6, 0.0001, 0.0499]])
    assert [LABELS[i] for i in scores.argmax(-1)] == ["O", "I-PER", "I-PER"]
    assert constrained_decode([scores], LABELS, "IOB2", logits=False) == [["B-PER", "I-PER", "I-PER"]]


def test_type_switch_inside_a_span_is_repaired():
    # argmax B-LOC I-PER (invalid); B-LOC I-LOC = .18 beats B-PER I-PER = .125 and B-LOC O = .06
    scores = lp([[0.05, 0.25, 0.05, 0.6, 0.05], [0.1, 0.05, 0.5, 0.05, 0.3]])
    assert constrained_decode([scores], LABELS, "IOB2", logits=False) == [["B-LOC", "I-LOC"]]


def test_valid_argmax_is_left_alone_and_logits_work():
    logits = np.array([[3.0, 0.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0, 0.0]])
    assert constrained_decode([logits], LABELS, "IOB2") == [["O", "B-PER", "I-PER"]]
    assert constrained_decode([logits[:0]], LABELS, "IOB2") == [[]]


def test_viterbi_equals_brute_force_over_all_valid_sequences():
    rng = np.random.default_rng(0)
    start, trans, end = transition_mask(LABELS, "IOB2")
    for _ in range(20):
        scores = np.log(rng.dirichlet(np.ones(len(LABELS)), size=4))
        best, best_seq = -np.inf, None
        for seq in itertools.product(range(len(LABELS)), repeat=4):
            tags = ["<s>"] + [LABELS[i] for i in seq] + ["</s>"]
            if all(allowed(a, b, "IOB2") for a, b in zip(tags, tags[1:])):
                s = sum(scores[t, i] for t, i in enumerate(seq))
                if s > best:
                    best, best_seq = s, list(seq)
        assert viterbi(scores, start, trans, end) == best_seq


@pytest.mark.parametrize("scheme", ["IOBES", "BILOU"])
def test_span_must_close_in_iobes_and_bilou(scheme):
    e = "E" if scheme == "IOBES" else "L"
    labels = ["O", "B-PER", "I-PER", f"{e}-PER", ("S" if scheme == "IOBES" else "U") + "-PER"]
    # argmax B-PER I-PER (never closed): best valid ending must be B E (or O/single)
    scores = lp([[0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.5, 0.2, 0.1]])
    out = constrained_decode([scores], labels, scheme, logits=False)[0]
    assert out == ["B-PER", f"{e}-PER"]
