"""Bulk dropout masks: the keep probability, the scale, the gradient, and torch's generator deciding
every mask (so seeds and checkpoints still do); and the trainer using them on CPU unless told not to."""

import math

import pytest
import torch
from conftest import smoke_config, tiny_sdpa_batch, tiny_sdpa_bert

from tagtune.cpu_dropout import BulkDropout, keep_noise, use_bulk_dropout


def test_keep_probability_and_scale():
    noise = keep_noise(torch.Size([1000, 1000]), 0.1, torch.float32)
    kept = (noise != 0).float().mean().item()
    assert abs(kept - 0.9) < 5 * (0.9 * 0.1 / 1e6) ** 0.5  # five standard deviations
    assert noise.unique().tolist() == [0.0, pytest.approx(1 / 0.9)]
    assert keep_noise(torch.Size([7, 3]), 0.5, torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("p", [0.1, 0.5 + 1 / 512])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keep_probability_is_the_32_bit_threshold_not_its_top_byte(p, dtype):
    """keep_noise reads 8 random bits per element and 24 more only where the top byte ties the threshold's:
    the keep rate must be 1 - p, not what the top byte alone gives (1 - ceil(256 p) / 256 if ties were
    dropped, 1 - floor(256 p) / 256 if kept), each more than five standard deviations away at 4M elements."""
    n = 4_000_000
    torch.manual_seed(0)  # the same masks every run: the bounds below are five sigma, not a coin
    noise = keep_noise(torch.Size([n]), p, dtype)
    kept = (noise != 0).double().mean().item()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(kept - (1 - p)) < 5 * sigma, (kept, 1 - p)
    for top_byte_only in (1 - math.ceil(256 * p) / 256, 1 - math.floor(256 * p) / 256):
        assert abs(kept - top_byte_only) > 5 * sigma
    assert noise.unique().tolist() == [0.0, torch.tensor(1 / (1 - p), dtype=dtype).item()]


def test_torch_generator_decides_every_mask():
    state = torch.get_rng_state()
    first = keep_noise(torch.Size([64, 384]), 0.1, torch.float32)
    second = keep_noise(torch.Size([64, 384]), 0.1, torch.float32)
    assert not torch.equal(first, second)  # a new mask each call
    torch.set_rng_state(state)  # what resuming from a checkpoint does
    assert torch.equal(keep_noise(torch.Size([64, 384]), 0.1, torch.float32), first)
    torch.manual_seed(3)
    a = keep_noise(torch.Size([10, 10]), 0.1, torch.float32)
    torch.manual_seed(3)
    assert torch.equal(keep_noise(torch.Size([10, 10]), 0.1, torch.float32), a)


def test_forward_backward_and_evaluation():
    drop = BulkDropout(0.25)
    x = torch.randn(200, 50, requires_grad=True)
    y = drop(x)
    dropped = y == 0
    assert 0.15 < dropped.float().mean().item() < 0.35
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.75)
    y.sum().backward()
    expected = torch.where(dropped, 0.0, 1 / 0.75)
    torch.testing.assert_close(x.grad, expected)
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(BulkDropout(0.0).train()(x), x)


def test_only_plain_dropout_layers_are_replaced():
    class Other(torch.nn.Dropout):  # a subclass may do more than drop: left alone
        pass

    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4),
        torch.nn.Dropout(0.1),
        torch.nn.ModuleDict({"a": torch.nn.Dropout(0.2), "b": Other(0.3)}),
        torch.nn.ModuleList([torch.nn.Dropout(0.4)]),
    )
    keys = list(model.state_dict())
    assert use_bulk_dropout(model) == 3
    assert [type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [
        "BulkDropout",
        "BulkDropout",
        "Other",
        "BulkDropout",
    ]
    assert [m.p for m in model.modules() if isinstance(m, BulkDropout)] == [0.1, 0.2, 0.4]
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("bulk, compile", [(True, False), (False, False), (True, True)])
def test_trainer_uses_bulk_dropout_on_cpu_unless_told_not_to(tmp_path, bulk, compile, caplog):
    """Off when asked, and under torch_compile (numpy inside a compiled graph would break it)."""
    from tagtune.train import TrainingRecipe

    recipe = TrainingRecipe(smoke_config(tmp_path, max_steps=1, cpu_bulk_dropout=bulk, torch_compile=compile))
    try:
        recipe.setup()
        kinds = {type(m).__name__ for m in recipe.model.modules() if isinstance(m, torch.nn.Dropout)}
    finally:
        recipe.cleanup()
    used = bulk and not compile
    assert kinds == ({"BulkDropout"} if used else {"Dropout"})
    assert ("masks drawn in bulk" in caplog.text) is used
    assert ("and the attention probabilities'" in caplog.text) is used


def test_attention_dropout_is_the_math_path_with_a_bulk_mask(monkeypatch):
    """With a mask of all ones the attention equals SDPA without dropout; with a real mask, exactly the
    float32 math (softmax(q k^T * scale + mask) * noise) v, the noise being keep_noise's from torch's RNG."""
    import tagtune.cpu_dropout as cd

    q, k, v = (torch.randn(2, 4, 7, 8) for _ in range(3))
    mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    mask[1, :, :, 5:] = False
    module = torch.nn.Module().train()
    setattr(module, cd.MARK, True)
    monkeypatch.setattr(cd, "keep_noise", lambda shape, p, dtype: torch.ones(shape, dtype=dtype))
    out, _ = cd.bulk_dropout_attention(module, q, k, v, mask, dropout=0.2, scaling=0.3)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3).transpose(1, 2)
    torch.testing.assert_close(out, ref)
    monkeypatch.undo()
    state = torch.get_rng_state()
    out, _ = cd.bulk_dropout_attention(module, q, k, v, mask, dropout=0.2, scaling=0.3)
    torch.set_rng_state(state)
    noise = cd.keep_noise(torch.Size([2, 4, 7, 7]), 0.2, torch.float32)
    probs = torch.softmax((q @ k.transpose(-1, -2) * 0.3).masked_fill(~mask, torch.finfo(torch.float32).min), -1)
    torch.testing.assert_close(out, (probs * noise @ v).transpose(1, 2))
    assert 0.1 < (noise == 0).float().mean().item() < 0.3


def test_attention_dropout_in_bulk_only_where_marked_training_on_cpu(monkeypatch):
    """A marked model in training goes through the bulk path (and trains: gradients flow); in evaluation,
    and an unmarked model in the same process, get transformers' own SDPA function, unchanged."""
    import tagtune.cpu_dropout as cd

    calls = []
    real = cd.keep_noise
    monkeypatch.setattr(cd, "keep_noise", lambda *a: calls.append(a[0]) or real(*a))
    marked, other = tiny_sdpa_bert(), tiny_sdpa_bert()
    assert cd.use_bulk_attention_dropout(marked)
    ids, mask = tiny_sdpa_batch()
    marked.train()
    loss = marked(input_ids=ids, attention_mask=mask, labels=torch.zeros_like(ids)).loss
    loss.backward()
    assert [tuple(s) for s in calls] == [(3, 4, 9, 9)] * 2  # one mask per layer, [batch, heads, L, L]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in marked.parameters() if p.requires_grad)
    calls.clear()
    other.load_state_dict(marked.state_dict())
    other.train()
    other(input_ids=ids, attention_mask=mask)  # unmarked: torch's dropout inside SDPA
    marked.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            marked(input_ids=ids, attention_mask=mask).logits, other.eval()(input_ids=ids, attention_mask=mask).logits
        )
    assert calls == []
