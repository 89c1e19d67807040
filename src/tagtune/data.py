"""Readers (hub id, JSON/JSONL, CoNLL-U, whitespace-column CoNLL) -> validated tagged sentences.

Every sentence keeps ``where`` (file:line, or split and index) so that any later error can
point at it. Nothing is dropped silently: empty sentences are skipped and counted.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import DataError

logger = logging.getLogger(__name__)

EVAL_SPLIT_PREFERENCE = ("validation", "dev", "valid", "test")


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    where: str  # "file.conllu:123" or "split 'train', sentence 7"


@dataclass
class Corpus:
    """Training and evaluation sentences with the label list taken from training."""

    train: list[Sentence]
    eval: list[Sentence]
    eval_split: Optional[str]
    labels: list[str]
    skipped_empty: dict[str, int] = field(default_factory=dict)
    # the evaluation split's own tags when some are unseen in training (``eval`` then holds the
    # tags the model can be given: see check_eval_labels); None when eval's tags are its own
    eval_gold: Optional[list[list[str]]] = None
    unseen_eval_words: int = 0

    @property
    def eval_gold_tags(self) -> list[list[str]]:
        """The tags to score evaluation against: the split's own, unseen ones included."""
        return self.eval_gold if self.eval_gold is not None else [s.tags for s in self.eval]

    def label_counts(self, split: str) -> Counter:
        sents = self.train if split == "train" else self.eval
        return Counter(t for s in sents for t in s.tags)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}


# ----------------------------------------------------------------------------------------
# file readers
# ----------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(
            f"file not found: {path}",
            where=str(path),
            fix="check the path given for train_file/validation_file/test_file",
        )
    try:
        raw = path.read_bytes()
    except OSError as err:  # permissions, a directory, a vanished network mount
        raise DataError(
            f"cannot read file: {err.strerror or err}", where=str(path), fix="check the path and its permissions"
        ) from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark some editors write
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"invalid UTF-8 at byte offset {err.start} (byte 0x{raw[err.start]:02x}): {err.reason}",
            where=f"{path}:{line}",
            fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None


def detect_format(path: str, data_format: str = "auto") -> str:
    if data_format != "auto":
        return data_format
    suffix = Path(path).suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "json"
    if suffix == ".conllu":
        return "conllu"
    if suffix in (".conll", ".txt", ".tsv", ".iob", ".bio", ".pos", ".col"):
        return "conll"
    raise DataError(
        f"unknown data format for extension '{suffix or '(none)'}'",
        where=path,
        fix="use .json/.jsonl, .conllu or .conll/.txt/.tsv, or pass --data_format json|conllu|conll",
    )


def _check_record(rec: Any, words_field: str, labels_field: str, where: str) -> tuple[list[str], list[str]]:
    if not isinstance(rec, dict):
        raise DataError(
            f"expected an object with '{words_field}' and '{labels_field}', got {type(rec).__name__}", where=where
        )
    missing = [f for f in (words_field, labels_field) if f not in rec]
    if missing:
        raise DataError(
            f"missing field(s) {missing}; present: {sorted(rec)}",
            where=where,
            fix="set --words_field/--labels_field to the names your data uses",
        )
    words, tags = rec[words_field], rec[labels_field]
    for name, seq in ((words_field, words), (labels_field, tags)):
        if not isinstance(seq, list):
            raise DataError(f"field '{name}' must be a list, got {type(seq).__name__}", where=where)
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
                        fix="re-export the data from a UTF-8 source; \\uD800-\\uDFFF escapes "
                        "must come in surrogate pairs",
                    ) from None
    return words, tags


