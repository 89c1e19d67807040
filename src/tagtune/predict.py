"""Apply a trained tagger: the ``Tagger`` API and the `tagtune predict`, `evaluate` and `export`
subcommands.

  tagtune predict  --model RUN_OR_MODEL_DIR --input FILE|- [--output FILE|-] [--scores]
  tagtune evaluate --model RUN_OR_MODEL_DIR --dataset FILE|HUB_ID [--split NAME] [--out DIR]
  tagtune export   --model RUN_OR_MODEL_DIR --merge --out DIR

A model is a run directory's ``model/`` folder (or the run directory itself): a full
transformers model, or a peft LoRA adapter that is loaded onto its base model. Inference uses
the training feature code (``features.build_features``), so sub-word alignment and the window
rule for long sentences are the training ones: every word gets exactly one tag, from its
first sub-token in the window that owns it.

Raw text is split by ``split_text``: every non-empty line is split into sentences after
``.``, ``!`` or ``?`` (plus any closing quotes/brackets) followed by whitespace, and each
sentence into words by ``WORD_PATTERN`` (numbers such as ``1,000``/``3.14`` stay whole;
clitics ``'s 're 've 'll 'd 'm n't`` split off Penn-Treebank style; every other punctuation
mark is its own word). A sentence never spans two lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import torch

from .errors import CheckpointError, ConfigError, DataError, TagtuneError

logger = logging.getLogger("tagtune.predict")

CONFIG_FILE = "tagtune_config.json"  # written by train.save_model: resolved TrainConfig + labels
ADAPTER_FILE = "adapter_config.json"  # peft adapter
PREDICTIONS_FILE = "eval_predictions.jsonl"  # words, gold labels and predicted tags per sentence

# ----------------------------------------------------------------------------------------
# raw text -> sentences of words
# ----------------------------------------------------------------------------------------

WORD_PATTERN = re.compile(
    r"""
    \d+(?:[.,:]\d+)*\b              # numbers: 5, 1,000, 3.14, 10:30
  | \w+(?:-\w+)*?(?=n't\b)          # "do" of "don't"
  | n't\b                           # "n't"
  | '(?:s|re|ve|ll|d|m)\b           # clitics: 's 're 've 'll 'd 'm
  | \w+(?:-\w+)*                    # words, hyphenated words
  | \.\.\.                          # ellipsis
  | [^\w\s]                         # any other symbol, one per word
    """,
    re.VERBOSE | re.IGNORECASE,
)
# a sentence runs to . ! ? (repeated, plus closing quotes/brackets) before whitespace, or to the line's end
SENTENCE = re.compile(r"""\S.*?(?:[.!?]+["'”’)\]]*(?=\s|$)|$)""")


def split_words(sentence: str) -> list[str]:
    return WORD_PATTERN.findall(sentence)


def split_text(text: str) -> list[list[str]]:
    """Raw text -> sentences of words, by the rule in the module docstring."""
    return [ws for ws, _ in _split_text_lines(text)]


def _split_text_lines(text: str) -> Iterator[tuple[list[str], int]]:
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in SENTENCE.finditer(line):
            words = split_words(m.group())
            if words:
                yield words, lineno


# ----------------------------------------------------------------------------------------
# model directory -> Tagger
# ----------------------------------------------------------------------------------------


def find_model_dir(path: str | os.PathLike) -> Path:
    """A run directory (with ``model/``) or a model folder -> the model folder."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(
            f"model path not found: {p}",
            where="--model",
            fix="give a run directory (outputs/<recipe>) or its model/ folder",
        )
    for cand in (p / "model", p):
        if (cand / "config.json").is_file() or (cand / ADAPTER_FILE).is_file():
            return cand
    hint = " (the run was trained with --save_model false?)" if (p / "run_config.json").is_file() else ""
    raise CheckpointError(
        f"no model in {p}: neither config.json nor {ADAPTER_FILE} found there or in {p / 'model'}{hint}",
        where="--model",
        fix="give a run directory (outputs/<recipe>) or its model/ folder",
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read {path.name}: {err}",
            where=str(path),
            fix="the model folder is damaged; re-save or re-train it",
        ) from None


@contextlib.contextmanager
def _quiet_transformers(report: bool = True):
    """No per-file progress bars while loading; ``report=False`` also hides the load report
    (a base model loaded for an adapter reports its new classifier as missing: expected)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if not report:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _resolve_device(device: Optional[str]) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(
            f"invalid device {device!r}: {err}", where="--device", fix="use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA device requested but no GPU is available", where="--device", fix="use --device cpu")
    return dev


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _pick_base(model_dir: Path, tt_cfg: dict[str, Any], override: Optional[str]) -> str:
    """Base model of an adapter: the override, else the training config's model (portable:
    'synthetic:*' is rebuilt locally), else peft's recorded path."""
    from .modeling import resolve_model_path

    adapter = _read_json(model_dir / ADAPTER_FILE)
    cands = [c for c in (override, tt_cfg.get("model_name_or_path"), adapter.get("base_model_name_or_path")) if c]
    if not cands:
        raise CheckpointError(
            "adapter names no base model",
            where=str(model_dir / ADAPTER_FILE),
            fix="pass --base_model with the model the adapter was trained on",
        )
    if override:
        return resolve_model_path(override)
    for c in cands:
        if c.startswith("synthetic:") or Path(c).is_dir():
            return resolve_model_path(c)
    return cands[0]  # a hub id


@dataclass
class Tagger:
    """A trained token classifier with its tokenizer and the training window rule.

    >>> tagger = Tagger.load("outputs/smoke")
    >>> tagger.tag([["the", "cat", "saw", "John"]])
    [['DT', 'NN', 'VBD', 'NNP']]
    >>> tags, scores = tagger.tag([["the", "cat", "saw", "John"]], return_scores=True)
    """

    model: torch.nn.Module = field(repr=False)
    tokenizer: Any = field(repr=False)
    labels: list[str]
    max_length: Optional[int] = None
    stride: int = 32
    batch_size: int = 32
    model_dir: Optional[Path] = None
    is_adapter: bool = False
    train_config: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        device: Optional[str] = "auto",
        dtype: str = "float32",
        batch_size: Optional[int] = None,
        max_length: Optional[int] = None,
        stride: Optional[int] = None,
        base_model: Optional[str] = None,
    ) -> Tagger:
        """Load a run directory or model folder: a full model, or an adapter onto its base model.

        ``batch_size``, ``max_length`` and ``stride`` default to the training run's evaluation
        settings, so predictions match the training evaluation exactly.
        """
        from transformers import AutoModelForTokenClassification

        from .features import load_tokenizer

        model_dir = find_model_dir(path)
        tt_cfg = _read_json(model_dir / CONFIG_FILE) if (model_dir / CONFIG_FILE).is_file() else {}
        is_adapter = (model_dir / ADAPTER_FILE).is_file()
        dev = _resolve_device(device)
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}", where="--dtype", fix=f"choose one of {list(DTYPES)}")
        remote = bool(tt_cfg.get("trust_remote_code", False))
        attn = tt_cfg.get("attn_implementation", "sdpa")
        try:
            if is_adapter:
                from peft import PeftModel

                from .modeling import load_base_model

                labels = tt_cfg.get("labels")
                if not labels:
                    raise CheckpointError(
                        f"adapter folder has no label list ({CONFIG_FILE} missing or without 'labels')",
                        where=str(model_dir),
                        fix="use the model/ folder written by tagtune training",
                    )
                base = _pick_base(model_dir, tt_cfg, base_model)
                with _quiet_transformers(report=False):
                    model = load_base_model(
                        base, labels, SimpleNamespace(trust_remote_code=remote, attn_implementation=attn)
                    )
                with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
                    warnings.simplefilter("ignore", FutureWarning)
                    model = PeftModel.from_pretrained(model, str(model_dir))
            else:
                with _quiet_transformers():
                    model = AutoModelForTokenClassification.from_pretrained(
                        str(model_dir), trust_remote_code=remote, attn_implementation=attn
                    )
                id2label = model.config.id2label
                labels = [id2label[i] for i in range(len(id2label))]
                if tt_cfg.get("labels") and tt_cfg["labels"] != labels:
                    raise CheckpointError(
                        f"label maps disagree: config.json has {labels}, {CONFIG_FILE} has {tt_cfg['labels']}",
                        where=str(model_dir),
                        fix="re-export the model, or remove the stale file",
                    )
            tokenizer = load_tokenizer(str(model_dir), remote)
        except TagtuneError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"cannot load the model: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                where=str(model_dir),
                fix="check the folder is a tagtune model/ folder; for an adapter whose base model moved or "
                "is on the hub while offline, pass --base_model PATH",
            ) from None
        model.to(device=dev, dtype=DTYPES[dtype]).eval()
        return cls(
            model=model,
            tokenizer=tokenizer,
            labels=list(labels),
            max_length=max_length if max_length is not None else tt_cfg.get("max_length"),
            stride=stride if stride is not None else int(tt_cfg.get("stride", 32)),
            batch_size=batch_size or int(tt_cfg.get("per_device_eval_batch_size", 32)),
            model_dir=model_dir,
            is_adapter=is_adapter,
            train_config=tt_cfg,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def label2id(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.labels)}

    # ---- inference ----------------------------------------------------------------------
    def tag(self, sentences: Sequence[Sequence[str]], return_scores: bool = False):
        """Tags for pre-split sentences: ``list[list[str]]``, one tag per word.

        With ``return_scores`` returns ``(tags, scores)``; a score is the softmax probability
        of the chosen tag at the word's first sub-token.
        """
        run = self._run(sentences)
        tags = [[self.labels[i] for i in p] for p in run.pred]
        if return_scores:
            return tags, [[float(x) for x in c] for c in run.conf]
        return tags

    def _run(self, sentences: Sequence[Sequence[str]], gold: Optional[Sequence[Sequence[int]]] = None) -> _Run:
        from .features import Collator, build_features

        sents = _check_sentences(sentences)
        sizes = np.asarray([len(s) for s in sents], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        n = int(offsets[-1])
        pred = np.zeros(n, dtype=np.int64)
        conf = np.zeros(n, dtype=np.float32)
        nll = np.zeros(n, dtype=np.float64) if gold is not None else None
        gold_flat = torch.as_tensor(
            np.concatenate([np.asarray(g, dtype=np.int64) for g in gold]) if gold else np.zeros(0, np.int64)
        )
        seen = np.zeros(n, dtype=bool)
        if n:
            feats = build_features(sents, None, self.tokenizer, max_length=self.max_length, stride=self.stride)
            # longest first, as the training evaluation batches: same padding, same numbers
            order = np.argsort(-np.asarray(feats.lengths), kind="stable")
            collate = Collator(feats, self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
            dev = self.device
            with torch.inference_mode():
                for lo in range(0, len(order), self.batch_size):
                    batch = collate(order[lo : lo + self.batch_size].tolist())
                    logits = self.model(
                        input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev)
                    ).logits
                    word_ids = batch["word_ids"]
                    mask = word_ids >= 0
                    flat = (torch.as_tensor(offsets[:-1])[batch["sent_ids"]][:, None] + word_ids)[mask]
                    scored = logits[mask.to(dev)]
                    logp = torch.log_softmax(scored.float(), dim=-1).cpu()
                    best = scored.argmax(-1).cpu()
                    idx = flat.numpy()
                    pred[idx] = best.numpy()
                    conf[idx] = logp.gather(1, best[:, None])[:, 0].exp().numpy()
                    if nll is not None:
                        nll[idx] = (-logp.gather(1, gold_flat[flat][:, None])[:, 0]).double().numpy()
                    seen[idx] = True
        if not seen.all():  # the window rule guarantees this; a failure here is a bug, not bad input
            raise RuntimeError(f"{int((~seen).sum())} of {n} words got no prediction")
        if not sents:
            return _Run([], [], [] if gold is not None else None)
        cut = offsets[1:-1]
        return _Run(np.split(pred, cut), np.split(conf, cut), np.split(nll, cut) if nll is not None else None)

    # ---- export -------------------------------------------------------------------------
    def merged(self) -> Tagger:
        """A Tagger whose adapter is merged into the base weights (a plain transformers model)."""
        if not self.is_adapter:
            return self
        model = self.model.merge_and_unload()
        return Tagger(
            model=model,
            tokenizer=self.tokenizer,
            labels=self.labels,
            max_length=self.max_length,
            stride=self.stride,
            batch_size=self.batch_size,
            model_dir=self.model_dir,
            is_adapter=False,
            train_config=self.train_config,
        )

    def save(self, out: str | os.PathLike) -> None:
        """save_pretrained (safetensors) + tokenizer + tagtune_config.json into ``out``."""
        from .outputs import atomic_write_json

        out = Path(out)
        with _quiet_transformers():
            self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        atomic_write_json(
            out / CONFIG_FILE,
            {
                **self.train_config,
                "labels": self.labels,
                "merged_adapter": bool(self.train_config.get("method") == "lora"),
            },
        )


@dataclass
class _Run:
    pred: list[np.ndarray]  # label ids per sentence
    conf: list[np.ndarray]  # probability of the chosen label
    nll: Optional[list[np.ndarray]]  # -log p(gold) when gold was given


def _check_sentences(sentences: Any) -> list[list[str]]:
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise DataError(
            f"expected a list of sentences, each a list of words; got {type(sentences).__name__}",
            fix="split raw text first, e.g. tagtune.predict.split_text(text), and pass the result",
        )
    out = []
    for i, s in enumerate(sentences):
        if isinstance(s, str) or not isinstance(s, Sequence):
            raise DataError(
                f"sentence {i} is a {type(s).__name__}, expected a list of words",
                where=f"sentence {i}",
                fix="pass [['The', 'cat', 'sat'], ...]: one list of words per sentence",
            )
        for j, w in enumerate(s):
            if not isinstance(w, str):
                raise DataError(f"word {j} is {type(w).__name__} {w!r}, expected a string", where=f"sentence {i}")
            if not w.strip():
                raise DataError(
                    f"word {j} is empty or whitespace",
                    where=f"sentence {i}",
                    fix="remove empty words or replace them with a placeholder",
                )
        out.append(list(s))
    return out


# ----------------------------------------------------------------------------------------
# prediction input / output
# ----------------------------------------------------------------------------------------


@dataclass
class InputSentence:
    words: list[str]
    where: str
    extra: dict[str, Any] = field(default_factory=dict)  # a JSONL record's other fields, passed through


INPUT_FORMATS = ("auto", "text", "jsonl", "conll", "conllu")
CONLL_SUFFIXES = (".conll", ".tsv", ".iob", ".bio", ".pos", ".col")


def detect_input_format(name: str, text: str, fmt: str) -> str:
    """By extension (.jsonl/.json, .conllu, .conll/.tsv/..., .txt = text); otherwise (stdin) a
    first non-blank line starting with '{' or '[' means JSONL, anything else raw text."""
    if fmt != "auto":
        return fmt
    suffix = Path(name).suffix.lower() if name != "-" else ""
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".conllu":
        return "conllu"
    if suffix in CONLL_SUFFIXES:
        return "conll"
    if suffix == ".txt":
        return "text"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return "jsonl" if first[:1] in ("{", "[") else "text"


def read_jsonl_words(text: str, name: str, words_field: str) -> list[InputSentence]:
    """One sentence per line: an object with a list of words in ``words_field``, or a bare list of words."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"invalid JSON line: {err.msg} (column {err.colno})",
                where=where,
                fix=f'each line must be {{"{words_field}": ["The", "cat"]}} or ["The", "cat"]',
            ) from None
        extra: dict[str, Any] = {}
        if isinstance(rec, dict):
            if words_field not in rec:
                raise DataError(
                    f"no '{words_field}' field; present: {sorted(rec)}",
                    where=where,
                    fix="set --words_field to the field holding the list of words",
                )
            extra, words = {k: v for k, v in rec.items() if k != words_field}, rec[words_field]
        else:
            words = rec
        if not isinstance(words, list):
            raise DataError(
                f"words must be a list of strings, got {type(words).__name__}",
                where=where,
                fix="pre-split words as a JSON list, or use --input_format text for raw text",
            )
        for j, w in enumerate(words):
            if not isinstance(w, str) or not w.strip():
                raise DataError(f"word {j} is {w!r}: words must be non-empty strings", where=where)
        out.append(InputSentence(words, where, extra))
    return out


def read_conll_words(text: str, name: str, word_column: int, conllu: bool) -> list[InputSentence]:
    """CoNLL-U (FORM column; ranges, empty nodes and comments skipped) or whitespace columns
    (``word_column``; '-DOCSTART-' skipped); a blank line ends a sentence. Tag columns may be absent."""
    out: list[InputSentence] = []
    words: list[str] = []
    start = 1
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            if words:
                out.append(InputSentence(words, f"{name}:{start}"))
            words, start = [], lineno + 1
            continue
        if conllu:
            if stripped.startswith("#"):
                continue
            cols = line.rstrip("\r").split("\t")
            if len(cols) < 2 or not cols[0].replace("-", "").replace(".", "").isdigit():
                raise DataError(
                    f"expected tab-separated ID and FORM columns, got {line!r}",
                    where=f"{name}:{lineno}",
                    fix="CoNLL-U needs ID<TAB>FORM<TAB>...; use --input_format conll for whitespace columns",
                )
            if "-" in cols[0] or "." in cols[0]:
                continue
            words.append(cols[1])
        else:
            cols = stripped.split()
            if cols[0] == "-DOCSTART-":
                start = lineno + 1
                continue
            try:
                words.append(cols[word_column])
            except IndexError:
                raise DataError(
                    f"no column {word_column} in {line!r}",
                    where=f"{name}:{lineno}",
                    fix="set --conll_word_column to the 0-based column holding the word",
                ) from None
    if words:
        out.append(InputSentence(words, f"{name}:{start}"))
    return out


def read_input(
    name: str, fmt: str = "auto", words_field: str = "words", word_column: int = 0
) -> tuple[list[InputSentence], str]:
    """Read ``name`` (a file, or '-' for stdin) -> sentences and the format used."""
    if name == "-":
        text = sys.stdin.read()
        label = "<stdin>"
    else:
        from .data import _read_text

        text = _read_text(Path(name))  # clear errors for missing files and bad UTF-8
        label = name
    fmt = detect_input_format(name, text, fmt)
    if fmt == "text":
        sents = [InputSentence(ws, f"{label}:{ln}") for ws, ln in _split_text_lines(text)]
    elif fmt == "jsonl":
        sents = read_jsonl_words(text, label, words_field)
    else:
        sents = read_conll_words(text, label, word_column, conllu=fmt == "conllu")
    if not any(s.words for s in sents):
        raise DataError(
            f"input has no words to tag (read as {fmt})",
            where=label,
            fix="give a non-empty file; check --input_format if the file is not empty",
        )
    return sents, fmt


def format_output(
    sents: list[InputSentence], tags: list[list[str]], scores: Optional[list[list[float]]], fmt: str
) -> str:
    parts = []
    for i, s in enumerate(sents):
        if fmt == "jsonl":
            rec = {**s.extra, "words": s.words, "tags": tags[i]}
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


# ----------------------------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------------------------


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run directory (outputs/<recipe>) or its model/ folder")
    p.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N")
    p.add_argument(
        "--dtype", default="float32", choices=list(DTYPES), help="weights/activations dtype (float16/bfloat16: GPU)"
    )
    p.add_argument(
        "--batch_size", type=int, default=None, help="windows per forward pass (default: the run's eval batch size)"
    )
    p.add_argument("--max_length", type=int, default=None, help="sub-tokens per window (default: the run's)")
    p.add_argument("--stride", type=int, default=None, help="words of left context per window (default: the run's)")
    p.add_argument("--base_model", default=None, help="base model of a LoRA adapter, if it moved since training")


def _load_from_args(a: argparse.Namespace) -> Tagger:
    if a.batch_size is not None and a.batch_size < 1:
        raise ConfigError(f"invalid value {a.batch_size}: must be >= 1", where="--batch_size")
    if a.max_length is not None and a.max_length < 8:
        raise ConfigError(f"invalid value {a.max_length}: must be >= 8", where="--max_length")
    if a.stride is not None and a.stride < 0:
        raise ConfigError(f"invalid value {a.stride}: must be >= 0", where="--stride")
    return Tagger.load(
        a.model,
        device=a.device,
        dtype=a.dtype,
        batch_size=a.batch_size,
        max_length=a.max_length,
        stride=a.stride,
        base_model=a.base_model,
    )


def _write(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from .outputs import atomic_write_text

        atomic_write_text(path, text)  # a failure never leaves a half-written file


def predict_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="tagtune predict", description="Tag raw text, JSONL of pre-split words, or CoNLL(-U)."
    )
    _model_args(p)
    p.add_argument("--input", required=True, help="file, or - for stdin")
    p.add_argument(
        "--input_format",
        default="auto",
        choices=INPUT_FORMATS,
        help="auto: by extension (.txt text, .jsonl/.json, .conllu, .conll/.tsv); stdin: JSONL if it starts with { or [, else text",
    )
    p.add_argument("--output", default="-", help="file (written atomically), or - for stdout")
    p.add_argument(
        "--output_format",
        default="auto",
        choices=("auto", "jsonl", "conll"),
        help="auto: by --output extension (.jsonl/.json or .conll/.tsv/.txt), else conll for CoNLL input, jsonl otherwise",
    )
    p.add_argument("--scores", action="store_true", help="add each word's confidence (probability of its tag)")
    p.add_argument("--words_field", default="words", help="JSONL field holding the words")
    p.add_argument("--conll_word_column", type=int, default=0, help="0-based word column of whitespace CoNLL input")
    a = p.parse_args(argv)

    find_model_dir(a.model)  # a wrong --model fails before reading a large input
    sents, in_fmt = read_input(a.input, a.input_format, a.words_field, a.conll_word_column)
    out_fmt = a.output_format
    if out_fmt == "auto":
        suffix = Path(a.output).suffix.lower() if a.output != "-" else ""
        out_fmt = (
            "jsonl"
            if suffix in (".jsonl", ".json")
            else "conll"
            if suffix in CONLL_SUFFIXES + (".txt", ".conllu")
            else "conll"
            if in_fmt in ("conll", "conllu")
            else "jsonl"
        )
    tagger = _load_from_args(a)
    t0 = time.time()
    tags, scores = tagger.tag([s.words for s in sents], return_scores=True)
    secs = time.time() - t0
    _write(a.output, format_output(sents, tags, scores if a.scores else None, out_fmt))
    n = sum(len(t) for t in tags)
    print(
        f"tagtune predict: {n} words in {len(sents)} sentences ({in_fmt} -> {out_fmt}) in {secs:.2f} s "
        f"({n / max(secs, 1e-9):.0f} words/s on {tagger.device})" + ("" if a.output == "-" else f" -> {a.output}"),
        file=sys.stderr,
    )
    return 0


@dataclass
class Evaluation:
    metrics: dict[str, Any]  # compute_metrics(...) + eval_loss: the training evaluation's keys
    words: list[list[str]]
    gold: list[list[str]]
    pred: list[list[str]]


def evaluate_sentences(tagger: Tagger, words: list[list[str]], gold: list[list[str]]) -> Evaluation:
    """Score ``tagger`` on labelled sentences exactly as the training evaluation does."""
    from .data import Sentence, check_eval_labels
    from .metrics import compute_metrics

    check_eval_labels(
        tagger.labels, "evaluation", [Sentence(w, t, f"sentence {i}") for i, (w, t) in enumerate(zip(words, gold))]
    )
    l2i = tagger.label2id
    run = tagger._run(words, [[l2i[t] for t in g] for g in gold])
    pred = [[tagger.labels[i] for i in p] for p in run.pred]
    metrics = compute_metrics(gold, pred)
    nll = np.concatenate(run.nll) if run.nll else np.zeros(0)
    metrics["eval_loss"] = float(nll.mean()) if len(nll) else float("nan")
    return Evaluation(metrics, words, gold, pred)


def predictions_jsonl(words: list[list[str]], gold: list[list[str]], pred: list[list[str]]) -> str:
    """The eval_predictions.jsonl format shared with training: words, gold labels, predicted tags."""
    return "".join(
        json.dumps({"words": w, "labels": g, "tags": p}, ensure_ascii=False) + "\n"
        for w, g, p in zip(words, gold, pred)
    )


def _load_labelled(a: argparse.Namespace, tt_cfg: dict[str, Any]) -> tuple[list[Any], str, str]:
    """--dataset (file of any supported format, or hub id) -> validated sentences, split name, slug."""
    from .data import load_hub, pick_eval_split, read_file, validate_split

    known = {
        "data_format": "auto",
        "words_field": "words",
        "labels_field": "labels",
        "conllu_tag_column": "xpos",
        "conll_word_column": 0,
        "conll_tag_column": -1,
    }
    # the training run's reading settings, overridden by flags
    rcfg = SimpleNamespace(
        **{k: (getattr(a, k) if getattr(a, k) is not None else tt_cfg.get(k, d)) for k, d in known.items()}
    )
    ds = a.dataset
    is_file = Path(ds).exists() or Path(ds).suffix.lower() in (".json", ".jsonl", ".conllu", ".conll", ".txt", ".tsv")
    if is_file:
        sents, split = read_file(ds, rcfg), a.split if a.split != "auto" else "file"
        slug = Path(ds).stem
    else:
        splits = load_hub(ds, a.dataset_config_name, rcfg.words_field, rcfg.labels_field)
        split = (
            pick_eval_split([s for s in splits if s != "train"], a.split)
            if a.split == "auto"
            else pick_eval_split(list(splits), a.split)
        )
        if split is None:
            raise DataError(
                f"no validation, dev or test split; available: {list(splits)}",
                where=f"--dataset {ds}",
                fix="choose one with --split, e.g. --split train",
            )
        sents = splits[split]
        slug = f"{ds.replace(':', '-').replace('/', '_')}-{split}"
    kept, empty = validate_split(split, sents)
    if empty:
        logger.warning("skipped %d empty sentence(s) in split '%s'", empty, split)
    if a.max_samples:
        kept = kept[: a.max_samples]
    if not kept:
        raise DataError(
            f"no labelled sentences in split '{split}'", where=ds, fix="check the file and its format flags"
        )
    return kept, split, slug


def evaluate_main(argv: Optional[list[str]] = None) -> int:
    from .data import check_eval_labels
    from .metrics import confusion, label_distribution
    from .outputs import RUN_MARKER, atomic_write_json, atomic_write_text, epoch_table_text, write_epoch_outputs

    p = argparse.ArgumentParser(
        prog="tagtune evaluate",
        description="Score a trained model on a labelled set: the training evaluation's metrics and files.",
    )
    _model_args(p)
    p.add_argument(
        "--dataset", required=True, help="labelled file (.json/.jsonl, .conllu, .conll/.txt/.tsv) or hub dataset id"
    )
    p.add_argument("--dataset_config_name", default=None, help="hub dataset configuration name")
    p.add_argument(
        "--split", default="auto", help="hub split: auto = validation/dev/valid/test, or a name such as train"
    )
    p.add_argument(
        "--out", default=None, help="folder for the result files (default: <run dir>/eval/<dataset>-<split>)"
    )
    p.add_argument("--max_samples", type=int, default=None, help="score only the first N sentences")
    for name, kind in (
        ("data_format", str),
        ("words_field", str),
        ("labels_field", str),
        ("conllu_tag_column", str),
        ("conll_word_column", int),
        ("conll_tag_column", int),
    ):
        p.add_argument(f"--{name}", type=kind, default=None, help="as in training (default: the run's setting)")
    a = p.parse_args(argv)

    model_dir = find_model_dir(a.model)
    tt_cfg = _read_json(model_dir / CONFIG_FILE) if (model_dir / CONFIG_FILE).is_file() else {}
    sents, split, slug = _load_labelled(a, tt_cfg)
    labels_known = tt_cfg.get("labels")
    if labels_known:  # fail on unseen labels before the model loads
        check_eval_labels(labels_known, split, sents)
    out = Path(a.out) if a.out else (model_dir.parent if model_dir.name == "model" else model_dir) / "eval" / slug
    if (out / RUN_MARKER).exists():
        raise CheckpointError(
            "this folder holds a training run; its files would be overwritten",
            where=str(out),
            fix="choose another --out (the default is <run dir>/eval/<dataset>-<split>)",
        )
    tagger = _load_from_args(a)
    check_eval_labels(tagger.labels, split, sents)
    t0 = time.time()
    ev = evaluate_sentences(tagger, [s.words for s in sents], [s.tags for s in sents])
    secs = time.time() - t0
    row = {**ev.metrics, "eval_time_s": secs}
    flat_g = [t for s in ev.gold for t in s]
    flat_p = [t for s in ev.pred for t in s]
    write_epoch_outputs(str(out), [row])
    atomic_write_text(out / PREDICTIONS_FILE, predictions_jsonl(ev.words, ev.gold, ev.pred))
    atomic_write_json(
        out / "eval_results.json",
        {
            "model": str(model_dir),
            "dataset": a.dataset,
            "split": split,
            "eval_sentences": len(sents),
            "eval_words": len(flat_g),
            "labels": tagger.labels,
            "device": str(tagger.device),
            "final": {k: v for k, v in row.items() if k != "per_tag"},
            "label_distribution": {"eval": label_distribution(ev.gold)},
            "confusion_matrix": {"labels": tagger.labels, "matrix": confusion(flat_g, flat_p, tagger.labels).tolist()},
        },
    )
    print(epoch_table_text([row]))
    print(
        f"tagtune evaluate: {len(flat_g)} words in {len(sents)} sentences of '{split}': accuracy {row['accuracy']:.4f}, "
        f"macro F1 {row['macro_f1']:.4f}, eval loss {row['eval_loss']:.4f} -> {out}"
    )
    return 0


def export_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="tagtune export",
        description="Write a plain transformers model (LoRA adapters merged into the base weights).",
    )
    p.add_argument("--model", required=True, help="run directory or its model/ folder")
    p.add_argument(
        "--merge", action="store_true", help="merge a LoRA adapter into its base model (peft merge_and_unload)"
    )
    p.add_argument("--out", required=True, help="new folder for the exported model")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it already holds files")
    p.add_argument("--base_model", default=None, help="base model of a LoRA adapter, if it moved since training")
    a = p.parse_args(argv)

    out = Path(a.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not a.overwrite:
        raise CheckpointError(
            "output folder is not empty", where=str(out), fix="choose a new --out, or pass --overwrite"
        )
    src = find_model_dir(a.model)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise CheckpointError(
            "--out is the model folder itself (or inside it)", where=str(out), fix="choose a new folder"
        )
    tagger = Tagger.load(src, device="cpu", base_model=a.base_model)
    if tagger.is_adapter and not a.merge:
        raise ConfigError(
            "the model is a LoRA adapter; exporting a plain transformers model needs --merge",
            where="--merge",
            fix=f"tagtune export --model {a.model} --merge --out {a.out}",
        )
    if not tagger.is_adapter and a.merge:
        print("tagtune export: the model is already a full model; nothing to merge, writing a copy", file=sys.stderr)
    merged = tagger.merged()
    # written beside the target and renamed into place: an interrupted export leaves no half model
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the model folder should not be
    try:
        merged.save(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = sum(p.numel() for p in merged.model.parameters())
    print(
        f"tagtune export: {'merged adapter + base' if tagger.is_adapter else 'full model'} ({n:,} parameters, "
        f"{len(tagger.labels)} labels) -> {out}",
        file=sys.stderr,
    )
    return 0
