"""Hangs are diagnosable: a timed-out launch shows every process's Python stack, and a rank stuck
outside a collective makes the others fail after --ddp_timeout instead of waiting forever."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest
from conftest import free_port, run_cmd

STUCK = textwrap.dedent(
    """
    import time
    from tagtune.runtime import enable_hang_diagnostics

    enable_hang_diagnostics()
    print("started", flush=True)

    def waiting_for_godot():
        time.sleep(120)

    waiting_for_godot()
    """
)


def test_a_timed_out_command_prints_the_stacks_of_its_processes(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(STUCK)
    t0 = time.time()
    with pytest.raises(AssertionError) as err:
        run_cmd([sys.executable, str(script)], timeout=10)
    message = str(err.value)
    assert time.time() - t0 < 40
    assert "timed out after 10 s" in message
    assert "in waiting_for_godot" in message and "stuck.py" in message  # faulthandler's dump, from SIGUSR1


COLLECTIVE = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from tagtune.runtime import make_accelerator

    acc = make_accelerator(mixed_precision="no", gradient_accumulation_steps=1, tracker=None,
                           output_dir=sys.argv[1], timeout_s=5)
    assert acc.num_processes == 2, acc.num_processes
    if acc.process_index == 1:
        time.sleep(60)  # a rank that never reaches the collective
    t0 = time.time()
    try:
        acc.reduce(torch.ones(1), reduction="sum")
    except Exception as err:
        print(f"rank 0 gave up after {time.time() - t0:.0f} s: {type(err).__name__}", flush=True)
        os._exit(3)
    """
)


def test_a_collective_times_out_instead_of_waiting_forever(tmp_path):
    script = tmp_path / "collective.py"
    script.write_text(COLLECTIVE)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(script), str(tmp_path),
    ]  # fmt: skip
    t0 = time.time()
    proc = run_cmd(cmd, timeout=50, check=False, ACCELERATE_USE_CPU="1")
    assert proc.returncode != 0
    assert "rank 0 gave up after" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    waited = int(proc.stdout.split("rank 0 gave up after ")[1].split(" s")[0])
    assert 4 <= waited <= 30, waited
    assert time.time() - t0 < 50
