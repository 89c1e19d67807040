"""The sparse input-embedding gradient: the dense gradient it hands the optimizer equals the dense
backward's, step after step (rows of the previous step zeroed, micro-batches and accumulation summed),
training follows the same trajectory, and the trainer uses it only where nothing else reads gradients."""

import pytest
import torch
from conftest import smoke_config

from tagtune.sparse_embedding import SparseEmbeddingGrad


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.out = torch.nn.Linear(8, 3)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, ids):
        return self.out(torch.tanh(self.emb(ids))).sum()


def _grads(model, batches, sparse):
    """Per optimizer step (a list of micro-batches each): the embedding's gradient as the optimizer sees it."""
    out = []
    for parts in batches:
        for ids in parts:
            model(ids).backward()
        if sparse:
            sparse.densify()
        assert not model.emb.weight.grad.is_sparse
        out.append(model.emb.weight.grad.clone())
        model.zero_grad(set_to_none=True)
    return out


def test_densified_gradient_equals_the_dense_backward():
    torch.manual_seed(0)
    dense, sparse_model = Tiny(), Tiny()
    sparse_model.load_state_dict(dense.state_dict())
    sparse = SparseEmbeddingGrad.install(sparse_model)
    assert sparse is not None and sparse_model.emb.sparse
    # steps touching different rows (so stale rows would show), repeated ids, two micro-batches in one step
    batches = [
        [torch.tensor([[1, 2, 2, 3]])],
        [torch.tensor([[4, 5]]), torch.tensor([[5, 6, 1]])],
        [torch.tensor([[7, 7, 7]])],
    ]
    for got, want in zip(_grads(sparse_model, batches, sparse), _grads(dense, batches, None), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert set(got.abs().sum(1).nonzero().flatten().tolist()) == set(
            want.abs().sum(1).nonzero().flatten().tolist()
        )


def test_same_training_trajectory_with_adamw():
    torch.manual_seed(1)
    a, b = Tiny(), Tiny()
    b.load_state_dict(a.state_dict())
    sparse = SparseEmbeddingGrad.install(b)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.01) for m in (a, b)]
    for _ in range(20):
        ids = torch.randint(0, 50, (2, 5))
        for m, opt in zip((a, b), opts):
            m(ids).backward()
            if m is b:  # as the trainer does: densify, then clip at the touched rows
                sparse.densify()
                sparse.clip_grad_norm_(m.parameters(), 0.5)
            else:
                torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            opt.step()
            opt.zero_grad(set_to_none=True)
    torch.testing.assert_close(a.emb.weight, b.emb.weight, rtol=0, atol=1e-5)


@pytest.mark.parametrize("max_norm", [0.05, 1e6])  # clipping, and a norm far under the limit (factor 1)
def test_clipping_at_the_touched_rows_equals_torchs(max_norm):
    torch.manual_seed(2)
    dense, sparse_model = Tiny(), Tiny()
    sparse_model.load_state_dict(dense.state_dict())
    sparse = SparseEmbeddingGrad.install(sparse_model)
    for ids in (torch.tensor([[1, 2, 2, 3]]), torch.tensor([[4, 9, 9]])):  # the second step's rows differ
        dense(ids).backward()
        sparse_model(ids).backward()
        sparse.densify()
        want = torch.nn.utils.clip_grad_norm_(dense.parameters(), max_norm)
        got = sparse.clip_grad_norm_(sparse_model.parameters(), max_norm)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
        assert (got > max_norm) == (max_norm < 1)
        for p, q in zip(sparse_model.parameters(), dense.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)
        assert torch.linalg.vector_norm(sparse_model.emb.weight.grad) > 0
        dense.zero_grad(set_to_none=True)
        sparse_model.zero_grad(set_to_none=True)
    # a gradient that densify did not write (none this step): torch's own clipping, whatever is there
    sparse_model.emb.weight.grad = torch.ones_like(sparse_model.emb.weight)
    sparse_model.out.weight.grad = torch.zeros_like(sparse_model.out.weight)
    assert sparse.clip_grad_norm_(sparse_model.parameters(), 1e6).item() == pytest.approx(20.0)  # sqrt(50 x 8)


def test_only_trainable_plain_embeddings():
    m = Tiny()
    m.emb.weight.requires_grad_(False)  # LoRA's frozen base
    assert SparseEmbeddingGrad.install(m) is None
    m = Tiny()
    m.emb = torch.nn.Embedding(50, 8, max_norm=1.0)  # renormalises in the forward: left alone
    assert SparseEmbeddingGrad.install(m) is None


@pytest.mark.parametrize("on", [True, False])
def test_trainer_uses_it_on_one_cpu_process_unless_told_not_to(tmp_path, on, caplog):
    from tagtune.train import TrainingRecipe

    recipe = TrainingRecipe(smoke_config(tmp_path, max_steps=3, cpu_sparse_embedding_grad=on))
    try:
        recipe.setup()
        recipe.train()
        emb = recipe.model.get_input_embeddings()
        assert emb.sparse is on
        assert (recipe.sparse_grad is not None) is on
        if on:  # three steps' rows were written and the last step's are the buffer's nonzero rows
            nonzero = set(recipe.sparse_grad.buffer.abs().sum(1).nonzero().flatten().tolist())
            assert nonzero == set(recipe.sparse_grad.rows.tolist()) and nonzero
    finally:
        recipe.cleanup()
    assert ("sparse backward into one kept dense gradient" in caplog.text) is on