def read_json(path: str, words_field: str = "words", labels_field: str = "labels") -> list[Sentence]:
    """A JSON array of objects, an object with a 'data' list, or JSON Lines."""
    p = Path(path)
    text = _read_text(p)
    records: list[tuple[Any, str]] = []
    stripped = text.lstrip()
    if p.suffix.lower() == ".json" and stripped[:1] in ("[", "{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            if stripped[:1] == "[":
                raise DataError(f"invalid JSON: {err.msg}", where=f"{path}:{err.lineno}") from None
            obj = None  # may be JSON Lines with a .json suffix
        if obj is not None:
            if isinstance(obj, dict) and isinstance(obj.get("data"), list):
                obj = obj["data"]
            if isinstance(obj, dict):
                obj = [obj]
            if not isinstance(obj, list):
                raise DataError("top-level JSON must be a list of sentence objects", where=path)
            records = [(rec, f"{path} (record {i})") for i, rec in enumerate(obj)]
    if not records and stripped:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((json.loads(line), f"{path}:{lineno}"))
            except json.JSONDecodeError as err:
                raise DataError(
                    f"invalid JSON line: {err.msg} (column {err.colno})", where=f"{path}:{lineno}"
                ) from None
    return [Sentence(*_check_record(rec, words_field, labels_field, where), where=where) for rec, where in records]


def read_conllu(path: str, tag_column: str = "xpos") -> list[Sentence]:
    """CoNLL-U: FORM is column 2, UPOS 4, XPOS 5; multiword ranges (3-4) and empty nodes (5.1) skipped."""
    col = {"upos": 3, "xpos": 4}[tag_column]
    text = _read_text(Path(path))
    out: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 1
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r")
        if not line.strip():
            if words:
                out.append(Sentence(words, tags, f"{path}:{start}"))
            words, tags, start = [], [], lineno + 1
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise DataError(
                f"expected 10 tab-separated columns, found {len(cols)}",
                where=f"{path}:{lineno}",
                fix="CoNLL-U needs ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC; use --data_format conll for plain columns",
            )
        tok_id = cols[0]
        if "-" in tok_id or "." in tok_id:
            continue
        tag = cols[col]
        if tag == "_":
            raise DataError(
                f"token '{cols[1]}' has no {tag_column.upper()} tag ('_')",
                where=f"{path}:{lineno}",
                fix=f"use --conllu_tag_column {'upos' if tag_column == 'xpos' else 'xpos'} if that column is filled",
            )
        words.append(cols[1])
        tags.append(tag)
    if words:
        out.append(Sentence(words, tags, f"{path}:{start}"))
    return out


def read_conll(path: str, word_column: int = 0, tag_column: int = -1) -> list[Sentence]:
    """Whitespace-separated columns, one token per line, blank line between sentences; -DOCSTART- skipped."""
    text = _read_text(Path(path))
    out: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 1
    for lineno, line in enumerate(text.splitlines(), 1):
        cols = line.split()
        if not cols:
            if words:
                out.append(Sentence(words, tags, f"{path}:{start}"))
            words, tags, start = [], [], lineno + 1
            continue
        if cols[0] == "-DOCSTART-":
            start = lineno + 1
            continue
        need = max(c + 1 if c >= 0 else -c for c in (word_column, tag_column))  # -1 = last column
        if len(cols) < max(need, 2):
            raise DataError(
                f"expected a word column and a tag column, found {len(cols)} column(s): {line!r}",
                where=f"{path}:{lineno}",
                fix="each token line needs the word and its tag separated by whitespace",
            )
        words.append(cols[word_column])
        tags.append(cols[tag_column])
    if words:
        out.append(Sentence(words, tags, f"{path}:{start}"))
    return out


def read_file(path: str, cfg: Any) -> list[Sentence]:
    fmt = detect_format(path, cfg.data_format)
    if fmt == "json":
        return read_json(path, cfg.words_field, cfg.labels_field)
    if fmt == "conllu":
        return read_conllu(path, cfg.conllu_tag_column)
    return read_conll(path, cfg.conll_word_column, cfg.conll_tag_column)


# ----------------------------------------------------------------------------------------
# hub datasets
# ----------------------------------------------------------------------------------------


def _hub_split_to_sentences(ds: Any, split: str, words_field: str, labels_field: str) -> list[Sentence]:
    for name in (words_field, labels_field):
        if name not in ds.column_names:
            raise DataError(
                f"missing field '{name}'; columns: {ds.column_names}",
                where=f"hub split '{split}'",
                fix="set --words_field/--labels_field",
            )
    names = None
    feat = ds.features[labels_field]
    inner = getattr(feat, "feature", None)
    if inner is not None and hasattr(inner, "names"):
        names = inner.names  # ClassLabel ids -> tag strings
    out = []
    for i, rec in enumerate(ds):
        where = f"split '{split}', sentence {i}"
        if names is not None:
            rec = {words_field: rec[words_field], labels_field: [names[t] for t in rec[labels_field]]}
        out.append(Sentence(*_check_record(rec, words_field, labels_field, where), where=where))
    return out


def load_hub(name: str, config_name: Optional[str], words_field: str, labels_field: str) -> dict[str, list[Sentence]]:
    if name.startswith("synthetic:"):
        from .synthetic import generate_splits

        return {
            split: [Sentence(w, t, f"split '{split}', sentence {i}") for i, (w, t) in enumerate(sents)]
            for split, sents in generate_splits(name.split(":", 1)[1]).items()
        }
    import datasets

    try:
        dsd = datasets.load_dataset(name, config_name)
    except Exception as err:  # offline, typo, private: all surface as one clear message
        raise DataError(
            f"cannot load hub dataset '{name}': {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            where="config field 'dataset_name'",
            fix="check the id and your network (HF_DATASETS_OFFLINE=1 blocks downloads), or use --train_file/--validation_file with local files",
        ) from None
    return {split: _hub_split_to_sentences(ds, split, words_field, labels_field) for split, ds in dsd.items()}


# ----------------------------------------------------------------------------------------
# validation and assembly
# ----------------------------------------------------------------------------------------


def validate_split(split: str, sents: Iterable[Sentence]) -> tuple[list[Sentence], int]:
    """Length check with location; empty sentences skipped and counted."""
    kept, empty = [], 0
    for s in sents:
        if len(s.words) != len(s.tags):
            raise DataError(
                f"{len(s.words)} words but {len(s.tags)} labels in split '{split}'",
                where=s.where,
                fix="every word needs exactly one tag; fix or remove this sentence",
            )
        if not s.words:
            empty += 1
            continue
        for i, w in enumerate(s.words):
            if not w.strip():
                raise DataError(
                    f"word {i} is empty or whitespace in split '{split}'",
                    where=s.where,
                    fix="remove empty tokens or replace them with a placeholder",
                )
        kept.append(s)
    return kept, empty


def pick_eval_split(available: Iterable[str], eval_split: str) -> Optional[str]:
    available = list(available)
    if eval_split != "auto":
        if eval_split not in available:
            raise DataError(
                f"evaluation split '{eval_split}' not found; available: {available}", where="config field 'eval_split'"
            )
        return eval_split
    for name in EVAL_SPLIT_PREFERENCE:
        if name in available:
            return name
    return None


def check_eval_labels(labels: list[str], split: str, sents: list[Sentence], policy: str = "error") -> int:
    """Words whose tag the training split lacks; ``policy`` 'error' stops on them, naming each tag and count.

    Under 'ignore'/'as_o' the sentences are returned unchanged here; ``map_unseen`` gives the
    model-side copy (an unseen tag cannot be a class id) and the metrics score the real tags.
    """
    known = set(labels)
    unseen = Counter(t for s in sents for t in s.tags if t not in known)
    if unseen and policy == "error":
        first = next(s for s in sents if any(t in unseen for t in s.tags))
        detail = ", ".join(f"'{t}' x{n}" for t, n in unseen.most_common())
        raise DataError(
            f"evaluation split '{split}' has label(s) never seen in training: {detail}",
            where=f"first at {first.where}",
            fix="add training examples with these tags, map them to training tags, or pass "
            "--unseen_eval_labels ignore|as_o",
        )
    if unseen:
        logger.warning(
            "evaluation split '%s': %d word(s) carry tags unseen in training (%s), scored under --unseen_eval_labels %s",
            split,
            sum(unseen.values()),
            ", ".join(f"'{t}' x{n}" for t, n in unseen.most_common()),
            policy,
        )
    return sum(unseen.values())


def map_unseen(labels: list[str], sents: list[Sentence]) -> list[Sentence]:
    """Copies whose unseen tags become 'O' (the model's target for them, e.g. for the evaluation loss)."""
    known = set(labels)
    if "O" not in known:
        raise DataError(
            "--unseen_eval_labels ignore/as_o maps unseen tags to 'O', but the training tags have no 'O'",
            where="training split",
            fix="use --unseen_eval_labels error and fix the evaluation tags",
        )
    return [Sentence(s.words, [t if t in known else "O" for t in s.tags], s.where) for s in sents]


def build_corpus(splits: dict[str, list[Sentence]], cfg: Any, log: Optional[logging.Logger] = None) -> Corpus:
    log = log or logger
    if "train" not in splits:
        raise DataError(f"no 'train' split; available: {list(splits)}", where=cfg.dataset_name or "data files")
    eval_name = pick_eval_split([s for s in splits if s != "train"], cfg.eval_split)
    if eval_name is None and cfg.eval_every_epoch:
        raise DataError(
            "no validation, dev or test split to evaluate on",
            where=cfg.dataset_name or "data files",
            fix="pass --validation_file, or --eval_every_epoch false",
        )
    skipped: dict[str, int] = {}
    train, skipped["train"] = validate_split("train", splits["train"])
    evals: list[Sentence] = []
    if eval_name is not None:
        evals, skipped[eval_name] = validate_split(eval_name, splits[eval_name])
    if cfg.max_train_samples:
        train = train[: cfg.max_train_samples]
    if cfg.max_eval_samples:
        evals = evals[: cfg.max_eval_samples]
    for split, n in skipped.items():
        if n:
            log.warning("skipped %d empty sentence(s) in split '%s'", n, split)
    if not train:
        raise DataError(
            "training split is empty after skipping empty sentences", where=cfg.dataset_name or cfg.train_file
        )
    if eval_name is not None and not evals and cfg.eval_every_epoch:
        raise DataError(
            f"evaluation split '{eval_name}' is empty after skipping empty sentences",
            where=cfg.dataset_name or cfg.validation_file or cfg.test_file,
        )
    labels = sorted({t for s in train for t in s.tags})
    unseen = check_eval_labels(labels, eval_name, evals, cfg.unseen_eval_labels) if evals else 0
    gold = [s.tags for s in evals] if unseen else None
    if unseen:
        evals = map_unseen(labels, evals)
    return Corpus(
        train=train,
        eval=evals,
        eval_split=eval_name,
        labels=labels,
        skipped_empty=skipped,
        eval_gold=gold,
        unseen_eval_words=unseen,
    )


def load_corpus(cfg: Any, log: Optional[logging.Logger] = None) -> Corpus:
    """Read the configured source and return validated train/eval sentences plus the label list."""
    if cfg.dataset_name:
        splits = load_hub(cfg.dataset_name, cfg.dataset_config_name, cfg.words_field, cfg.labels_field)
    else:
        splits = {"train": read_file(cfg.train_file, cfg)}
        if cfg.validation_file:
            splits["validation"] = read_file(cfg.validation_file, cfg)
        if cfg.test_file:
            splits["test"] = read_file(cfg.test_file, cfg)
    return build_corpus(splits, cfg, log)


def iter_tags(sents: Iterable[Sentence]) -> Iterator[str]:
    for s in sents:
        yield from s.tags
