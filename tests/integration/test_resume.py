"""Exact resume: a training process killed with SIGKILL mid-epoch, resumed with
--resume_from_checkpoint latest, ends bitwise equal to an uninterrupted run with the same seed
(CPU, one thread; dropout on, gradient accumulation 2). Plus the checkpoint folder rules:
atomic (interrupted saves are never picked), keep-last-K, the output-dir guard, mismatch errors."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
from _resume_common import (
    assert_same_run,
    baseline,
    has_checkpoint,
    material,
    run_ok,
    start_and_wait,
    train_args,
)

from tagtune.checkpoint import META_NAME, list_checkpoints, read_meta, resolve_resume
from tagtune.errors import CheckpointError

CKPT = ("--checkpointing_steps", "4", "--save_total_limit", "3")


def test_kill9_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    ref = baseline(*CKPT)
    out = tmp_path / "killed"
    proc = start_and_wait(train_args(out, *CKPT), has_checkpoint(out, 4))
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    assert not (out / "results.json").exists(), "the process finished before the kill: nothing was tested"
    latest = list_checkpoints(out)[-1][1]
    t = read_meta(latest)["trainer"]
    assert t["batches_in_epoch"] > 0 and t["global_step"] < 24, t  # really mid-epoch, mid-run

    resumed = run_ok(train_args(out, *CKPT, "--resume_from_checkpoint", "latest"))
    assert f"resumed from {latest}" in resumed.stdout + resumed.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["resumed_from"] == str(latest)
    assert_same_run(ref, out)
    # keep-last-K: the three newest remain, a completed run ends with its final epoch-end checkpoint
    assert [s for s, _ in list_checkpoints(out)] == [16, 20, 24]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    # weights in safetensors, no pickled model
    names = {p.name for p in (out / "checkpoints" / "step-24").iterdir()}
    assert "model.safetensors" in names and not any(n.endswith(".bin") and "model" in n for n in names)


def test_interrupted_saves_are_never_resumed(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step-4").mkdir(parents=True)
    (root / "step-4" / META_NAME).write_text("{}")
    (root / ".tmp-step-8").mkdir()  # a save killed before its rename
    (root / ".tmp-step-8" / META_NAME).write_text("{}")
    (root / "step-12").mkdir()  # no metadata: not a complete checkpoint
    assert resolve_resume(str(tmp_path), "latest") == root / "step-4"
    with pytest.raises(CheckpointError, match="not a complete tagtune checkpoint"):
        resolve_resume(str(tmp_path), str(root / ".tmp-step-8"))
    with pytest.raises(CheckpointError, match="not a complete tagtune checkpoint"):
        resolve_resume(str(tmp_path), str(root / "step-12"))
    assert resolve_resume(str(tmp_path / "nothing"), "latest") is None  # fresh start


def _refused(args: list[str], capsys) -> str:
    """Run the trainer in-process (the refusal comes before any model loads) and return its stderr."""
    from tagtune.config import TrainConfig
    from tagtune.train import main

    with pytest.raises(SystemExit) as exit_:
        main(TrainConfig, args[4:])  # drop "python -m tagtune.cli train"
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Fix:" in err and "Traceback" not in err
    return err


def test_resume_refuses_other_labels_and_other_batch(tmp_path, capsys):
    """A checkpoint of the baseline resumed with other training labels / another batch size: clear errors,
    and the run folder is left as it was."""
    ref = baseline(*CKPT)
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    lines = (material() / "train.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["labels"][0] = "XX"  # a tag the checkpoint never saw
    other = tmp_path / "train_other.jsonl"
    other.write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
    args = train_args(out, *CKPT, "--resume_from_checkpoint", str(list_checkpoints(out)[0][1]))
    args[args.index("--train_file") + 1] = str(other)
    err = _refused(args, capsys)
    assert "label set differs from the checkpoint's" in err and "new: ['XX']" in err
    err = _refused(train_args(out, "--resume_from_checkpoint", "latest", "--per_device_train_batch_size", "8"), capsys)
    assert "global_batch_size differs from the checkpoint's: 4 there, 8 now" in err
    err = _refused(train_args(out, "--resume_from_checkpoint", "latest", "--method", "lora"), capsys)
    assert "method differs from the checkpoint's: 'full' there, 'lora' now" in err
    # not resuming: the output-dir guard protects the finished run
    err = _refused(train_args(out), capsys)
    assert "already holds another run" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
