"""AdamW with the usual no-decay groups, and the learning-rate schedule."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch

logger = logging.getLogger("tagtune")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation weights (any 1-D parameter)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        ndim = len(getattr(p, "ds_shape", p.shape))  # ZeRO-3 init leaves every weight an empty 1-D shard
        norm = name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name
        (no_decay if ndim < 2 or norm else decay).append(p)
    groups = ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
    # DeepSpeed drops empty groups, which would leave the LR schedule with one group too many
    return [g for g in groups if g["params"]]


def make_optimizer(
    model: torch.nn.Module,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    implementation: str = "adamw_torch_fused",
    loss_scaling: bool = False,
) -> torch.optim.Optimizer:
    """torch AdamW, fused (one pass over each parameter, CUDA and CPU) or foreach.

    Fused is ~4x faster than foreach for MiniLM on 2 CPU cores (README "Performance"). Under fp16
    loss scaling a fused AdamW takes the inf check inside its own step, so Accelerate never sees a
    skipped step and its scheduler would still advance the learning rate: foreach there.
    """
    fused = implementation == "adamw_torch_fused" and not loss_scaling
    if implementation == "adamw_torch_fused" and loss_scaling:
        logger.info("fp16 loss scaling: foreach AdamW, so that steps skipped on overflow are seen by the schedule")
    kind = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, **kind)


def takes_clip_in_step(optimizer: torch.optim.Optimizer) -> bool:
    """Whether gradient clipping can ride on this optimizer's step (``clip_in_step``): a fused torch
    AdamW, which divides each gradient by its ``grad_scale`` inside its own pass over the parameter."""
    return isinstance(optimizer, torch.optim.AdamW) and bool(optimizer.defaults.get("fused"))


def clip_in_step(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Gradient clipping as ``clip_grad_norm_`` does it, with the rescaling left to the next step.

    ``clip_grad_norm_`` multiplies every gradient by min(1, max_norm / (norm + 1e-6)) in a pass of its
    own over all of them, which then the optimizer reads again. Here the step divides by the inverse,
    ``grad_scale``, as it reads each gradient (the hook torch's GradScaler uses): the same update up
    to rounding, one pass over the gradients fewer (MiniLM, bf16 on 2 CPU cores: 5% of a step).
    Returns the total norm before clipping, as ``clip_grad_norm_`` does. The step after this one must
    call ``end_clip_in_step``.
    """
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0).to(torch.float32)
    return norm


def end_clip_in_step(optimizer: torch.optim.Optimizer) -> None:
    """Forget ``clip_in_step``'s scale, so that no later step divides by it."""
    optimizer.grad_scale = None
