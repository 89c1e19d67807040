"""The one reader family: JSON/JSONL, CoNLL-U and whitespace-column CoNLL -> sentences.

Training (``data.load_corpus``), ``tagtune evaluate`` and ``tagtune predict`` all read files
here, through one suffix table (``SUFFIXES``). The tag column is optional: ``tag_column=None``
(or ``labels_field=None``) reads words only, for prediction. Every sentence keeps ``where``
(file:line) so that any later error can point at it.

``.txt`` is ambiguous (CoNLL columns in many corpora, raw text for many users), so its content
decides (``sniff_txt``): it is column data when its first line is ``-DOCSTART-``, when a line in
the first 50 non-blank ones holds a tab, or when those lines (at least 3) all have the same
number (2 or more) of space-separated fields; anything else is raw text. Training cannot use
raw text and says so; ``--data_format``/``--input_format`` override the guess.

CoNLL-U multiword tokens (French ``du`` = ``de le``, English ``Don't`` = ``Do n't``): the
syntactic words are read and tagged, as UD annotates and scores UPOS/XPOS; the range line's
surface form is kept in ``Sentence.multiword`` (first word index, last word index, form) so
predictions can be mapped back to the surface token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Optional

from .errors import DataError

logger = logging.getLogger(__name__)

# suffix -> format; "sniff" = decided by the content (see sniff_txt)
SUFFIXES: dict[str, str] = {
    ".json": "json",
    ".jsonl": "json",
    ".conllu": "conllu",
    ".conll": "conll",
    ".tsv": "conll",
    ".iob": "conll",
    ".bio": "conll",
    ".pos": "conll",
    ".col": "conll",
    ".txt": "sniff",
}
FORMATS = ("json", "conllu", "conll", "text")
SNIFF_LINES = 50


@dataclass
class Sentence:
    words: list[str]
    tags: Optional[list[str]]  # None when read without a tag column
    where: str  # "file.conllu:123" or "split 'train', sentence 7"
    extra: dict[str, Any] = field(default_factory=dict)  # a JSON record's other fields, passed through
    multiword: list[tuple[int, int, str]] = field(default_factory=list)  # CoNLL-U ranges: (first, last, form)


def open_bytes(path: Path) -> BinaryIO:
    if not path.is_file():
        raise DataError(
            f"file not found: {path}",
            where=str(path),
            fix="check the path given for train_file/validation_file/test_file, --dataset or --input",
        )
    try:
        return open(path, "rb")
    except OSError as err:  # permissions, a vanished network mount
        raise DataError(
            f"cannot read file: {err.strerror or err}", where=str(path), fix="check the path and its permissions"
        ) from None


def _bad_utf8(err: UnicodeDecodeError, raw: bytes, offset: int, where: str) -> DataError:
    return DataError(
        f"invalid UTF-8 at byte offset {offset + err.start} (byte 0x{raw[err.start]:02x}): {err.reason}",
        where=where,
        fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
    )


def read_text(path: Path) -> str:
    """A file's text as UTF-8 (a byte-order mark dropped), with located errors."""
    with open_bytes(path) as f:
        raw = f.read()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark some editors write
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise _bad_utf8(err, raw, 0, f"{path}:{line}") from None


def iter_line_chunks(
    name: str, max_lines: Optional[int], at_blank_line: bool, lines: Optional[Iterable[bytes | str]] = None
) -> Iterator[tuple[str, int]]:
    """A file as (text, line number of its first line) chunks of about ``max_lines`` lines, read lazily:
    memory stays bounded whatever the file's size. ``at_blank_line``: a chunk ends only after a blank line,
    so a CoNLL sentence never straddles two chunks. ``max_lines`` None: one chunk. ``lines``: read these
    instead of opening ``name`` (stdin). Errors are located like read_text's."""
    f = open_bytes(Path(name)) if lines is None else None
    buf: list[str] = []
    first, offset = 1, 0
    try:
        for lineno, raw in enumerate(f if f is not None else lines, 1):
            try:
                line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            except UnicodeDecodeError as err:
                raise _bad_utf8(err, raw, offset, f"{name}:{lineno}") from None
            offset += len(raw)
            buf.append(line.removeprefix("\ufeff") if lineno == 1 else line)
            if max_lines is not None and len(buf) >= max_lines and (not at_blank_line or not line.strip()):
                yield "".join(buf), first
                buf, first = [], lineno + 1
        if buf:
            yield "".join(buf), first
    finally:
        if f is not None:
            f.close()


