"""`tagtune predict`/`evaluate` input and output: files of any reader format or raw text in,
CoNLL columns or JSONL out.

Input formats follow ``readers.SUFFIXES`` (a ``.txt`` file or stdin is sniffed by content; raw
text is split by ``text.split_text``). Unlabelled reading: the tag column is not needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from .errors import DataError
from .readers import ReadOptions, Sentence, detect_format, parse_sentences, read_text
from .text import split_text_lines, tokenizer_name

INPUT_FORMATS = ("auto", "text", "jsonl", "json", "conll", "conllu")


def read_input(
    name: str, fmt: str = "auto", words_field: str = "words", word_column: int = 0
) -> tuple[list[Sentence], str]:
    """Read ``name`` (a file, or '-' for stdin) -> unlabelled sentences and the format used
    ('text' names the tokenizer too)."""
    if name == "-":
        text, label = sys.stdin.read(), "<stdin>"
    else:
        text, label = read_text(Path(name)), name  # clear errors for missing files and bad UTF-8
    fmt = detect_format(name, "json" if fmt == "jsonl" else fmt, text)
    if fmt == "text":
        sents = [Sentence(ws, None, f"{label}:{ln}") for ws, ln in split_text_lines(text)]
        fmt = f"text, {tokenizer_name()}"
    else:
        opts = ReadOptions(words_field=words_field, conll_word_column=word_column)
        sents = parse_sentences(text, label, fmt, opts, tagged=False)
    for s in sents:
        for j, w in enumerate(s.words):
            if not w.strip():
                raise DataError(f"word {j} is {w!r}: words must be non-empty strings", where=s.where)
    if not any(s.words for s in sents):
        raise DataError(
            f"input has no words to tag (read as {fmt})",
            where=label,
            fix="give a non-empty file; check --input_format if the file is not empty",
        )
    return sents, fmt


def multiword_tokens(s: Sentence, tags: list[str]) -> list[dict[str, Any]]:
    """CoNLL-U multiword tokens mapped back: the surface form, its word span and the words'
    tags joined by '+' (French ``du`` over ``de le`` -> ``ADP+DET``)."""
    return [
        {"form": form, "first": first, "last": last, "tag": "+".join(tags[first : last + 1])}
        for first, last, form in s.multiword
    ]


def format_output(sents: list[Sentence], tags: list[list[str]], scores: Optional[list[list[float]]], fmt: str) -> str:
    parts = []
    for i, s in enumerate(sents):
        if fmt == "jsonl":
            rec = {**s.extra, "words": s.words, "tags": tags[i]}
            if s.multiword:
                rec["multiword_tokens"] = multiword_tokens(s, tags[i])
            if scores is not None:
                rec["scores"] = [round(x, 6) for x in scores[i]]
            parts.append(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            rows = [
                f"{w}\t{t}" + (f"\t{scores[i][j]:.6f}" if scores is not None else "")
                for j, (w, t) in enumerate(zip(s.words, tags[i]))
            ]
            parts.append("\n".join(rows) + "\n\n")
    return "".join(parts)


def predictions_jsonl(words: list[list[str]], gold: list[list[str]], pred: list[list[str]]) -> str:
    """The eval_predictions.jsonl format shared with training: words, gold labels, predicted tags."""
    return "".join(
        json.dumps({"words": w, "labels": g, "tags": p}, ensure_ascii=False) + "\n"
        for w, g, p in zip(words, gold, pred)
    )


def write_output(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from .outputs import atomic_write_text

        atomic_write_text(path, text)  # a failure never leaves a half-written file
