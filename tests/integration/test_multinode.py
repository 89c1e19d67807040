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

import pytest
from _multinode_common import accelerate_two_nodes, check_multinode_run
from _scaleout_common import reference

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
