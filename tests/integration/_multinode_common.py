"""Several "nodes" on one machine: one launcher command per node, each with its own machine rank, meeting
through the c10d rendezvous that real nodes use, plus the assertions every multi-node run must pass.

Each node's command runs in its own session (its own process group) so that a hung rendezvous is ended
by killing exactly the groups these helpers started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from _scaleout_common import GLOBAL_BATCH, check_run, recipe_args, threads_report
from conftest import ROOT, free_port, subprocess_env

from tagtune.rank_report import ENV_VAR, read_rank_reports

NODES = 2


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_nodes(cmds: list[list[str]], envs: list[dict[str, str]], port: int, timeout: int = 600) -> list[str]:
    """Start node 0, wait until its rendezvous store listens on ``port``, then start the other nodes; wait
    for all. On one host every node's agent would take the store's address as its own, and the one that
    binds first hosts it: node 0 must be that one, as on a cluster. On any failure or timeout stop the
    others and raise with every node's output. Returns each node's combined output."""
    procs: list[subprocess.Popen] = []
    for i, (cmd, env) in enumerate(zip(cmds, envs)):
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
        if i == 0:
            deadline = time.monotonic() + 60
            while not _listening(port) and procs[0].poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _listening(port):
                if procs[0].poll() is None:
                    os.killpg(procs[0].pid, signal.SIGKILL)
                raise AssertionError(
                    f"node 0's rendezvous never listened on --main_process_port {port}:\n{procs[0].communicate()[0][-5000:]}"
                )
    outs: list[str] = [""] * len(procs)
    failed = None
    for i, proc in enumerate(procs):
        try:
            outs[i] = proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            failed = f"node {i} timed out after {timeout} s"
            break
        if proc.returncode != 0:
            failed = f"node {i} exited {proc.returncode}"
            break
    if failed:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this helper started for that node
        for i, proc in enumerate(procs):
            if not outs[i]:
                outs[i] = proc.communicate()[0] or ""
        text = "\n".join(f"--- node {i} ---\n{o[-5000:]}" for i, o in enumerate(outs))
        raise AssertionError(f"{failed}\n{text}")
    return outs


def two_node_commands(config: str, script: str, args_per_node: list[list[str]], port: int) -> list[list[str]]:
    """`accelerate launch --num_machines 2 --machine_rank 0|1 --main_process_ip 127.0.0.1 --main_process_port P
    --rdzv_backend c10d` with accelerate_configs/<config>.yaml, one process per node."""
    return [
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "accelerate_configs" / f"{config}.yaml"),
            "--num_machines",
            str(NODES),
            "--num_processes",
            str(NODES),
            "--machine_rank",
            str(rank),
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(port),
            "--rdzv_backend",
            "c10d",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(ROOT / script),
            *args,
        ]
        for rank, args in enumerate(args_per_node)
    ]


def accelerate_two_nodes(
    config: str, method: str, out: Path, reports: Path, *extra: str, **env: str
) -> tuple[Path, Path]:
    """recipes/smoke.py on 2 nodes x 1 process. Node 0 writes into ``out``; node 1 is given
    ``out.parent / (out.name + '-node1')``, which must stay empty (only the main process writes outputs).
    Returns (node 0 output dir, node 1 output dir)."""
    port = free_port()
    other = out.parent / f"{out.name}-node1"
    args = [recipe_args(folder, method, GLOBAL_BATCH // NODES, *extra) for folder in (out, other)]
    cmds = two_node_commands(config, "recipes/smoke.py", args, port)
    env.setdefault("TAGTUNE_THREADS_REPORT", str(threads_report(out)))  # both nodes' ranks, for check_run
    run_nodes(cmds, [subprocess_env(**{ENV_VAR: str(reports)}, **env)] * NODES, port)
    return out, other


def check_ranks(reports: Path, distributed_type: str) -> list[dict]:
    """Every process really ran in a 2-node world: one record per rank, node rank = global rank (1 process
    per node), local rank 0, and rank 0 alone the main process."""
    recs = read_rank_reports(reports)
    assert [r["rank"] for r in recs] == [0, 1], recs
    for r in recs:
        assert (r["world_size"], r["env_world_size"], r["local_world_size"]) == (2, 2, 1), r
        assert (r["node_rank"], r["local_rank"]) == (r["rank"], 0), r
        assert r["distributed_type"] == distributed_type, r
        assert r["is_main_process"] == (r["rank"] == 0) and r["is_local_main_process"], r
    assert len({r["pid"] for r in recs}) == 2
    return recs


def check_multinode_run(
    out: Path, other: Path, reports: Path, distributed_type: str, reference_run: Path
) -> tuple[dict, list[dict]]:
    """check_run's assertions (every word scored once, single-process loss curve) plus the per-rank ones;
    node 1's output folder holds no file (it may exist, empty)."""
    recs = check_ranks(reports, distributed_type)
    results = check_run(out, distributed_type, reference_run)
    written = sorted(str(p.relative_to(other)) for p in other.rglob("*") if p.is_file()) if other.exists() else []
    assert written == [], f"node 1 wrote outputs: {written}"
    return results, recs
