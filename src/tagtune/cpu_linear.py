"""Linear layers at inference on CPU through oneDNN, each weight packed once instead of at every call.

torch runs a float32 ``nn.Linear`` on CPU as MKL's sgemm, which packs the weight into its kernel's blocked
layout again at every call, and a bfloat16 one (autocast's, or a bfloat16 model's) through oneDNN, which
reorders it at every call too. ``torch.ops.mkldnn._reorder_linear_weight`` packs a weight once into oneDNN's
layout and ``torch.ops.mkldnn._linear_pointwise`` multiplies by it (the pair torch's inductor uses for frozen
CPU models). On the 2-core AMD (Zen 4) machine, MiniLM's layer shapes (700 or 2,048 rows of 384 -> 1,536,
1,536 -> 384 and 384 -> 384) ran 1.11-1.30x as fast in float32 as torch's ``F.linear``; a ``Tagger`` pass
over EWT dev was 1.17x as fast in float32 and 1.11x in bfloat16, with every tag the same (docs/performance.md).
The float32 products differ from sgemm's in the last bits (about 3e-6 at these sizes), as any two GEMM
kernels' do.

A packed copy is stale once the weights change, so ``pack`` is for weights that stay put: the ``Tagger`` packs
at load (and packs the merged weights after merging an adapter), and training's evaluation packs at its start
and unpacks at its end (``packed``). A packed layer called with autograd on (or off CPU) runs
``nn.Linear``'s own forward on its live weights instead. The packed copies are memory beside the weights:
as many bytes as the linear weights in the packed dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Optional

import torch


class PackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose inference runs on ``packed``, its weight (and bias) in one dtype packed for
    oneDNN. Made only by ``pack`` (which swaps the class of a live ``nn.Linear``) and undone by ``unpack``."""

    packed: tuple[torch.Tensor, Optional[torch.Tensor], torch.dtype]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return super().forward(x)  # autograd needs the live weights; the packed copy has no gradient
        weight, bias, dtype = self.packed
        return torch.ops.mkldnn._linear_pointwise(x.to(dtype), weight, bias, "none", [], "")


def supported(dtype: torch.dtype) -> bool:
    """Whether this torch build and CPU can run packed linears in ``dtype`` (float32, or bfloat16 where the CPU
    has native bf16: oneDNN emulates it elsewhere, slower than what it would replace)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight  # noqa: B018 (the ops exist)
    except (AttributeError, RuntimeError):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def pack(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Pack the weight of every CPU module of type exactly ``nn.Linear`` (subclasses may do more) in ``dtype``
    and route its inference through it; returns how many were packed (0 where ``supported`` is False)."""
    if not supported(dtype):
        return 0
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.device.type == "cpu"]
    with torch.no_grad():
        for m in layers:
            weight = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach().to(dtype), None)
            bias = None if m.bias is None else m.bias.detach().to(dtype)
            m.__class__ = PackedLinear
            m.packed = (weight, bias, dtype)
    return len(layers)


def unpack(model: torch.nn.Module) -> int:
    """Make every ``PackedLinear`` a plain ``nn.Linear`` again, its packed copy freed; returns how many."""
    layers = [m for m in model.modules() if type(m) is PackedLinear]
    for m in layers:
        del m.packed
        m.__class__ = torch.nn.Linear
    return len(layers)


@contextlib.contextmanager
def packed(model: torch.nn.Module, dtype: Optional[torch.dtype]) -> Iterator[int]:
    """``pack`` for the block (nothing where ``dtype`` is None), ``unpack`` after it, however it ends."""
    try:
        yield pack(model, dtype) if dtype is not None else 0
    finally:
        if dtype is not None:
            unpack(model)