def sniff_txt(text: str) -> str:
    """'conll' or 'text' for a .txt file, by the rule in the module docstring."""
    lines = [ln for ln in text.splitlines() if ln.strip()][:SNIFF_LINES]
    if not lines:
        return "text"
    if lines[0].split()[0] == "-DOCSTART-" or any("\t" in ln for ln in lines):
        return "conll"
    widths = {len(ln.split()) for ln in lines}
    return "conll" if len(lines) >= 3 and len(widths) == 1 and widths.pop() >= 2 else "text"


def detect_format(path: str, data_format: str = "auto", text: Optional[str] = None) -> str:
    """``data_format`` unless 'auto'; else the suffix table; '.txt' (and stdin) by content."""
    if data_format != "auto":
        return data_format
    suffix = Path(path).suffix.lower() if path != "-" else ".txt"
    fmt = SUFFIXES.get(suffix)
    if fmt is None:
        raise DataError(
            f"unknown data format for extension '{suffix or '(none)'}'",
            where=path,
            fix=f"use one of {', '.join(SUFFIXES)}, or pass the format (--data_format / --input_format)",
        )
    if fmt == "sniff":
        if text is None:
            text = read_text(Path(path))
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        fmt = "json" if first[:1] in ("{", "[") else sniff_txt(text)
        logger.info("%s: read as %s (content of a .txt/stdin input; override with the format flag)", path, fmt)
    return fmt


# ----------------------------------------------------------------------------------------
# JSON / JSON Lines
# ----------------------------------------------------------------------------------------


def _check_strings(name: str, seq: Any, where: str) -> list[str]:
    if not isinstance(seq, list):
        raise DataError(
            f"field '{name}' must be a list of strings, got {type(seq).__name__}",
            where=where,
            fix="pre-split words as a JSON list, or give raw text as .txt (--input_format text)",
        )
    for i, item in enumerate(seq):
        if not isinstance(item, str):
            raise DataError(
                f"field '{name}' item {i} is {type(item).__name__} {item!r}, expected a string",
                where=where,
                fix="words and tags must be strings (hub datasets with class-id tags are converted automatically)",
            )
        if not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate such as "\ud800": valid JSON, not text
                raise DataError(
                    f"field '{name}' item {i} is not valid Unicode: {item!r} (lone surrogate escape)",
                    where=where,
                    fix="re-export the data from a UTF-8 source; \\uD800-\\uDFFF escapes must come in surrogate pairs",
                ) from None
    return seq


def check_record(rec: Any, words_field: str, labels_field: Optional[str], where: str) -> Sentence:
    """One JSON record -> Sentence. Without ``labels_field`` a bare list of words is accepted too."""
    if labels_field is None and isinstance(rec, list):
        return Sentence(_check_strings(words_field, rec, where), None, where)
    fields = [f for f in (words_field, labels_field) if f is not None]
    if not isinstance(rec, dict):
        raise DataError(
            f"expected an object with {' and '.join(repr(f) for f in fields)}, got {type(rec).__name__}",
            where=where,
            fix=None if labels_field else f'each line must be {{"{words_field}": ["The", "cat"]}} or ["The", "cat"]',
        )
    missing = [f for f in fields if f not in rec]
    if missing:
        raise DataError(
            f"missing field(s) {missing}; present: {sorted(rec)}",
            where=where,
            fix="set --words_field/--labels_field to the names your data uses",
        )
    words = _check_strings(words_field, rec[words_field], where)
    tags = _check_strings(labels_field, rec[labels_field], where) if labels_field else None
    extra = {k: v for k, v in rec.items() if k not in fields}
    return Sentence(words, tags, where, extra)


