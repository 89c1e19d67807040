"""`tagtune predict`/`evaluate` input and output: files of any reader format or raw text in,
CoNLL columns or JSONL out.

Input formats follow ``readers.SUFFIXES`` (a ``.txt`` file or stdin is sniffed by content; raw
text is split by ``text.split_text``). Unlabelled reading: the tag column is not needed.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import DataError
from .readers import (
    SNIFF_LINES,
    SUFFIXES,
    ReadOptions,
    Sentence,
    detect_format,
    iter_line_chunks,
    open_bytes,
    parse_sentences,
)
from .text import split_text_lines, tokenizer_name

INPUT_FORMATS = ("auto", "text", "jsonl", "json", "conll", "conllu")


# lines per streamed chunk: a few thousand sentences, enough for full, length-sorted batches, and a bounded
# amount of memory whatever the input's size
CHUNK_LINES = 20_000


@dataclass
class InputStream:
    """An input file (or stdin) read lazily as chunks of sentences. A JSON document (a .json array) is
    one chunk: it cannot be parsed piecewise; JSON Lines, CoNLL(-U) and raw text are streamed."""

    name: str
    fmt: str  # the parser's format: json, conllu, conll or text
    label: str  # the format as reported ('text, <sentence splitter>')
    opts: ReadOptions
    chunks: Iterator[tuple[str, int]]  # (text, line number of its first line)

    def parse(self, text: str, first_line: int) -> list[Sentence]:
        """One chunk -> unlabelled sentences, each word checked."""
        label = _display_name(self.name)
        if self.fmt == "text":
            sents = [Sentence(ws, None, f"{label}:{ln}") for ws, ln in split_text_lines(text, first_line)]
        else:
            sents = parse_sentences(text, label, self.fmt, self.opts, tagged=False, first_line=first_line)
        for s in sents:
            for j, w in enumerate(s.words):
                if not w.strip():
                    raise DataError(f"word {j} is {w!r}: words must be non-empty strings", where=s.where)
        return sents


def _stdin_lines() -> Iterator[bytes | str]:
    return iter(getattr(sys.stdin, "buffer", sys.stdin))  # bytes; text if stdin was replaced by a text stream


def _display_name(name: str) -> str:
    return "<stdin>" if name == "-" else name


def _stdin_head() -> tuple[list[bytes | str], Iterator[bytes | str]]:
    """The first SNIFF_LINES non-blank lines of stdin (what sniffing its format reads) and the rest, unread."""
    rest = _stdin_lines()
    head: list[bytes | str] = []
    non_blank = 0
    for line in rest:
        head.append(line)
        non_blank += bool(line.strip())
        if non_blank >= SNIFF_LINES:
            break
    return head, rest


def open_input(
    name: str, fmt: str = "auto", words_field: str = "words", word_column: int = 0, chunk_lines: int = CHUNK_LINES
) -> InputStream:
    """``name`` (a file, or '-' for stdin) as an InputStream; the format from --input_format, the suffix or,
    for .txt and stdin, the content (only then is the start of the input read ahead)."""
    lines: Optional[Iterable[bytes | str]] = None
    sample: bytes | str | None = None
    sniff = fmt == "auto" and (name == "-" or SUFFIXES.get(Path(name).suffix.lower()) == "sniff")
    if name == "-":
        head, rest = _stdin_head() if sniff else ([], _stdin_lines())
        sample = b"".join(head) if head and isinstance(head[0], bytes) else "".join(head)
        lines = itertools.chain(head, rest)
    else:
        with open_bytes(Path(name)) as f:  # a missing or unreadable file fails now, with a clear error
            sample = f.read(1 << 16) if sniff else None
    if isinstance(sample, bytes):
        sample = sample.decode("utf-8", errors="replace")
    fmt = detect_format(name, "json" if fmt == "jsonl" else fmt, sample.removeprefix("\ufeff") if sniff else None)
    document = fmt == "json" and name.lower().endswith(".json")
    chunks = iter_line_chunks(name, None if document else chunk_lines, fmt in ("conll", "conllu"), lines)
    label = f"text, {tokenizer_name()}" if fmt == "text" else fmt
    opts = ReadOptions(words_field=words_field, conll_word_column=word_column)
    return InputStream(name, fmt, label, opts, chunks)


def read_input(
    name: str, fmt: str = "auto", words_field: str = "words", word_column: int = 0
) -> tuple[list[Sentence], str]:
    """All of ``name`` at once -> unlabelled sentences and the format used ('text' names the tokenizer too)."""
    stream = open_input(name, fmt, words_field, word_column)
    sents = [s for text, first in stream.chunks for s in stream.parse(text, first)]
    if not any(s.words for s in sents):
        raise no_words(stream)
    return sents, stream.label


def no_words(stream: InputStream) -> DataError:
    return DataError(
        f"input has no words to tag (read as {stream.fmt})",
        where=_display_name(stream.name),
        fix="give a non-empty file; check --input_format if the file is not empty",
    )


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
