"""A new user's first launches: an empty cache under ZeRO-3, every CPU core by default, and
`tagtune train RECIPE` as the CLI documents it.

Each launch uses its own empty TAGTUNE_CACHE, so nothing here depends on another test having built
the synthetic model first.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from _scaleout_common import recipe_args
from conftest import ROOT, free_port, read_json, run_cmd

ACCELERATE = str(Path(sys.executable).parent / "accelerate")
TINY = ["--max_steps", "2", "--max_train_samples", "32", "--max_eval_samples", "8", "--report_to", "none"]


def threads_line(log: str) -> tuple[int, str]:
    m = re.search(r"CPU threads per process: (\d+) \((.*)\)$", log, re.M)
    assert m, log[-3000:]
    return int(m.group(1)), m.group(2)


def test_zero3_first_launch_with_an_empty_cache(tmp_path):
    """The synthetic model is built before any process group exists: under ZeRO-3 building a model is a
    collective, so building it on rank 0 while rank 1 waited at a barrier deadlocked."""
    cache = tmp_path / "cache"
    out = tmp_path / "run"
    cmd = [
        ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "deepspeed_zero3.yaml"),
        "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()),
        str(ROOT / "recipes" / "smoke.py"), *recipe_args(out, "lora", 8),
    ]  # fmt: skip
    run_cmd(cmd, timeout=420, TAGTUNE_CACHE=str(cache))
    results = read_json(out / "results.json")
    assert (results["num_processes"], results["distributed_type"]) == (2, "DEEPSPEED")
    assert results["global_steps"] == 4
    assert (cache / "synthetic-bert-v2" / "config.json").is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["features", "synthetic-bert-v2"]
    leftovers = [p for p in cache.rglob("*") if p.name.startswith((".", "tmp"))]
    assert leftovers == []  # no temporary folder of the model build or of the feature cache left behind
    # DeepSpeed's CPU communication op, compiled at the first launch, is kept where the README says
    assert list(Path(os.environ["TORCH_EXTENSIONS_DIR"]).rglob("deepspeed_shm_comm*.so")), "shm op not cached"


def test_accelerate_launch_uses_every_core_unless_the_user_says_otherwise(tmp_path):
    """`accelerate launch` gives CPU workers OMP_NUM_THREADS=1 unless told otherwise; the trainer takes
    the cores available to each local process, and an explicit user setting still wins."""
    cores = len(os.sched_getaffinity(0))
    recipe = str(ROOT / "recipes" / "smoke.py")
    base = [ACCELERATE, "launch", "--num_processes", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]

    def launch(*launch_args: str, **env: str) -> tuple[int, str]:
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        cmd = [*base, *launch_args, recipe, "--output_dir", str(out), *TINY]
        saved = {k: os.environ.pop(k) for k in ("OMP_NUM_THREADS",) if k in os.environ}
        try:
            proc = run_cmd(cmd, timeout=300, TAGTUNE_CACHE=str(tmp_path / "cache"), **env)
        finally:
            os.environ.update(saved)
        return threads_line(proc.stdout + proc.stderr)

    assert launch() == (cores, f"{cores} cores / 1 local process(es); accelerate launch had set 1")
    assert launch(OMP_NUM_THREADS="1") == (1, "OMP_NUM_THREADS=1 set by the user")
    assert launch("--num_cpu_threads_per_process", "1") == (1, "--num_cpu_threads_per_process set by the user")


def test_tagtune_train_takes_a_recipe_file_or_a_config_file(tmp_path):
    """`tagtune train RECIPE_OR_CONFIG [flags]`, as the CLI's help says."""
    tagtune = str(Path(sys.executable).parent / "tagtune")
    out = tmp_path / "recipe"
    proc = run_cmd([tagtune, "train", "recipes/smoke.py", "--output_dir", str(out), *TINY], timeout=300)
    cfg = read_json(out / "run_config.json")
    assert (cfg["recipe"], cfg["model_name_or_path"], cfg["learning_rate"]) == ("smoke", "synthetic:bert", 3e-3)
    # on by default for a CPU run (glibc): the trainer says so
    assert "CPU memory allocator: freed memory kept for reuse (mallopt: no mmap, no trim)" in proc.stdout
    assert "oneDNN kernel caches: bounded (ONEDNN_PRIMITIVE_CACHE_CAPACITY=64, LRU_CACHE_CAPACITY=1)" in proc.stdout

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"dataset_name": "synthetic:pos", "model_name_or_path": "synthetic:roberta"}))
    out2 = tmp_path / "config"
    proc2 = run_cmd(
        [
            tagtune,
            "train",
            str(config),
            "--output_dir",
            str(out2),
            *TINY,
            "--cpu_malloc_reuse",
            "false",
            "--cpu_kernel_cache_bound",
            "false",
        ]
    )
    cfg2 = read_json(out2 / "run_config.json")
    assert (cfg2["recipe"], cfg2["model_name_or_path"]) == ("custom", "synthetic:roberta")
    assert cfg2["cpu_malloc_reuse"] is False and "CPU memory allocator" not in proc2.stdout
    assert cfg2["cpu_kernel_cache_bound"] is False and "oneDNN kernel caches" not in proc2.stdout

    bad = run_cmd([tagtune, "train", "recipes/nope.py"], timeout=60, check=False)
    assert bad.returncode == 2 and "recipe file not found: recipes/nope.py" in bad.stderr