def _json_records(text: str, name: str, allow_document: bool, first_line: int = 1) -> list[tuple[Any, str]]:
    stripped = text.lstrip()
    if allow_document and stripped[:1] in ("[", "{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            if stripped[:1] == "[":
                raise DataError(f"invalid JSON: {err.msg}", where=f"{name}:{err.lineno}") from None
            obj = None  # may be JSON Lines with a .json suffix
        if obj is not None:
            if isinstance(obj, dict) and isinstance(obj.get("data"), list):
                obj = obj["data"]
            if isinstance(obj, dict):
                obj = [obj]
            if not isinstance(obj, list):
                raise DataError("top-level JSON must be a list of sentence objects", where=name)
            return [(rec, f"{name} (record {i})") for i, rec in enumerate(obj)]
    records = []
    for lineno, line in enumerate(text.splitlines(), first_line):
        if not line.strip():
            continue
        try:
            records.append((json.loads(line), f"{name}:{lineno}"))
        except json.JSONDecodeError as err:
            raise DataError(f"invalid JSON line: {err.msg} (column {err.colno})", where=f"{name}:{lineno}") from None
    return records


def parse_json(
    text: str,
    name: str,
    words_field: str = "words",
    labels_field: Optional[str] = "labels",
    document: bool = True,
    first_line: int = 1,
) -> list[Sentence]:
    """A JSON array of objects, an object with a 'data' list, or JSON Lines (``document=False``:
    JSON Lines only, so a line that is itself a list of words stays one sentence)."""
    records = _json_records(text, name, document, first_line)
    return [check_record(rec, words_field, labels_field, where) for rec, where in records]


def read_json(path: str, words_field: str = "words", labels_field: Optional[str] = "labels") -> list[Sentence]:
    text = read_text(Path(path))
    return parse_json(text, path, words_field, labels_field, document=Path(path).suffix.lower() == ".json")


# ----------------------------------------------------------------------------------------
# CoNLL-U and whitespace columns
# ----------------------------------------------------------------------------------------

CONLLU_COLUMNS = {"upos": 3, "xpos": 4}


def parse_conllu(text: str, name: str, tag_column: Optional[str] = "xpos", first_line: int = 1) -> list[Sentence]:
    """FORM is column 2, UPOS 4, XPOS 5; empty nodes (5.1) skipped; multiword ranges (3-4) kept
    aside in ``Sentence.multiword`` while their syntactic words are read."""
    col = CONLLU_COLUMNS[tag_column] if tag_column else None
    out: list[Sentence] = []
    cur = Sentence([], [] if col else None, f"{name}:{first_line}")
    for lineno, line in enumerate(text.splitlines(), first_line):
        line = line.rstrip("\r")
        if not line.strip():
            if cur.words:
                out.append(cur)
            cur = Sentence([], [] if col else None, f"{name}:{lineno + 1}")
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10 and (col is not None or len(cols) < 2):
            raise DataError(
                f"expected 10 tab-separated columns, found {len(cols)}"
                if col is not None
                else f"expected tab-separated ID and FORM columns, found {len(cols)} column(s)",
                where=f"{name}:{lineno}",
                fix="CoNLL-U needs ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC; "
                "use --data_format/--input_format conll for plain columns",
            )
        tok_id = cols[0]
        if not tok_id.replace("-", "").replace(".", "").isdigit():
            raise DataError(
                f"ID column is {tok_id!r}: expected a word number, a range (3-4) or an empty node (5.1)",
                where=f"{name}:{lineno}",
                fix="CoNLL-U lines are ID<TAB>FORM<TAB>...; use --data_format/--input_format conll for "
                "whitespace columns",
            )
        if "." in tok_id:
            continue
        if "-" in tok_id:
            first, _, last = tok_id.partition("-")
            if not (first.isdigit() and last.isdigit()):
                raise DataError(f"bad multiword token id {tok_id!r}", where=f"{name}:{lineno}")
            n = len(cur.words)  # the range's words follow; ids are 1-based within the sentence
            cur.multiword.append((n, n + int(last) - int(first), cols[1]))
            continue
        if col is not None:
            tag = cols[col]
            if tag == "_":
                other = "upos" if tag_column == "xpos" else "xpos"
                raise DataError(
                    f"token '{cols[1]}' has no {tag_column.upper()} tag ('_')",
                    where=f"{name}:{lineno}",
                    fix=f"use --conllu_tag_column {other} if that column is filled",
                )
            cur.tags.append(tag)
        cur.words.append(cols[1])
    if cur.words:
        out.append(cur)
    return out


def read_conllu(path: str, tag_column: Optional[str] = "xpos") -> list[Sentence]:
    return parse_conllu(read_text(Path(path)), path, tag_column)


def parse_conll(
    text: str, name: str, word_column: int = 0, tag_column: Optional[int] = -1, first_line: int = 1
) -> list[Sentence]:
    """Whitespace-separated columns, one token per line, blank line between sentences;
    '-DOCSTART-' skipped. ``tag_column`` -1 is the last column (CoNLL-2003 ``word POS chunk NER``)."""
    cols_used = (word_column,) if tag_column is None else (word_column, tag_column)
    need = max(c + 1 if c >= 0 else -c for c in cols_used)
    if tag_column is not None:
        need = max(need, 2)
    out: list[Sentence] = []
    cur = Sentence([], [] if tag_column is not None else None, f"{name}:{first_line}")
    for lineno, line in enumerate(text.splitlines(), first_line):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if cur.words:
                out.append(cur)
            cur = Sentence([], [] if tag_column is not None else None, f"{name}:{lineno + 1}")
            continue
        if len(cols) < need:
            what = "a word column and a tag column" if tag_column is not None else f"a column {word_column}"
            raise DataError(
                f"expected {what}, found {len(cols)} column(s): {line!r}",
                where=f"{name}:{lineno}",
                fix="each token line needs the word and its tag separated by whitespace"
                if tag_column is not None
                else "set --conll_word_column to the 0-based column holding the word",
            )
        cur.words.append(cols[word_column])
        if tag_column is not None:
            cur.tags.append(cols[tag_column])
    if cur.words:
        out.append(cur)
    return out


def read_conll(path: str, word_column: int = 0, tag_column: Optional[int] = -1) -> list[Sentence]:
    return parse_conll(read_text(Path(path)), path, word_column, tag_column)


# ----------------------------------------------------------------------------------------
# one entry point
# ----------------------------------------------------------------------------------------


@dataclass
class ReadOptions:
    """How to read a file; the training config's fields of the same names."""

    data_format: str = "auto"
    words_field: str = "words"
    labels_field: str = "labels"
    conllu_tag_column: str = "xpos"
    conll_word_column: int = 0
    conll_tag_column: int = -1


def parse_sentences(
    text: str, name: str, fmt: str, opts: ReadOptions, tagged: bool, first_line: int = 1
) -> list[Sentence]:
    """Text of a known format -> sentences; ``tagged=False`` reads words only. ``first_line``: the line
    number of the text's first line in its file (a chunk of a streamed file), for error locations."""
    if fmt == "json":
        return parse_json(
            text,
            name,
            opts.words_field,
            opts.labels_field if tagged else None,
            document=name.lower().endswith(".json"),
            first_line=first_line,
        )
    if fmt == "conllu":
        return parse_conllu(text, name, opts.conllu_tag_column if tagged else None, first_line)
    if fmt == "conll":
        return parse_conll(text, name, opts.conll_word_column, opts.conll_tag_column if tagged else None, first_line)
    raise DataError(
        f"read as {fmt!r}, which has no tags" if fmt == "text" else f"unknown format {fmt!r}",
        where=name,
        fix="labelled data must be .json/.jsonl, .conllu or word-and-tag columns; "
        "pass --data_format conll if this .txt file holds columns",
    )


def read_sentences(path: str, opts: ReadOptions, tagged: bool = True) -> list[Sentence]:
    """A labelled (``tagged``) or unlabelled file of any supported format -> sentences."""
    text = read_text(Path(path))
    return parse_sentences(text, path, detect_format(path, opts.data_format, text), opts, tagged)
