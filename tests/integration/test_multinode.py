"""Two "nodes" on one machine, really launched: two `accelerate launch` commands, one per node
(`--num_machines 2 --machine_rank 0|1 --main_process_ip 127.0.0.1 --main_process_port P --rdzv_backend c10d`),
one process each, meeting through c10d rendezvous as real nodes do. CPU DDP (gloo, multi_node.yaml) and
DeepSpeed ZeRO-2 with Accelerate's standard multi-node launcher (deepspeed_zero2.yaml), full fine-tuning.

Every process records its ranks (TAGTUNE_RANK_REPORT): world size 2, node rank 0/1, local rank 0. Every
validation word is scored once, the per-step losses follow a 1-process run at the same global batch, and
node 1 (given its own --output_dir) writes nothing. The rendezvous must listen on
--main_process_port (run_nodes checks it). ~60 s.
"""

from __future__ import annotations

import json

import pytest
from _multinode_common import NODES, accelerate_two_nodes, check_multinode_run, run_nodes, two_node_commands
from _scaleout_common import reference
from conftest import free_port, subprocess_env

CASES = {
    "ddp": ("multi_node", "MULTI_CPU", {"ACCELERATE_USE_CPU": "1"}),
    "zero2": ("deepspeed_zero2", "DEEPSPEED", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_nodes_one_process_each(case, tmp_path, tmp_path_factory):
    config, dist_type, env = CASES[case]
    reports = tmp_path / "ranks"
    out, other = accelerate_two_nodes(config, "full", tmp_path / "run", reports, **env)
    results, recs = check_multinode_run(
        out, other, reports, dist_type, reference("full", tmp_path_factory.getbasetemp())
    )
    assert results["num_processes"] == 2 and len({r["master"] for r in recs}) == 1, recs  # one process group


def test_cluster_check_on_two_nodes(tmp_path):
    """launch/cluster_check.py, the README's cluster smoke test, on 2 "nodes" over gloo: every process
    reports world size 2 and its ranks, the all-reduce sums right, and bandwidth is measured."""
    port, report = free_port(), tmp_path / "cluster.json"
    args = [["--sizes-mb", "1,4", "--iters", "3", "--json", str(report)]] * NODES
    outs = run_nodes(
        two_node_commands("multi_node", "launch/cluster_check.py", args, port), [subprocess_env()] * 2, port
    )
    got = json.loads(report.read_text())
    assert got["world_size"] == 2 and got["ok"] is True
    assert [(p["rank"], p["node_rank"], p["local_rank"], p["world_size"]) for p in got["processes"]] == [
        (0, 0, 0, 2),
        (1, 1, 0, 2),
    ]
    assert all(p["backend"] == "gloo" and p["allreduce_ok"] for p in got["processes"])
    assert set(got["busbw_gbps"]) == {"1.0", "4.0"} and all(bw > 0 for bw in got["busbw_gbps"].values())
    assert "world size 2, 1 host(s), backend gloo" in outs[0] and "all-reduce    4.0 MiB" in outs[0]
