"""Dropout for CPU training whose keep-masks are drawn in bulk.

torch's CPU dropout draws one Mersenne Twister number per element, on one thread (its vectorised
MKL path is taken on Intel CPUs only): 11.6 ms for the 2.24M elements of one MiniLM batch's hidden
dropouts on this 2-core AMD machine, where the step is about 70 ms in bf16. numpy's PCG64 gives the
same number of random bits in bulk in under 2 ms, and ``keep_noise`` needs only a quarter of them.
``BulkDropout`` draws them there and keeps each element with probability 1 - p (exact to 2^-32); every
mask is seeded by one draw from torch's own generator, so torch's RNG state, which checkpoints save and
seeds set, still decides every mask.
The masks are distributed as torch's are, but they are not the same masks.

The attention probabilities' dropout runs inside ``scaled_dot_product_attention``, which with dropout on
CPU takes torch's math path: q, k and v cast to float32, the products, softmax, a ``bernoulli_`` mask.
``bulk_dropout_attention`` computes that same float32 math with a ``keep_noise`` mask instead.
``cpu_attention.attention``, registered in place of transformers' "sdpa" function, runs it for the modules of
a model that ``use_bulk_attention_dropout`` marked, in training, on CPU.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import numpy as np
import torch

MARK = "_tagtune_bulk_attention_dropout"  # on the modules of a model whose attention dropout is drawn in bulk


_INT_OF_WIDTH = {2: (torch.int16, np.int16), 4: (torch.int32, np.int32), 8: (torch.int64, np.int64)}


@functools.cache
def _noise_constants(p: float, dtype: torch.dtype) -> tuple[int, int, type, np.integer]:
    """``keep_noise``'s constants for (p, dtype): the 32-bit threshold's top byte and low 24 bits, and the
    numpy integer type of dtype's width with the bit pattern of 1 / (1 - p) in dtype. Cached: a model's
    dropout calls come with the same few pairs, 20 a step."""
    threshold = min(round(p * 2**32), 2**32 - 1)
    scale = torch.tensor(1.0 / (1.0 - p), dtype=dtype)
    torch_int, np_int = _INT_OF_WIDTH[scale.element_size()]
    return threshold >> 24, threshold & 0xFFFFFF, np_int, np_int(scale.view(torch_int).item())


def keep_noise(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of ``shape``: 1 / (1 - p) where an element is kept (probability 1 - p) and 0 where
    it is dropped, as torch's own dropout multiplies by. ``0 < p < 1``.

    An element is kept when a uniform 32-bit number is at least ``round(p * 2**32)``. Its top 8 bits decide
    for all but the 1 in 256 elements whose top byte equals the threshold's, so only those draw the other
    24: the same keep probability, from a quarter of the random bits. The noise is built as the scale's
    bit pattern times the keep bit, in numpy, which is faster than torch's ``where`` on a bool mask."""
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))  # advances torch's generator once
    bits = np.random.PCG64(seed)
    high, low, np_int, pattern = _noise_constants(p, dtype)  # pattern: the scale's bits; 0.0's are all zero
    top = bits.random_raw((n + 7) // 8).view(np.uint8)[:n]  # eight 8-bit lanes per draw
    noise = np.multiply(top > high, pattern, dtype=np_int)
    ties = np.flatnonzero(top == high)
    noise[ties] = np.where((bits.random_raw(ties.size) & 0xFFFFFF) >= low, pattern, 0)
    return torch.from_numpy(noise).view(dtype).view(shape)


class BulkDropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` with masks from ``keep_noise`` when training on CPU; elsewhere (evaluation,
    GPU, p of 0 or 1) exactly torch's. Autograd keeps the noise for the backward, as torch's CPU
    dropout does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and 0.0 < self.p < 1.0 and x.device.type == "cpu") or self.inplace:
            return super().forward(x)
        return x * keep_noise(x.shape, self.p, x.dtype)


def masked(scores: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """float32 attention scores with transformers' mask applied: a bool mask (True: attend) fills the rest
    with float32's minimum, a float mask is added."""
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        return scores.masked_fill(~attention_mask, torch.finfo(torch.float32).min)
    if attention_mask is not None:
        return scores + attention_mask.float()
    return scores


def bulk_dropout_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function interface ([batch, heads, length, head_dim] in, [batch, length,
    heads, head_dim] out), for the calls ``cpu_attention.bulk_applies`` accepts."""
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    with torch.autocast("cpu", enabled=False):  # float32 throughout, as torch's math path
        scores = masked(torch.matmul(query.float() * scale, key.float().transpose(-1, -2)), attention_mask)
        probs = torch.softmax(scores, dim=-1) * keep_noise(scores.shape, dropout, torch.float32)
        out = torch.matmul(probs, value.float()).to(query.dtype)
    return out.transpose(1, 2).contiguous(), None


def use_bulk_attention_dropout(model: torch.nn.Module) -> bool:
    """Mark the model's modules for ``bulk_dropout_attention`` (``cpu_attention.mark`` registers the
    function that dispatches to it); True when the model's attention is SDPA (otherwise nothing changes)."""
    from .cpu_attention import mark  # cpu_attention imports this module

    return mark(model, MARK)


def use_bulk_dropout(model: torch.nn.Module) -> int:
    """Replace every module of type exactly ``torch.nn.Dropout`` (not subclasses, which may do more) by
    a ``BulkDropout`` of the same p; returns how many were replaced. Dropout has no weights, so what
    the model saves is unchanged."""
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Dropout
    ]
    for parent, name, child in swaps:
        setattr(parent, name, BulkDropout(child.p))
    return len(swaps)
