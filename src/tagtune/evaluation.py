"""Evaluation of a model on a split: every word scored exactly once across processes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from .features import MODEL_INPUTS, Features
from .metrics import compute_metrics

if TYPE_CHECKING:
    from accelerate import Accelerator


@dataclass
class Scoring:
    """How predictions are decoded and scored: the run's tagging scheme, constrained decoding, and
    the split's own gold tags (with tags unseen in training, which the label ids cannot hold)."""

    scheme: str = "none"
    constrain_decoding: bool = False
    gold_tags: Optional[Sequence[Sequence[str]]] = None  # None: the gold label ids are the tags
    unseen_eval_labels: str = "error"


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    gold: list[list[str]]
    pred: list[list[str]]


@dataclass
class Positions:
    """Every scored position of a split from every process: rows (sentence, word, gold, predicted), each
    position's loss, and (for constrained decoding) its log-probabilities over the labels."""

    rows: np.ndarray
    losses: np.ndarray
    log_probs: Optional[np.ndarray]


def gather_positions(
    accelerator: Accelerator, model: torch.nn.Module, loader: Any, log_probs: bool = False
) -> Positions:
    """The forward passes of an evaluation (the model in eval mode, then back in training mode), gathered
    from every process.

    Every position stays on the device, flattened, until the split is done: no host sync, no
    collective per batch (one pad + gather at the end). inference_mode, except under DeepSpeed, whose
    ZeRO-3 hooks would re-gather weights as inference tensors that training cannot use.
    """
    model.eval()
    try:
        return _gather(accelerator, model, loader, log_probs)
    finally:
        model.train()


def _gather(accelerator: Accelerator, model: torch.nn.Module, loader: Any, log_probs: bool) -> Positions:
    from accelerate.utils import DistributedType

    rows, losses, lps = [], [], []
    off = torch.no_grad() if accelerator.distributed_type == DistributedType.DEEPSPEED else torch.inference_mode()
    with off:
        for batch in loader:  # this process's own batches (train.make_eval_loader), still on the host
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            logits = model(**{k: batch[k] for k in MODEL_INPUTS}).logits
            word_ids = batch["word_ids"]
            gold = torch.where(word_ids >= 0, batch["labels"], -100)
            tok_loss = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), gold, ignore_index=-100, reduction="none"
            )
            sent = batch["sent_ids"][:, None].expand_as(word_ids)
            rows.append(torch.stack([sent, word_ids, gold, logits.argmax(-1)], dim=-1).flatten(0, 1))
            losses.append(tok_loss.flatten())
            if log_probs:
                lps.append(torch.log_softmax(logits.float(), dim=-1).flatten(0, 1))
        ints = torch.cat(rows) if rows else torch.zeros((0, 4), dtype=torch.long, device=accelerator.device)
        tok_loss = torch.cat(losses) if losses else torch.zeros(0, device=accelerator.device)
        lp = torch.cat(lps) if lps else None
        if accelerator.num_processes > 1:
            ints = accelerator.pad_across_processes(ints, dim=0, pad_index=-1)
            tok_loss = accelerator.pad_across_processes(tok_loss, dim=0, pad_index=0.0)
            ints, tok_loss = accelerator.gather((ints, tok_loss))
            if lp is not None:
                lp = accelerator.gather(accelerator.pad_across_processes(lp, dim=0, pad_index=0.0))
        keep = ints[:, 1] >= 0
        lp_out = lp[keep].cpu().numpy() if lp is not None else None
        return Positions(ints[keep].cpu().numpy(), tok_loss[keep].float().cpu().numpy(), lp_out)


def _unique_in_order(rows: np.ndarray) -> np.ndarray:
    """Indices of the first row of each (sentence, word) key, in sentence then word order.

    Keys are unique per split; a window repeated to even out the last batch across processes
    comes back twice from the gather and is dropped here.
    """
    keys = rows[:, :2]
    _, first = np.unique(keys, axis=0, return_index=True)
    return first[np.lexsort((keys[first, 1], keys[first, 0]))]


def _sentences(sent_ids: np.ndarray, ids: np.ndarray, labels: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    last = -1
    for sid, i in zip(sent_ids, ids):
        if sid != last:
            out.append([])
            last = sid
        out[-1].append(labels[i])
    return out


def constrains(scoring: Scoring) -> bool:
    """Whether the predictions are decoded under the span scheme's constraints (log-probabilities needed)."""
    return scoring.constrain_decoding and scoring.scheme != "none"


def score(positions: Positions, features: Features, labels: list[str], scoring: Scoring) -> EvalResult:
    """The metrics of gathered positions: every word of ``features`` scored exactly once, in sentence order.

    With ``scoring.constrain_decoding`` the predictions are the best valid span sequences
    (Viterbi, ``decoding.constrained_decode``); the argmax's entity F1 is kept beside them as
    ``entity_f1_unconstrained``.
    """
    constrain = constrains(scoring)
    rows, losses, lp = positions.rows, positions.losses, positions.log_probs
    order = _unique_in_order(rows)
    if len(order) != features.num_words:
        raise RuntimeError(f"evaluation scored {len(order)} words but the split has {features.num_words}")
    rows, losses = rows[order], losses[order]
    gold = _sentences(rows[:, 0], rows[:, 2], labels)
    if scoring.gold_tags is not None:  # the split's own tags, unseen ones included
        gold = [list(g) for g in scoring.gold_tags]
    pred = _sentences(rows[:, 0], rows[:, 3], labels)
    kw = dict(scheme=scoring.scheme, known_labels=labels, unseen_eval_labels=scoring.unseen_eval_labels)
    extra: dict[str, Any] = {}
    if constrain:
        from .decoding import constrained_decode

        argmax = compute_metrics(gold, pred, **kw)
        extra = {f"{k}_unconstrained": argmax[k] for k in ("entity_f1", "entity_precision", "entity_recall")}
        cut = np.flatnonzero(np.diff(rows[:, 0])) + 1
        pred = constrained_decode(np.split(lp[order], cut), labels, scoring.scheme, logits=False)
    metrics = compute_metrics(gold, pred, **kw)
    metrics.update(extra)
    metrics["constrained_decoding"] = constrain
    metrics["eval_loss"] = float(losses.mean()) if len(losses) else float("nan")
    return EvalResult(metrics, gold, pred)
