"""Bulk dropout masks: the keep probability, the scale, the gradient, and torch's generator deciding
every mask (so seeds and checkpoints still do); and the trainer using them on CPU unless told not to."""

import pytest
import torch
from conftest import smoke_recipe

from tagtune.cpu_dropout import BulkDropout, keep_noise, use_bulk_dropout


def test_keep_probability_and_scale():
    noise = keep_noise(torch.Size([1000, 1000]), 0.1, torch.float32)
    kept = (noise != 0).float().mean().item()
    assert abs(kept - 0.9) < 5 * (0.9 * 0.1 / 1e6) ** 0.5  # five standard deviations
    assert noise.unique().tolist() == [0.0, pytest.approx(1 / 0.9)]
    assert keep_noise(torch.Size([7, 3]), 0.5, torch.bfloat16).dtype == torch.bfloat16


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


def _recipe(tmp_path, *args):
    return smoke_recipe()(
        output_dir=str(tmp_path), overwrite_output_dir=True, max_steps=1, report_to="none", **dict(args)
    )


@pytest.mark.parametrize("bulk, compile", [(True, False), (False, False), (True, True)])
def test_trainer_uses_bulk_dropout_on_cpu_unless_told_not_to(tmp_path, bulk, compile, caplog):
    """Off when asked, and under torch_compile (numpy inside a compiled graph would break it)."""
    from tagtune.train import TrainingRecipe

    recipe = TrainingRecipe(_recipe(tmp_path, ("cpu_bulk_dropout", bulk), ("torch_compile", compile)))
    try:
        recipe.setup()
        kinds = {type(m).__name__ for m in recipe.model.modules() if isinstance(m, torch.nn.Dropout)}
    finally:
        recipe.cleanup()
    used = bulk and not compile
    assert kinds == ({"BulkDropout"} if used else {"Dropout"})
    assert ("masks drawn in bulk" in caplog.text) is used
