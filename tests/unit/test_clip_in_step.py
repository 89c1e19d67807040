"""Gradient clipping inside the fused AdamW step gives clip_grad_norm_'s update: unit, and a whole
training run against the same run clipped the usual way."""

import json

import pytest
import torch
from conftest import train_smoke

from tagtune.optim import clip_in_step, end_clip_in_step, takes_clip_in_step


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))


def _backward(model: torch.nn.Module, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    x, y = torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
    model.zero_grad(set_to_none=True)
    (torch.nn.functional.cross_entropy(model(x), y) * 50).backward()  # large gradients: clipping binds


@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipping binds / does not
def test_same_update_as_clip_grad_norm(max_norm):
    a, b = _model(), _model()
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2, fused=True)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, fused=True)
    for step in range(4):
        _backward(a, step)
        _backward(b, step)
        norm_a = torch.nn.utils.clip_grad_norm_(a.parameters(), max_norm)
        opt_a.step()
        norm_b = clip_in_step(opt_b, b.parameters(), max_norm)
        opt_b.step()
        end_clip_in_step(opt_b)
        torch.testing.assert_close(norm_b, norm_a)
        assert norm_a.item() > 0.5 and opt_b.grad_scale is None
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-6, atol=1e-7)
    moved = sum((pa - pb).abs().sum() for pa, pb in zip(a.parameters(), _model().parameters()))
    assert moved > 0


def test_only_a_fused_adamw_takes_it():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert takes_clip_in_step(torch.optim.AdamW(params, fused=True))
    assert not takes_clip_in_step(torch.optim.AdamW(params, foreach=True))
    assert not takes_clip_in_step(torch.optim.SGD(params, lr=0.1))


def test_training_run_matches_clipping_the_usual_way(tmp_path):
    args = ("--max_steps", "8", "--logging_steps", "1", "--max_grad_norm", "0.05", "--save_model", "false")
    runs = {}
    for flag in ("true", "false"):
        out = train_smoke(tmp_path / flag, *args, "--clip_in_optimizer_step", flag)
        runs[flag] = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    inside, usual = runs["true"], runs["false"]
    assert [r["step"] for r in inside] == list(range(1, 9))
    assert min(r["grad_norm"] for r in usual) > 0.05  # clipping bound at every step
    for a, b in zip(inside, usual):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
