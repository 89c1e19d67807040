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
            if m is b:
                sparse.densify()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            opt.step()
            opt.zero_grad(set_to_none=True)
    torch.testing.assert_close(a.emb.weight, b.emb.weight, rtol=0, atol=1e-5)


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
