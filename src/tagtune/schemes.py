"""Tagging schemes: which one a label set uses, and which tag may follow which.

``none`` is a flat tag set (POS): every word's tag stands alone. The span schemes tag entities
(NER) or chunks: IOB1 (I- starts a span; B- only between two adjacent spans of one type), IOB2
(every span starts with B-), IOBES (E- ends, S- is a one-word span) and BILOU (L- ends, U- is a
one-word span). Detection reads the training sequences, so it can tell IOB1 from IOB2.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

SCHEMES = ("none", "IOB1", "IOB2", "IOBES", "BILOU")
SPAN_SCHEMES = SCHEMES[1:]
_SPAN_TAG = re.compile(r"^([BIESLU])-(.+)$")
# the prefixes each span scheme uses: a tag set outside them is not that scheme
PREFIXES = {"IOB1": "BI", "IOB2": "BI", "IOBES": "BIES", "BILOU": "BILU"}


def split_tag(tag: str) -> tuple[str, Optional[str]]:
    """('B', 'PER') for 'B-PER'; ('O', None) for 'O'; (tag, None) for anything else."""
    m = _SPAN_TAG.match(tag)
    return (m.group(1), m.group(2)) if m else (tag, None)


def detect_scheme(sentences: Sequence[Sequence[str]]) -> tuple[str, str]:
    """(scheme, reason) from the training tag sequences.

    A span scheme needs every tag to be 'O' or '<prefix>-<type>' and at least one prefixed tag;
    anything else (NN, IN, PUNCT...) is a flat tag set: 'none'.
    """
    tags = {t for s in sentences for t in s}
    prefixes = {split_tag(t)[0] for t in tags if t != "O"}
    flat = sorted(t for t in tags if t != "O" and split_tag(t)[1] is None)
    if flat or not prefixes:
        example = f" (e.g. {', '.join(flat[:3])})" if flat else ""
        return "none", f"{len(tags)} tags, not all of the form O / B-X / I-X{example}: a flat tag set"
    if prefixes & set("LU") and prefixes & set("ES"):
        return "none", f"prefixes {sorted(prefixes)} mix IOBES (E-/S-) and BILOU (L-/U-): treated as flat tags"
    if prefixes & set("ES"):
        return "IOBES", f"prefixes {sorted(prefixes)}: IOBES (E- ends a span, S- a one-word span)"
    if prefixes & set("LU"):
        return "BILOU", f"prefixes {sorted(prefixes)}: BILOU (L- ends a span, U- a one-word span)"
    starts = _i_starts(sentences)
    if starts:
        return "IOB1", f"I- starts a span {starts} time(s) (after O, another type, or first in a sentence): IOB1"
    return "IOB2", "every span starts with B-: IOB2"


def _i_starts(sentences: Sequence[Sequence[str]]) -> int:
    """How often an I-X tag opens a span (IOB1 does this; IOB2 never)."""
    n = 0
    for sent in sentences:
        prev_type: Optional[str] = None
        for tag in sent:
            prefix, typ = split_tag(tag)
            if prefix == "I" and typ != prev_type:
                n += 1
            prev_type = typ
    return n


def resolve_scheme(requested: str, train_sentences: Sequence[Sequence[str]]) -> tuple[str, str]:
    """(scheme, reason): 'auto' detects; an explicit span scheme must match the training prefixes."""
    if requested == "auto":
        return detect_scheme(train_sentences)
    if requested != "none":
        tags = {t for s in train_sentences for t in s if t != "O"}
        bad = sorted(t for t in tags if split_tag(t)[0] not in PREFIXES[requested] or split_tag(t)[1] is None)
        if bad:
            from .errors import ConfigError

            raise ConfigError(
                f"tagging scheme {requested} does not fit training tag(s) {bad[:5]}",
                where="config field 'tagging_scheme'",
                fix=f"use --tagging_scheme auto (detects it) or one whose prefixes are {sorted(PREFIXES)}",
            )
    return requested, "set by --tagging_scheme"


def allowed(prev: str, tag: str, scheme: str) -> bool:
    """May ``tag`` follow ``prev`` (``prev`` = '<s>' at the start; ``tag`` = '</s>' at the end)?"""
    if scheme == "none":
        return True
    pp, pt = split_tag(prev) if prev != "<s>" else ("<s>", None)
    tp, tt = split_tag(tag) if tag != "</s>" else ("</s>", None)
    if scheme in ("IOB1", "IOB2"):
        if tp == "I":
            # IOB2: I-X only continues X; IOB1: I-X may also open a span
            return scheme == "IOB1" or (pp in ("B", "I") and pt == tt)
        if tp == "B" and scheme == "IOB1":
            return pp in ("B", "I") and pt == tt  # IOB1's B- only separates two spans of one type
        return True
    inside, end = ("I", "E") if scheme == "IOBES" else ("I", "L")
    open_span = pp in ("B", inside)  # a span of type pt is still open after prev
    if open_span:
        return tp in (inside, end) and tt == pt
    return tp not in (inside, end)  # after O, an end or a single (or the start): only O, B-, S-/U- or the end
