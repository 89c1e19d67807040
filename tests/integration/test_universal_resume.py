"""Resume a ZeRO-2 checkpoint at another number of processes, optimizer state included, through DeepSpeed's
universal checkpoint format: `tagtune convert-checkpoint --to universal CKPT OUT`, then
`accelerate launch --num_processes M ... --resume_from_checkpoint OUT` (the trainer sets DeepSpeed's
"checkpoint": {"load_universal": true} itself). 2 -> 1 and 1 -> 2 processes on CPU, same global batch,
each compared with the uninterrupted run it was cut from: the learning-rate schedule continues exactly,
the training loss follows within LOSS_RTOL, and the final weights agree within WEIGHT_ATOL. The
unconverted checkpoint stays refused (test_deepspeed.py checks the refusal and its pointer). ~2.5 min.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _scaleout_common import (
    GLOBAL_BATCH,
    LOSS_RTOL,
    ZERO_EXTRA,
    losses,
    recipe_args,
    shared_launch,
)
from conftest import ROOT, accelerate_launch, read_json, run_cmd, subprocess_env
from safetensors.torch import load_file

# Largest absolute difference of any weight between the resumed and the uninterrupted run after 4 steps
# (2 of them after the resume). The fp32 master weights and Adam moments are restored exactly; what
# differs is the order of the gradient reductions at another world size (the float32 rounding that
# LOSS_RTOL allows), which Adam's normalisation amplifies early in training. Measured: resumed 2 -> 1 vs
# uninterrupted 2 processes 1.7e-3, 1 -> 2 vs uninterrupted 1 process 1.4e-3 (losses 3.4e-4 and 3.3e-4
# relative); for scale, the uninterrupted 2- and 1-process runs differ by 7.7e-3.
WEIGHT_ATOL = 5e-3


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def convert(ckpt: Path, out: Path) -> subprocess.CompletedProcess:
    return run_cmd(
        [str(Path(sys.executable).parent / "tagtune"), "convert-checkpoint", "--to", "universal", str(ckpt), str(out)]
    )


def zero2(out: Path, processes: int, *extra: str) -> Path:
    accelerate_launch(
        "recipes/smoke.py",
        recipe_args(out, "full", GLOBAL_BATCH // processes, *ZERO_EXTRA, *extra),
        num_processes=processes,
        extra_launch=["--config_file", str(ROOT / "accelerate_configs" / "deepspeed_zero2.yaml")],
    )
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The uninterrupted ZeRO-2 runs: 2 processes (shared with test_deepspeed.py) and 1 process."""
    root = tmp_path_factory.getbasetemp()
    return {2: shared_launch("deepspeed_zero2", "full", root, *ZERO_EXTRA), 1: zero2(root / "zero2-full-1proc", 1)}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_universal_resume_at_another_world_size(before, after, sources, tmp_path):
    source = sources[before]
    step2 = source / "checkpoints" / "step-2"
    assert read_json(step2 / "tagtune_checkpoint.json")["world_size"] == before
    universal = tmp_path / f"step-2-universal-from-{before}"
    convert(step2, universal)
    meta = read_json(universal / "tagtune_checkpoint.json")
    assert meta["universal"] is True and meta["source_world_size"] == before
    # the optimizer state travels: one folder per parameter with its fp32 weights and trained Adam moments
    param = universal / "pytorch_model" / "zero" / "classifier.weight"
    for name in ("fp32", "exp_avg", "exp_avg_sq"):
        state = torch.load(param / f"{name}.pt", weights_only=False)["param"]
        assert state.shape == weights(source)["classifier.weight"].shape and float(state.detach().abs().sum()) > 0, (
            name
        )
    assert read_json(step2 / "tagtune_checkpoint.json").get("universal") is None  # the source is untouched

    resumed = zero2(tmp_path / "resumed", after, "--resume_from_checkpoint", str(universal))
    results = read_json(resumed / "results.json")
    assert (results["num_processes"], results["distributed_type"]) == (after, "DEEPSPEED")
    assert results["resumed_from"] == str(universal) and results["global_steps"] == 4
    got, want = history(resumed), history(source)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    # steps 1-2 come from the checkpoint; 3-4 were trained after the resume at the other world size
    assert got[:2] == want[:2]
    assert [r["learning_rate"] for r in got] == [r["learning_rate"] for r in want]  # the schedule continues exactly
    worst = max(abs(g - w) / w for g, w in zip(losses(resumed)[2:], losses(source)[2:]))
    assert worst <= LOSS_RTOL, f"{losses(resumed)} vs uninterrupted {losses(source)}: {worst:.2e}"
    a, b = weights(resumed), weights(source)
    assert a.keys() == b.keys()
    gap = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert gap <= WEIGHT_ATOL, f"weights differ by up to {gap:.2e} from the uninterrupted run"
    assert results["final"]["eval_loss"] == pytest.approx(
        read_json(source / "results.json")["final"]["eval_loss"], rel=1e-3
    )


def test_convert_refuses_what_it_cannot_convert(tmp_path, sources):
    universal = tmp_path / "u"
    convert(sources[2] / "checkpoints" / "step-4", universal)
    again = subprocess.run(
        [
            str(Path(sys.executable).parent / "tagtune"),
            "convert-checkpoint",
            "--to",
            "universal",
            str(universal),
            str(tmp_path / "v"),
        ],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "already a universal checkpoint" in again.stderr, again.stderr
    clash = subprocess.run(
        [
            str(Path(sys.executable).parent / "tagtune"),
            "convert-checkpoint",
            "--to",
            "universal",
            str(sources[2] / "checkpoints" / "step-2"),
            str(universal),
        ],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert clash.returncode == 2 and "output folder already exists" in clash.stderr, clash.stderr
    assert read_json(universal / "tagtune_checkpoint.json")["universal"] is True  # not overwritten
