"""`tagtune reproduce` planning: the grid, run states, launch commands and the dry-run estimate."""

import json
import math
from pathlib import Path

import pytest
from conftest import ROOT

from tagtune.errors import ConfigError
from tagtune.reproduce import (
    ASSUMED_MFU,
    assumed_step_time,
    estimate_lines,
    launch_prefix,
    parser,
    passthrough_args,
    plan,
    status,
    steps_per_run,
    train_args,
)

RECIPES = ROOT / "recipes"


def test_plan_puts_full_runs_first_and_pairs_lora_with_its_full_run(tmp_path):
    runs = plan(["bert-base-cased", "roberta-base"], ["lora", "full"], [1, 2], "both", tmp_path, RECIPES)
    assert len(runs) == 12
    assert [r.method for r in runs[:4]] == ["full"] * 4
    assert [r.recipe.name for r in runs[:4]] == ["bert_full.py"] * 2 + ["roberta_full.py"] * 2
    ffr = [r for r in runs if r.init == "from_full_run"]
    assert len(ffr) == 4
    for r in ffr:
        full = next(f for f in runs if f.method == "full" and f.base_model == r.base_model and f.seed == r.seed)
        assert r.after == full.dir and r.model == str(full.dir / "model")
        assert runs.index(full) < runs.index(r)
    assert runs[0].name == "bert_full-bert-base-cased-seed1"
    assert {r.name for r in runs if r.method == "lora"} >= {"roberta_lora-roberta-base-pretrained-seed2"}


def test_from_full_run_without_full_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--methods") as err:
        plan(["bert-base-cased"], ["lora"], [1], "from_full_run", tmp_path, RECIPES)
    assert "add 'full' to --methods" in str(err.value)


def test_status_reads_the_run_folder(tmp_path):
    d = tmp_path / "run"
    assert status(d) == "new"
    d.mkdir()
    (d / "run_config.json").write_text("{}")
    assert status(d) == "restart"
    ck = d / "checkpoints" / "step-4"
    ck.mkdir(parents=True)
    from tagtune.checkpoint import META_NAME

    (ck / META_NAME).write_text("{}")
    assert status(d) == "resume"
    (d / "results.json").write_text("{}")
    assert status(d) == "finished"


def test_launch_and_recipe_flags(tmp_path):
    (r,) = plan(["synthetic:roberta"], ["full"], [7], "pretrained", tmp_path, RECIPES)
    assert launch_prefix("cfg.yaml")[1:] == ["-m", "accelerate.commands.launch", "--config_file", "cfg.yaml"]
    assert len(launch_prefix("none")) == 1
    args = train_args(r, "grp", ["--max_steps", "3"])
    assert args[0].endswith("recipes/roberta_full.py")
    flags = dict(zip(args[1::2], args[2::2]))
    assert flags["--seed"] == "7" and flags["--run_group"] == "grp" and flags["--max_steps"] == "3"
    assert flags["--resume_from_checkpoint"] == "latest" and flags["--model_name_or_path"] == "synthetic:roberta"


def test_passthrough_clears_the_recipes_hub_dataset_for_local_files():
    a = parser().parse_args(["--train_file", "t.conllu", "--max_steps", "5", "--", "--lora_r", "4"])
    assert passthrough_args(a) == [
        "--dataset_name",
        "",
        "--project",
        "tagtune",
        "--train_file",
        "t.conllu",
        "--max_steps",
        "5",
        "--lora_r",
        "4",
    ]


def test_estimate_assumption_is_the_stated_formula(tmp_path):
    t = assumed_step_time("bert", "full")
    assert t == pytest.approx(6 * 108_051_504 * 16 * 32 / (65e12 * ASSUMED_MFU))
    assert assumed_step_time("bert", "lora") == pytest.approx(t * 4 / 6)
    assert steps_per_run("batterydata/pos_tagging", None, None) == 3 * math.ceil(13054 / 16)
    assert steps_per_run("other", None, None) is None and steps_per_run("other", None, 9) == 9
    runs = plan(["bert-base-cased"], ["full"], [1], "pretrained", tmp_path, RECIPES)
    lines = estimate_lines(runs, 100, None)
    assert "assumed, not measured" in lines[-2] and lines[-1].startswith("estimated time left: ")


def test_estimate_prefers_a_measured_step_time(tmp_path):
    runs = plan(["bert-base-cased"], ["full"], [1, 2], "pretrained", tmp_path, RECIPES)
    runs[0].dir.mkdir(parents=True)
    res = {"global_steps": 100, "wall_time_s": 50.0, "device": "cuda:0", "mixed_precision": "fp16"}
    (runs[0].dir / "results.json").write_text(json.dumps(res))
    lines = estimate_lines(runs, 1000, None)
    assert lines[0] == f"  {runs[1].name}: 1000 steps x 0.500 s = 8.3 min [1]"
    assert "measured" in lines[1] and "cuda:0, fp16" in lines[1]
    assert lines[-1] == "estimated time left: 0.14 GPU-hours"
    assert Path(runs[0].dir / "results.json").is_file()


def test_default_dry_run_is_the_readme_plan_and_estimate(tmp_path, capsys):
    """README "Reproducing the study": 12 runs on seeds 42-44 through the T4 config, 0.37 GPU-hours assumed
    (0.52 with --lora_init both); nothing written."""
    from tagtune.reproduce import main

    assert main(["--out", str(tmp_path / "r"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "reproduce: 12 runs, W&B group 'reproduce-r'" in text and text.count("[new] ") == 12
    assert all(f"--seed {s} " in text for s in (42, 43, 44)) and "single_t4_fp16.yaml" in text
    assert text.rstrip().endswith("estimated time left: 0.37 GPU-hours")
    assert main(["--out", str(tmp_path / "r"), "--dry-run", "--lora_init", "both"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("estimated time left: 0.52 GPU-hours")
    assert not (tmp_path / "r").exists()
