"""The ``Tagger`` API: a trained model folder -> tags for pre-split sentences.

A model is a run directory's ``model/`` folder (or the run directory itself): a full
transformers model, or a peft LoRA adapter that is loaded onto its base model. Inference uses
the training feature code (``features.build_features``), so sub-word alignment and the window
rule for long sentences are the training ones: every word gets exactly one tag, from its
first sub-token in the window that owns it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from . import cpu_linear
from .cpu_attention import use_half_matmul_attention
from .errors import CheckpointError, ConfigError, DataError, TagtuneError
from .modeling import quiet_transformers

CONFIG_FILE = "tagtune_config.json"  # written with the model: resolved TrainConfig + labels
ADAPTER_FILE = "adapter_config.json"  # peft adapter


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


def read_model_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read {path.name}: {err}",
            where=str(path),
            fix="the model folder is damaged; re-save or re-train it",
        ) from None


def resolve_device(device: Optional[str]) -> torch.device:
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

    adapter = read_model_json(model_dir / ADAPTER_FILE)
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


def _load_adapter(model_dir: Path, tt_cfg: dict[str, Any], base_model: Optional[str]) -> tuple[Any, list[str]]:
    """An adapter onto its base model (see _pick_base), with the label list its training recorded."""
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
    with quiet_transformers(report=False):
        model = load_base_model(
            base,
            labels,
            trust_remote_code=bool(tt_cfg.get("trust_remote_code", False)),
            attn_implementation=tt_cfg.get("attn_implementation", "sdpa"),
        )
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        return PeftModel.from_pretrained(model, str(model_dir)), list(labels)


def _load_full(model_dir: Path, tt_cfg: dict[str, Any]) -> tuple[Any, list[str]]:
    """A full model folder; its config.json's label map must agree with the one tagtune recorded."""
    from transformers import AutoModelForTokenClassification

    from .modeling import attention_for

    remote = bool(tt_cfg.get("trust_remote_code", False))
    attn = attention_for(str(model_dir), tt_cfg.get("attn_implementation", "sdpa"), remote)  # DeBERTa: eager
    with quiet_transformers():
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
    return model, labels


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
    batch_tokens: int = 0  # > 0: batches of at most this many padded sub-tokens instead of batch_size windows
    batch_cuts: bool = True  # with batch_tokens: cut where the fewest positions are computed (eval_batch_cuts)
    packed_linear: bool = False  # the Linear layers run on weights packed for oneDNN (cpu_linear; CPU only)
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
        batch_tokens: Optional[int] = None,
        max_length: Optional[int] = None,
        stride: Optional[int] = None,
        base_model: Optional[str] = None,
        packed_linear: Optional[bool] = None,
    ) -> Tagger:
        """Load a run directory or model folder: a full model, or an adapter onto its base model.

        ``batch_size``, ``batch_tokens``, ``max_length`` and ``stride`` default to the training run's
        evaluation settings, so predictions match the training evaluation exactly. A ``batch_size`` given
        without ``batch_tokens`` means batches of that many windows. ``packed_linear`` (CPU only) runs the
        Linear layers on weights packed once for oneDNN (``cpu_linear``); None: as the run evaluated
        (``cpu_packed_linear``), and on for a model folder that is not a tagtune run's.
        """
        from .features import load_tokenizer, resolve_eval_batch_tokens

        model_dir = find_model_dir(path)
        tt_cfg = read_model_json(model_dir / CONFIG_FILE) if (model_dir / CONFIG_FILE).is_file() else {}
        is_adapter = (model_dir / ADAPTER_FILE).is_file()
        dev = resolve_device(device)
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}", where="--dtype", fix=f"choose one of {list(DTYPES)}")
        try:
            if is_adapter:
                model, labels = _load_adapter(model_dir, tt_cfg, base_model)
            else:
                model, labels = _load_full(model_dir, tt_cfg)
            tokenizer = load_tokenizer(str(model_dir), bool(tt_cfg.get("trust_remote_code", False)))
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
        if dev.type == "cpu" and tt_cfg.get("cpu_half_matmul_attention", True):  # as the run evaluated
            use_half_matmul_attention(model)
        if packed_linear is None:  # as the run evaluated: runs saved before cpu_packed_linear existed did not pack
            packed_linear = bool(tt_cfg.get("cpu_packed_linear", not tt_cfg))
        packed_linear = dev.type == "cpu" and packed_linear and cpu_linear.pack(model, DTYPES[dtype]) > 0
        if batch_tokens is None:  # the run's; a batch_size given alone asks for batches of that many windows
            run_tokens = tt_cfg.get("per_device_eval_batch_tokens")
            batch_tokens = 0 if batch_size else resolve_eval_batch_tokens(run_tokens, dev.type)
        return cls(
            model=model,
            tokenizer=tokenizer,
            labels=list(labels),
            max_length=max_length if max_length is not None else tt_cfg.get("max_length"),
            stride=stride if stride is not None else int(tt_cfg.get("stride", 32)),
            batch_size=batch_size or int(tt_cfg.get("per_device_eval_batch_size", 32)),
            batch_tokens=batch_tokens,
            # as the run evaluated: runs saved before eval_batch_cuts existed filled each batch (a plain model folder: cuts)
            batch_cuts=bool(tt_cfg.get("eval_batch_cuts", not tt_cfg)),
            packed_linear=packed_linear,
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
        from .features import Collator, build_features, eval_batches

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
            # the training evaluation's batches: same padding, same numbers
            batches = eval_batches(feats.lengths, self.batch_size, self.batch_tokens, cut=self.batch_cuts)
            collate = Collator(feats, self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
            dev = self.device
            with torch.inference_mode():
                for windows in batches:
                    batch = collate(windows)
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
        cpu_linear.unpack(self.model)  # merging changes the base weights: their packed copies would be stale
        model = self.model.merge_and_unload()
        if self.packed_linear:
            cpu_linear.pack(model, next(model.parameters()).dtype)
        return Tagger(
            model=model,
            tokenizer=self.tokenizer,
            labels=self.labels,
            max_length=self.max_length,
            stride=self.stride,
            batch_size=self.batch_size,
            batch_tokens=self.batch_tokens,
            batch_cuts=self.batch_cuts,
            packed_linear=self.packed_linear,
            model_dir=self.model_dir,
            is_adapter=False,
            train_config=self.train_config,
        )

    def save(self, out: str | os.PathLike) -> None:
        """save_pretrained (safetensors) + tokenizer + tagtune_config.json into ``out``."""
        from .outputs import atomic_write_json

        out = Path(out)
        with quiet_transformers():
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
            fix="split raw text first, e.g. tagtune.text.split_text(text), and pass the result",
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
    # the run's tagging scheme (entity F1 primary for span tags), as the training evaluation scored it
    metrics = compute_metrics(gold, pred, scheme=tagger.train_config.get("tagging_scheme"))
    nll = np.concatenate(run.nll) if run.nll else np.zeros(0)
    metrics["eval_loss"] = float(nll.mean()) if len(nll) else float("nan")
    return Evaluation(metrics, words, gold, pred)
