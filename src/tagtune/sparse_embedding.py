"""The word-embedding gradient without a dense zero-fill every step (single-process CPU training).

A dense ``nn.Embedding`` backward allocates a zeroed gradient of the whole table every step and adds the
batch's rows into it: for MiniLM 30,522 x 384 floats, 45 MiB, of which a batch touches a few hundred
rows. On CPU the allocation and zero-fill cost more than the fused AdamW step over all 22.6M
parameters (the step profile). With ``sparse=True`` the backward gives only the touched rows;
``densify`` then writes them into one dense buffer kept across steps, after zeroing there only the
rows the previous step wrote. The optimizer and weight decay see the same dense gradient as before (equal
up to the order in which a row's contributions are summed), so training is the same. Clipping
(``clip_grad_norm_``) reads the table's gradient at those rows only: the norm and the scaling of the rest,
all zeros, were half of clipping's work (the table is 52% of MiniLM's parameters).

Only where nothing else reads the gradient between backward and ``densify``: one process, no DeepSpeed,
no ``torch.compile``, and a trainable ``nn.Embedding`` input table (not LoRA's frozen one).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

import torch


class SparseEmbeddingGrad:
    """Installed on a model's input embedding: its backward is sparse, and ``densify`` (after the last
    backward of an optimizer step, before clipping) turns the gradient into the kept dense buffer."""

    def __init__(self, embedding: torch.nn.Embedding):
        embedding.sparse = True
        self.weight = embedding.weight
        self.buffer = torch.zeros_like(self.weight)
        self.rows: Optional[torch.Tensor] = None  # the buffer's nonzero rows: the last densify's

    @classmethod
    def install(cls, model: torch.nn.Module) -> Optional[SparseEmbeddingGrad]:
        """On a model whose input embedding is a trainable plain ``nn.Embedding``; None otherwise."""
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        plain = type(emb) is torch.nn.Embedding and emb.max_norm is None and not emb.sparse
        if not plain or not emb.weight.requires_grad:
            return None
        return cls(emb)

    def densify(self) -> None:
        """The accumulated sparse gradient -> the dense buffer, as ``weight.grad`` (nothing to do when the
        gradient is absent or already dense)."""
        grad = self.weight.grad
        if grad is None or not grad.is_sparse:
            return
        grad = grad.coalesce()  # one entry per row, its contributions summed
        rows = grad.indices()[0]
        with torch.no_grad():
            if self.rows is not None:
                self.buffer.index_fill_(0, self.rows, 0.0)
            self.buffer.index_copy_(0, rows, grad.values())
        self.rows = rows
        self.weight.grad = self.buffer

    def clip_grad_norm_(self, parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """torch's ``clip_grad_norm_`` (2-norm, the same clipping coefficient) over ``parameters``, with this
        table's gradient read at the rows the last ``densify`` wrote: zero elsewhere, they add nothing to the
        norm, and scaling them changes nothing. Returns the total norm."""
        params = [p for p in parameters if p.grad is not None]
        if self.rows is None or self.weight.grad is not self.buffer:  # not densified this step
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        others = [p for p in params if p is not self.weight]
        written = self.buffer.index_select(0, self.rows)  # a copy of a few hundred rows
        total = torch.nn.utils.get_total_norm([p.grad for p in others] + [written], 2.0)
        torch.nn.utils.clip_grads_with_norm_(others, max_norm, total)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # clip_grads_with_norm_'s coefficient
        with torch.no_grad():
            self.buffer.index_copy_(0, self.rows, written.mul_(coef))
        return total
