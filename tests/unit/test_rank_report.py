"""tagtune.rank_report: the per-process launch record the multi-node tests read."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tagtune.rank_report import ENV_VAR, node_rank, read_rank_reports, write_rank_report


def fake_accelerator(rank: int, world: int, local: int):
    return SimpleNamespace(
        process_index=rank,
        num_processes=world,
        local_process_index=local,
        distributed_type=SimpleNamespace(value="MULTI_CPU"),
        is_main_process=rank == 0,
        is_local_main_process=local == 0,
    )


def test_node_rank_sources():
    assert node_rank({"GROUP_RANK": "3", "NODE_RANK": "1", "RANK": "9"}) == 3  # torchrun's agent
    assert node_rank({"NODE_RANK": "1", "RANK": "9"}) == 1  # DeepSpeed's launcher
    assert node_rank({"RANK": "9", "LOCAL_WORLD_SIZE": "4"}) == 2  # derived
    assert node_rank({}) == 0


def test_written_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert write_rank_report(fake_accelerator(0, 1, 0)) is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "ranks"))
    monkeypatch.setenv("GROUP_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    path = write_rank_report(fake_accelerator(3, 4, 1))
    assert path == tmp_path / "ranks" / "rank-3.json"
    rec = json.loads(path.read_text())
    assert (rec["rank"], rec["world_size"], rec["env_world_size"], rec["node_rank"], rec["local_rank"]) == (
        3,
        4,
        4,
        1,
        1,
    )
    assert rec["is_main_process"] is False and rec["distributed_type"] == "MULTI_CPU"
    assert [r["rank"] for r in read_rank_reports(tmp_path / "ranks")] == [3]
    assert not list((tmp_path / "ranks").glob("*.tmp*"))
