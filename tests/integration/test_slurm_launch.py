"""launch/slurm_multinode.sbatch driven for real on one machine, and the hostfile launcher's pdsh check.

A fake `srun` (tests/integration/fake_slurm/srun) on PATH starts the script's per-node command once per
"node", locally, with SLURM_PROCID / SLURM_NODEID / SLURMD_NODENAME as srun sets them; the allocation is
SLURM_JOB_NODELIST=node[1-2] with 1 process per node, and TAGTUNE_MAIN_ADDR=127.0.0.1 (the script's
documented override) makes the node-list name resolve to this host. The script's own rank and address
logic then starts a 2-node CPU DDP run, checked as in test_multinode.py. ~45 s.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from _multinode_common import check_ranks
from _scaleout_common import GLOBAL_BATCH, check_run, recipe_args, reference, threads_report
from conftest import ROOT, free_port, subprocess_env

from tagtune.rank_report import ENV_VAR

FAKE_SLURM = ROOT / "tests" / "integration" / "fake_slurm"


def test_slurm_script_starts_two_nodes(tmp_path, tmp_path_factory):
    port, reports, out = free_port(), tmp_path / "ranks", tmp_path / "run"
    env = subprocess_env(
        PATH=f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_JOB_NODELIST="node[1-2]",
        SLURM_NNODES="2",
        SLURM_GPUS_PER_NODE="1",
        SLURM_SUBMIT_DIR=str(ROOT),
        TAGTUNE_MAIN_ADDR="127.0.0.1",
        FAKE_SRUN_WAIT_PORT=str(port),
        ACCELERATE_USE_CPU="1",  # CPU DDP over gloo (a GPU cluster leaves it unset)
        TAGTUNE_THREADS_REPORT=str(threads_report(out)),  # every rank, for check_run
        **{ENV_VAR: str(reports)},
    )
    script = ROOT / "launch" / "slurm_multinode.sbatch"
    cmd = ["bash", str(script), "--port", str(port), "--mixed_precision", "no", "recipes/smoke.py"]
    cmd += recipe_args(out, "full", GLOBAL_BATCH // 2)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    srun = shlex.split(next(ln for ln in proc.stdout.splitlines() if ln.startswith("+ srun")))
    assert "--ntasks=2" in srun and "--main_process_ip 127.0.0.1 --main_process_port" in srun[-1], srun
    recs = check_ranks(reports, "MULTI_CPU")
    assert len({r["master"] for r in recs}) == 1, recs
    check_run(out, "MULTI_CPU", reference("full", tmp_path_factory.getbasetemp()))


def test_hostfile_launcher_names_missing_pdsh(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    # a PATH without pdsh, whether or not this machine has it
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if not (os.path.isfile(f"{d}/pdsh")))
    out = tmp_path / "run"
    cmd = ["bash", str(ROOT / "launch" / "deepspeed_hostfile.sh"), "--hostfile", str(hostfile), "--zero", "2"]
    cmd += ["recipes/smoke.py", "--output_dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(PATH=path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pdsh not found on PATH" in proc.stderr and "1 host(s) of " + str(hostfile) in proc.stderr, proc.stderr
    assert "+ accelerate" not in proc.stdout and not out.exists()  # stopped before launching anything
