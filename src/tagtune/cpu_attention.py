"""The attention function tagtune registers for SDPA models, and bfloat16 attention for short batches on CPU.

transformers calls one function per attention implementation; tagtune registers ``attention`` in place of its
"sdpa" one. ``attention`` picks, per call, among three computations:

- training on CPU in a model whose dropout is drawn in bulk: ``cpu_dropout.bulk_dropout_attention``;
- inference on CPU in bfloat16, padded length at most ``HALF_MATMUL_MAX_LENGTH``, in a model tagtune runs:
  ``half_matmul_attention``;
- every other call, other models' included: transformers' own SDPA function, unchanged.

Why the second: torch's CPU flash kernel pays a cost per (sentence, head) that short sequences do not amortise
in bfloat16. For evaluation-batch shapes (about 2,048 padded sub-tokens, or 16 and 32 sentences; MiniLM's 12
heads of 32) on the 2-core AMD machine, q·kᵀ and p·v as two bfloat16 matmuls with the softmax in float32 were
1.27–2.64x as fast as the flash kernel at every padded length up to 48; from 56 on neither was consistently
faster (at 16 × 128 the flash kernel was 2.5x as fast; ``tests/bench/short_attention.py`` prints both). On EWT
dev, bf16 evaluation through the launch path was 1.07x as fast and ``tagtune predict --dtype bfloat16`` 1.09x
(docs/performance.md). The scores are rounded to bfloat16 before the softmax, as in transformers' eager
attention; the flash kernel keeps them in float32. In float32 nothing changes: there the flash kernel is as
fast, and float32 tags stay identical to the pipeline's.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from . import cpu_dropout

MARK = "_tagtune_half_matmul_attention"  # on the modules of a model tagtune trains, evaluates or predicts with
HALF_MATMUL_MAX_LENGTH = 48  # padded sub-tokens; the flash kernel wins from about 56 on (module docstring)


def _plain_self_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, kw: dict) -> bool:
    """Bidirectional, as many key heads as query heads, none of the extras some models pass."""
    return (
        query.shape[1] == key.shape[1]
        and not kw.get("is_causal", getattr(module, "is_causal", False))
        and all(kw.get(k) is None for k in ("position_bias", "softcap", "sliding_window", "s_aux"))
    )


def bulk_applies(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, dropout: float, kw: dict) -> bool:
    """Dropout, training on CPU, in a model whose dropout masks are drawn in bulk."""
    return (
        getattr(module, cpu_dropout.MARK, False)
        and module.training
        and 0.0 < dropout < 1.0
        and query.device.type == "cpu"
        and _plain_self_attention(module, query, key, kw)
    )


def half_matmul_applies(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, kw: dict) -> bool:
    """Inference, bfloat16 on CPU, padded length at most HALF_MATMUL_MAX_LENGTH, in a marked model."""
    return (
        getattr(module, MARK, False)
        and not module.training
        and query.device.type == "cpu"
        and query.dtype == torch.bfloat16
        and key.shape[2] <= HALF_MATMUL_MAX_LENGTH
        and _plain_self_attention(module, query, key, kw)
    )


def half_matmul_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Optional[torch.Tensor], scale: float
) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v with both products in the inputs' dtype and the softmax in float32;
    [batch, heads, length, head_dim] in, [batch, length, heads, head_dim] out (transformers' layout)."""
    scores = cpu_dropout.masked(torch.matmul(query, key.transpose(-1, -2)).float() * scale, attention_mask)
    probs = torch.softmax(scores, dim=-1).to(query.dtype)
    return torch.matmul(probs, value).transpose(1, 2).contiguous()


def attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function interface; see the module's docstring for which computation runs."""
    if bulk_applies(module, query, key, dropout, kwargs):
        return cpu_dropout.bulk_dropout_attention(module, query, key, value, attention_mask, dropout, scaling)
    if half_matmul_applies(module, query, key, kwargs):
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        return half_matmul_attention(query, key, value, attention_mask, scale), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)


def mark(model: torch.nn.Module, mark_name: str) -> bool:
    """Register ``attention`` as transformers' "sdpa" function (process-wide; unmarked modules get SDPA
    unchanged) and set ``mark_name`` on the model's modules. False, and nothing marked, when the model's
    attention is not SDPA (eager, DeBERTa's own)."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register("sdpa", attention)
    for m in model.modules():
        setattr(m, mark_name, True)
    return True


def use_half_matmul_attention(model: torch.nn.Module) -> bool:
    """bfloat16 attention as two matmuls for this model's short batches at inference on CPU (module docstring);
    True when the model's attention is SDPA."""
    return mark(model, MARK)
