"""A training batch run as several forward/backward passes of bounded size, with the gradient of one pass.

Activation memory grows with sentences × length (and attention's with length squared): in a
length-grouped epoch the batch of the longest sentences alone sets the run's peak memory, several
times that of a typical batch. Splitting only such batches along the sentence axis bounds the peak
and leaves every other batch untouched. The loss of each part is its summed token loss divided by
the whole batch's labelled-token count, so the accumulated gradient is the one-pass gradient
(dropout draws differ, as with any other batch layout).

Past ``attention_length`` padded sub-tokens a sentence's attention (heads x length x length scores,
probabilities and dropout masks per layer) outweighs its hidden states, so the budget counts such a
sentence as ``length x length / attention_length`` sub-tokens: the batches of long sentences run in
smaller parts, and the short and middling ones, most of an epoch, stay whole.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Optional

import torch

from .features import MODEL_INPUTS

if TYPE_CHECKING:
    from accelerate import Accelerator

# Padded sub-tokens per pass on CPU when the config leaves it to the trainer, in bf16. MiniLM on EWT:
# the longest batch (16 × ~200) peaks at ~1.6 GB of activations unsplit, ~0.3 GB at 1,024 (README, Performance).
# fp32 activations take twice the bytes, so fp32 runs half as many sub-tokens per pass: the same activation
# memory (the cpu preset in fp32: peak RSS 1,063 instead of 1,184 MiB, steps 2% slower).
CPU_DEFAULT_TOKENS = 1024


def resolve_micro_batch_tokens(requested: Optional[int], device_type: str, deepspeed: bool, precision: str) -> int:
    """The budget in padded sub-tokens per pass; 0 = never split.

    ``None`` (the default) splits on CPU only, by activation bytes: 1,024 sub-tokens in bf16, 512 in fp32
    (``precision`` is the run's resolved mixed precision). A GPU run is sized by its batch and memory, and
    smaller kernels cost it more than they save. DeepSpeed counts every backward as a micro-step of its own
    accumulation, so under it a batch is never split.
    """
    if deepspeed:
        return 0
    if requested is None:
        if device_type != "cpu":
            return 0
        return CPU_DEFAULT_TOKENS if precision == "bf16" else CPU_DEFAULT_TOKENS // 2
    return requested


def sentence_cost(length: int, attention_length: int) -> int:
    """What one padded sentence of ``length`` counts against the budget: its sub-tokens, or past
    ``attention_length`` (0 = never) ``length x length / attention_length``, attention's growth."""
    if attention_length <= 0 or length <= attention_length:
        return length
    return math.ceil(length * length / attention_length)


def split_batch(
    batch: dict[str, torch.Tensor], max_tokens: int, attention_length: int
) -> list[dict[str, torch.Tensor]]:
    """The batch as parts of at most ``max_tokens`` padded sub-tokens (at least one sentence each),
    as even as the sentence count allows: 16 × 48 under 512 runs as 8 + 8, not 10 + 6. Sentences
    longer than ``attention_length`` count as ``sentence_cost`` says."""
    rows, length = batch["input_ids"].shape
    cost = sentence_cost(length, attention_length)
    if max_tokens <= 0 or rows * cost <= max_tokens:
        return [batch]
    n_parts = math.ceil(rows / max(1, max_tokens // max(cost, 1)))
    bounds = [rows * i // n_parts for i in range(n_parts + 1)]
    return [{k: v[lo:hi] for k, v in batch.items()} for lo, hi in zip(bounds, bounds[1:])]


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over the labelled positions (label -100 is ignored)."""
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum"
    )


def forward_backward(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    max_tokens: int,
    accelerator: Accelerator,
    attention_length: int,
) -> torch.Tensor:
    """Backward of the batch's mean token loss, in parts of at most ``max_tokens`` padded sub-tokens
    (``split_batch``); returns that loss, detached."""
    parts = split_batch(batch, max_tokens, attention_length)
    labelled = (batch["labels"] != -100).sum().clamp(min=1)
    total = torch.zeros((), device=accelerator.device)
    for i, part in enumerate(parts):
        # under DDP, one all-reduce: after the last part's backward
        last = i == len(parts) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            logits = model(**{k: part[k] for k in MODEL_INPUTS}).logits
            loss = token_loss_sum(logits, part["labels"]) / labelled
            accelerator.backward(loss)
        total += loss.detach()
    return total
