"""A per-process record of where each process landed in a distributed launch.

results.json and run_config.json are written by the main process alone, so they cannot show what the
other processes saw. When ``TAGTUNE_RANK_REPORT=<dir>`` is set, every process writes
``<dir>/rank-<global rank>.json`` right after the Accelerator is made: its global rank, world size,
node (machine) rank, local rank, host and what Accelerate made of the launch. Multi-node tests and
``launch/cluster_check.py`` read these records; without the variable nothing is written.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from accelerate import Accelerator

ENV_VAR = "TAGTUNE_RANK_REPORT"


def node_rank(env: dict[str, str]) -> int:
    """The machine rank torchrun's agent gave this process's node (GROUP_RANK; under c10d rendezvous it is
    assigned at the meeting, not taken from --machine_rank); DeepSpeed's own launcher sets NODE_RANK."""
    for key in ("GROUP_RANK", "NODE_RANK"):
        if env.get(key, "") != "":
            return int(env[key])
    local_size = int(env.get("LOCAL_WORLD_SIZE", "1"))
    return int(env.get("RANK", "0")) // max(local_size, 1)


def rank_record(accelerator: Accelerator, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    env = dict(os.environ if env is None else env)
    return {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "local_rank": accelerator.local_process_index,
        "node_rank": node_rank(env),
        "local_world_size": int(env.get("LOCAL_WORLD_SIZE", "1")),
        "env_world_size": int(env.get("WORLD_SIZE", "1")),
        "distributed_type": accelerator.distributed_type.value,
        "is_main_process": accelerator.is_main_process,
        "is_local_main_process": accelerator.is_local_main_process,
        "master": f"{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}",
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def write_rank_report(accelerator: Accelerator) -> Optional[Path]:
    """Write this process's record when TAGTUNE_RANK_REPORT is set; returns the file (None when unset)."""
    folder = os.environ.get(ENV_VAR, "")
    if not folder:
        return None
    rec = rank_record(accelerator)
    path = Path(folder) / f"rank-{rec['rank']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_rank_reports(folder: Path) -> list[dict[str, Any]]:
    """Every process's record, ordered by global rank."""
    return sorted(
        (json.loads(p.read_text(encoding="utf-8")) for p in Path(folder).glob("rank-*.json")), key=lambda r: r["rank"]
    )
