"""`tagtune reproduce` end to end on CPU: the study's grid with synthetic models (2 models x 2 methods x 2 seeds,
a few steps each) through the recipes, its report beside the study's numbers with intervals and verdicts, W&B
groups read back offline, a rerun that skips every finished run, and an interrupted run that resumes."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, read_json, readme_block, run_cmd, run_readme_block, subprocess_env

from tagtune.checkpoint import PREEMPTED_EXIT_CODE, list_checkpoints
from tagtune.significance import mean_std, welch_interval
from tagtune.wandb_offline import find_run_files, read_run

# OMP_WAIT_POLICY: spinning OpenMP threads make every op several times slower on a shared 2-core machine
ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
GRID = [
    "--models",
    "synthetic:bert",
    "synthetic:roberta",
    "--dataset_name",
    "synthetic:pos",
    "--seeds",
    "2",
    "--max_steps",
    "2",
    "--max_train_samples",
    "16",
    "--max_eval_samples",
    "16",
    "--accelerate_config",
    "none",
    "--run_group",
    "study-ci",
]
CELLS = {
    "bert_full": ("3", "bert full"),
    "bert_lora": ("4", "bert lora (from pretrained)"),
    "roberta_full": ("5", "roberta full"),
    "roberta_lora": ("6", "roberta lora (from pretrained)"),
}


def reproduce(out: Path, *extra: str, timeout: int = 900) -> str:
    return run_cmd(
        [sys.executable, "-m", "tagtune.cli", "reproduce", "--out", str(out), *extra], timeout, **ENV
    ).stdout


# the README's offline reproduction, which this file runs as written (README.md skips it for that reason)
README_LINE, README_GRID = readme_block("tagtune reproduce --models synthetic:bert synthetic:roberta")


def test_the_grid_is_the_readme_command():
    assert shlex.split(README_GRID.replace("\\\n", " ")) == ["tagtune", "reproduce", *GRID]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("reproduce")
    first = run_readme_block(README_LINE, README_GRID, cwd, **ENV).stdout
    out = cwd / "outputs" / "reproduce"  # the command's default --out, in the folder it ran in
    runs = sorted(p.parent for p in (out / "runs").glob("*/results.json"))
    mtimes = {p: (p / "results.json").stat().st_mtime_ns for p in runs}
    second = reproduce(out, *GRID)
    return {"out": out, "first": first, "second": second, "runs": runs, "mtimes": mtimes}


def md_table(md: str, heading_start: str) -> list[list[str]]:
    """Rows of the first Markdown table under the heading that starts with ``heading_start``."""
    part = md[md.index("### " + heading_start) :].split("\n### ", 1)[0]
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in part.splitlines() if line.startswith("|")
    ]
    return rows[2:]


def final(run: Path, key: str) -> float:
    return [e for e in read_json(run / "epochs.json") if e.get(key) is not None][-1][key]


def test_grid_runs_every_cell_over_two_seeds_through_the_recipes(grid):
    runs = grid["runs"]
    assert len(runs) == 8
    assert len(re.findall(r"^\[\d/8\] start: ", grid["first"], re.M)) == 8
    for run in runs:
        cfg = read_json(run / "run_config.json")
        recipe = run.name.split("-")[0]
        assert cfg["recipe"] == recipe and cfg["seed"] in (42, 43)
        assert (cfg["learning_rate"], cfg["per_device_train_batch_size"], cfg["weight_decay"]) == (5e-5, 16, 0.01)
        assert cfg["model_name_or_path"] == "synthetic:" + recipe.split("_")[0]
        assert cfg["run_group"] == "study-ci" and cfg["max_steps"] == 2


def test_rerun_skips_every_finished_run(grid):
    assert len(re.findall(r"^\[\d/8\] skip \(finished\): ", grid["second"], re.M)) == 8
    assert "start:" not in grid["second"] and "resume" not in grid["second"]
    assert {p: (p / "results.json").stat().st_mtime_ns for p in grid["runs"]} == grid["mtimes"]


def test_report_sets_each_epoch_beside_the_study(grid):
    md = (grid["out"] / "report" / "report.md").read_text()
    study = json.loads((ROOT / "src/tagtune/study/seed_report.json").read_text())
    for recipe, (table, cell) in CELLS.items():
        rows = md_table(md, f"Table {table}, ")
        assert f"vs reproduced {cell}" in md
        seeds = [r for r in grid["runs"] if r.name.startswith(recipe + "-")]
        for ep in (1, 2):
            got = [e["accuracy"] for r in seeds for e in read_json(r / "epochs.json") if e["epoch"] == ep]
            row = next(r for r in rows if r[0] == str(ep) and r[1] == "Accuracy")
            m, s, n = mean_std(got)
            ref = study["tables"][table]["rows"][ep - 1]["accuracy"]
            assert row[2:] == [f"{m:.6f} ± {s:.6f} (n=2)", f"{ref:.6f}", f"{m - ref:+.6f}"]
        seqeval = next(r for r in rows if r[0] == "1" and r[1].startswith("F1 (seqeval, study-compatible"))
        macro = next(r for r in rows if r[0] == "1" and r[1] == "Macro-F1 (correct per-tag)")
        assert seqeval[3] != "" and macro[2] != "" and macro[3] == ""  # the study reports no per-tag F1
    assert "parses tags as IOB chunks" in md  # why the seqeval number is flawed


def test_report_compares_table2_label_by_label_and_parameter_counts_exactly(grid):
    md = (grid["out"] / "report" / "report.md").read_text()
    rows = {r[0]: r for r in md_table(md, "Table 2")}
    train = dict(map(tuple, read_json(grid["runs"][0] / "results.json")["label_distribution"]["train"]))
    assert rows["NN"][1:] == ["44657", str(train["NN"]), f"{train['NN'] - 44657:+d}"]
    assert "NNS (not in the study's table)" in rows
    params = {r[0]: r for r in md_table(md, "Parameter counts")}
    lora = read_json(next(r for r in grid["runs"] if r.name.startswith("bert_lora")) / "results.json")
    row = params["bert lora (from pretrained)"]
    assert row[2:4] == ["331,824", f"{lora['trainable_params']:,}"]
    assert row[-1] == "differs (trainable); differs (total); differs (unique)"  # a tiny model is not bert-base


def test_report_has_intervals_and_a_verdict_per_comparison(grid):
    md = (grid["out"] / "report" / "report.md").read_text()
    rows = md_table(md, "Is the difference real?")
    names = {r[0] for r in rows}
    assert names == {
        "LoRA vs full, bert (bert lora (from pretrained))",
        "LoRA vs full, roberta (roberta lora (from pretrained))",
        "RoBERTa vs BERT, full",
        "RoBERTa vs BERT, lora (from pretrained)",
    }
    full = [r for r in grid["runs"] if r.name.startswith("bert_full")]
    lora = [r for r in grid["runs"] if r.name.startswith("bert_lora")]
    iv = welch_interval([final(r, "accuracy") for r in full], [final(r, "accuracy") for r in lora])
    row = next(r for r in rows if r[0].startswith("LoRA vs full, bert") and r[1] == "Accuracy")
    assert row[4] == iv.text() and row[5].startswith("Welch t-interval over seeds (n=2, 2")
    assert row[6] == "+0.0003"  # the study's LoRA − full accuracy at its last epoch: 0.974660 − 0.974384
    verdicts = md.split("### Verdicts", 1)[1].strip().splitlines()
    assert len(verdicts) == 4
    for line in verdicts:
        assert re.search(r"Verdict \(accuracy\): (holds|does not hold|partly|undecided): ", line), line


def test_wandb_runs_share_the_group_and_the_summary_holds_the_report_tables(grid):
    groups = {read_run(f).group for r in grid["runs"] for f in find_run_files(r / "wandb")}
    assert groups == {"study-ci"}
    files = find_run_files(grid["out"] / "report" / "wandb")
    assert len(files) == 2  # the rerun logged the report again, to the same summary run (resumed by its id)
    assert {read_run(f).run_id for f in files} == {"study-ci-study-summary"}
    run = read_run(max(files, key=lambda f: f.stat().st_mtime_ns))
    assert (run.group, run.job_type, run.name) == ("study-ci", "study-report", "study-ci-study-summary")
    logged = run.history[-1]
    sections = json.loads((grid["out"] / "report" / "study_comparison.json").read_text())
    sig = next(s for s in sections if s.get("title") == "Is the difference real?")
    table = json.loads((run.files_dir / logged["study/significance"]["path"]).read_text())
    assert table["columns"] == sig["header"] and table["data"] == sig["rows"]
    verdicts = json.loads((run.files_dir / logged["study/verdicts"]["path"]).read_text())
    assert [v for (v,) in verdicts["data"]] == sections[-1]["verdicts"]


def test_dry_run_prints_the_plan_and_a_sourced_estimate(tmp_path, grid):
    fresh = reproduce(tmp_path / "fresh", "--dry-run", "--seeds", "2", "--lora_init", "both")
    assert "reproduce: 12 runs" in fresh and fresh.count("[new] ") == 12
    assert "accelerate.commands.launch --config_file" in fresh and "single_t4_fp16.yaml" in fresh
    assert "bert_full-bert-base-cased-seed42: 2448 steps x " in fresh  # 3 epochs x ceil(13,054 / 16)
    assert "assumed, not measured" in fresh and "estimated time left: " in fresh
    assert not (tmp_path / "fresh").exists()  # a dry run writes nothing
    done = reproduce(grid["out"], *GRID, "--dry-run")
    assert done.count("[finished] ") == 8 and "estimated time left: 0.00 GPU-hours" in done


def test_interrupted_reproduction_resumes_and_lora_starts_from_the_full_run(tmp_path):
    out = tmp_path / "interrupted"
    args = [
        "--models",
        "synthetic:bert",
        "--dataset_name",
        "synthetic:pos",
        "--seeds",
        "1",
        "--lora_init",
        "from_full_run",
        "--max_steps",
        "24",
        "--max_train_samples",
        "256",
        "--max_eval_samples",
        "16",
        "--checkpointing_steps",
        "4",
        "--accelerate_config",
        "none",
    ]
    cmd = [sys.executable, "-m", "tagtune.cli", "reproduce", "--out", str(out), *args]
    full = out / "runs" / "bert_full-synthetic-bert-seed42"
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=subprocess_env(**ENV), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while not list_checkpoints(full) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert rc == PREEMPTED_EXIT_CODE, log[-3000:]
    assert "interrupted (SIGTERM) during bert_full-synthetic-bert-seed42" in log
    assert not (full / "results.json").exists() and list_checkpoints(full)
    step = list_checkpoints(full)[-1][0]
    assert 4 <= step < 24

    again = reproduce(out, *args)
    assert f"[1/2] resume from checkpoint step-{step}: bert_full-synthetic-bert-seed42" in again
    assert "[2/2] start: bert_lora-synthetic-bert-from_full_run-seed42" in again
    res = read_json(full / "results.json")
    assert res["global_steps"] == 24 and res["resumed_from"].endswith(f"step-{step}")
    lora = out / "runs" / "bert_lora-synthetic-bert-from_full_run-seed42"
    assert read_json(lora / "run_config.json")["model_name_or_path"] == str(full / "model")
    md = (out / "report" / "report.md").read_text()
    assert "Table 4, BERT + LoRA vs reproduced bert lora (from the full run)" in md
    row = next(r for r in md_table(md, "Is the difference real?") if r[1] == "Accuracy")
    assert row[5] == "paired bootstrap over 16 test sentences"  # one seed: resampled test sentences
    assert "Verdict (accuracy): " in md


def test_report_compare_study_flag_gives_the_same_comparison(grid, tmp_path):
    from tagtune.cli import main as cli_main

    out = tmp_path / "rep"
    assert cli_main(["report", *map(str, grid["runs"]), "--out", str(out), "--compare-study"]) == 0
    md = (out / "report.md").read_text()
    assert md.index("## Comparison") < md.index("## Comparison with the study")  # appended to the usual report
    ours = md_table(md, "Is the difference real?")
    assert ours == md_table((grid["out"] / "report" / "report.md").read_text(), "Is the difference real?")
    assert not (out / "wandb").exists()  # no --wandb-group: no summary run
