"""Dropout for CPU training whose keep-masks are drawn in bulk.

torch's CPU dropout draws one Mersenne Twister number per element, on one thread (its vectorised
MKL path is taken on Intel CPUs only): 11.6 ms for the 2.24M elements of one MiniLM batch's hidden
dropouts on this 2-core AMD machine, where the step is about 70 ms in bf16. numpy's PCG64 gives the
same number of random bits in bulk in under 2 ms. ``BulkDropout`` draws them there and keeps each
element with probability 1 - p (exact to 2^-32); every mask is seeded by one draw from torch's own
generator, so torch's RNG state, which checkpoints save and seeds set, still decides every mask.
The masks are distributed as torch's are, but they are not the same masks.

The attention probabilities' dropout runs inside ``scaled_dot_product_attention`` and stays torch's.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def keep_noise(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of ``shape``: 1 / (1 - p) where an element is kept (probability 1 - p) and 0 where
    it is dropped, as torch's own dropout multiplies by. ``0 < p < 1``."""
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))  # advances torch's generator once
    lanes = np.random.PCG64(seed).random_raw((n + 1) // 2).view(np.uint32)[:n]  # two 32-bit lanes per draw
    keep = torch.from_numpy(lanes >= np.uint32(min(round(p * 2**32), 2**32 - 1))).view(shape)
    return torch.where(keep, torch.tensor(1.0 / (1.0 - p), dtype=dtype), torch.tensor(0.0, dtype=dtype))


class BulkDropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` with masks from ``keep_noise`` when training on CPU; elsewhere (evaluation,
    GPU, p of 0 or 1) exactly torch's. Autograd keeps the noise for the backward, as torch's CPU
    dropout does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and 0.0 < self.p < 1.0 and x.device.type == "cpu") or self.inplace:
            return super().forward(x)
        return x * keep_noise(x.shape, self.p, x.dtype)


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
