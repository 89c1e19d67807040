"""Every way a training run ends goes through the recipe's one cleanup: the exit code, the files
written, and the tracker closed (the offline W&B run ends with an exit record carrying that code)
exactly once, the process group torn down.

  normal end          exit 0   results.json, model/, history.jsonl
  preemption (TERM)   exit 75  a checkpoint and history.jsonl, no results.json
  divergence (NaN)    exit 2   the last good checkpoint and history.jsonl, no results.json
  any other exception exit 1   (the exception propagates) history.jsonl, no results.json
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from _resume_common import has_checkpoint, output, start_and_wait
from conftest import ROOT, run_cmd, smoke_recipe

from tagtune.wandb_offline import read_run

SMOKE = str(ROOT / "recipes" / "smoke.py")
SMALL = ["--max_train_samples", "96", "--max_eval_samples", "24", "--per_device_train_batch_size", "8"]
SMALL += ["--logging_steps", "1", "--report_to", "wandb", "--overwrite_output_dir", "true"]


def wandb_exit_code(out: Path, wait_s: float = 30.0) -> int | None:
    """The exit code recorded in the run's offline .wandb log (None: the run was never closed). In-process,
    wandb's service writes the last records just after run.finish() returns: wait a little for them."""
    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    deadline = time.time() + wait_s
    while True:
        code = read_run(files[0]).exit_code
        if code is not None or time.time() > deadline:
            return code
        time.sleep(0.5)


def test_normal_end(tmp_path):
    out = tmp_path / "run"
    run_cmd([sys.executable, SMOKE, "--output_dir", str(out), "--max_steps", "6", *SMALL], timeout=300)
    assert {"results.json", "history.jsonl", "model", "epochs.json"} <= {p.name for p in out.iterdir()}
    assert wandb_exit_code(out) == 0


def test_divergence_exits_2_and_keeps_the_loss_curve(tmp_path):
    out = tmp_path / "run"
    args = ["--learning_rate", "1e30", "--max_grad_norm", "0", "--checkpointing_steps", "1"]
    args += ["--nonfinite_loss_patience", "2", "--max_steps", "12"]
    proc = run_cmd([sys.executable, SMOKE, "--output_dir", str(out), *args, *SMALL], timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "tagtune: error: training loop: training loss was NaN/inf" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "results.json").exists()
    history = (out / "history.jsonl").read_text().splitlines()
    assert len(history) >= 2 and "NaN" in history[-1]
    assert wandb_exit_code(out) == 2


def test_preemption_exits_75(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, SMOKE, "--output_dir", str(out), "--checkpointing_steps", "2", *SMALL]
    proc = start_and_wait(cmd, has_checkpoint(out, 2))
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(120)
    assert rc == 75, output(proc)[-3000:]
    assert (out / "history.jsonl").is_file() and not (out / "results.json").exists()
    assert wandb_exit_code(out) == 75


def test_any_other_exception_closes_everything_once(tmp_path, monkeypatch):
    """A bug mid-training (here: evaluation raising) still closes the tracker and the process group once."""
    import wandb

    from tagtune import runtime, tracking
    from tagtune import train as train_module

    Smoke = smoke_recipe()
    calls = {"finish": 0, "shutdown": 0}
    real_finish, real_shutdown = tracking.finish, runtime.shutdown

    def count(name, real):
        def wrapper(*a, **kw):
            calls[name] += 1
            return real(*a, **kw)

        return wrapper

    def broken_scoring(*a, **kw):
        raise RuntimeError("evaluation bug")

    monkeypatch.setattr(tracking, "finish", count("finish", real_finish))
    monkeypatch.setattr(runtime, "shutdown", count("shutdown", real_shutdown))
    monkeypatch.setattr(train_module, "score", broken_scoring)  # the evaluation's metrics step
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="evaluation bug"):
        train_module.main(Smoke, ["--output_dir", str(out), "--max_steps", "4", *SMALL])
    assert calls == {"finish": 1, "shutdown": 1}
    assert wandb.run is None
    assert not torch.distributed.is_initialized()
    assert (out / "history.jsonl").is_file() and not (out / "results.json").exists()
    assert wandb_exit_code(out) == 1
