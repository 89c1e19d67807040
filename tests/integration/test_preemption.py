"""Preemption: a real SIGTERM to a training process makes it save a checkpoint at the next step
boundary and exit with code 75 (EX_TEMPFAIL); resuming from that checkpoint ends bitwise equal to
an uninterrupted run. SIGINT (Ctrl-C) is handled the same way; a second Ctrl-C interrupts at once."""

from __future__ import annotations

import os
import signal
import types

import pytest
from _resume_common import assert_same_run, baseline, has_checkpoint, output, run_ok, start_and_wait, train_args

from tagtune.checkpoint import PREEMPTED_EXIT_CODE, StopSignal, list_checkpoints, read_meta

CKPT = ("--checkpointing_steps", "4", "--save_total_limit", "3")  # as test_resume: one shared baseline


def test_sigterm_saves_a_resumable_checkpoint_and_exits_75(tmp_path):
    assert PREEMPTED_EXIT_CODE == 75
    ref = baseline(*CKPT)
    out = tmp_path / "preempted"
    proc = start_and_wait(train_args(out, *CKPT), has_checkpoint(out, 4))
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(120)
    log = output(proc)
    assert rc == PREEMPTED_EXIT_CODE, log[-3000:]
    assert "SIGTERM received" in log and "stopped by SIGTERM at a step boundary" in log
    assert "--resume_from_checkpoint latest" in log
    assert not (out / "results.json").exists()
    step, path = list_checkpoints(out)[-1]
    t = read_meta(path)["trainer"]
    assert step > 4 and t["global_step"] == step < 24, (step, t["global_step"])  # written on the signal
    assert (out / "history.jsonl").is_file()  # the steps logged so far are kept
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]

    run_ok(train_args(out, *CKPT, "--resume_from_checkpoint", "latest"))
    assert_same_run(ref, out)


def test_sigint_sets_the_flag_and_a_second_one_interrupts():
    one_process = types.SimpleNamespace(num_processes=1)
    before = signal.getsignal(signal.SIGINT)
    with StopSignal() as stop:
        assert not stop.requested(one_process)
        os.kill(os.getpid(), signal.SIGINT)  # handled between bytecodes: no KeyboardInterrupt
        assert stop.received == "SIGINT" and stop.requested(one_process)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # give the interpreter a bytecode boundary
                pass
    assert signal.getsignal(signal.SIGINT) is before
