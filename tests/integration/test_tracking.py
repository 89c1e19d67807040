"""Trackers read back: the offline W&B run file (history, summary, config, media), a 2-process
CPU DDP run making exactly one W&B run, TensorBoard event files, and the tracker choice rules
(auto -> offline with a log line, a missing package is a clear error)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ROOT, accelerate_launch, read_json

from tagtune import tracking
from tagtune.errors import ConfigError, DataError
from tagtune.wandb_offline import find_run_files, read_run

TINY = [
    "--max_train_samples",
    "96",
    "--max_eval_samples",
    "48",
    "--logging_steps",
    "1",
    "--checkpoint_epoch_end",
    "false",
]


def _smoke_cls():
    spec = importlib.util.spec_from_file_location("smoke_recipe_for_tracking", ROOT / "recipes" / "smoke.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Smoke


def _train(args: list[str]) -> dict:
    from tagtune import main

    return main(_smoke_cls(), args)


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """A real 2-process CPU DDP LoRA run, 2 epochs x 4 steps, --report_to auto with no W&B login and
    WANDB_MODE unset: every W&B check below reads back this one run."""
    root = tmp_path_factory.mktemp("wandb_ddp")
    out = root / "run"
    empty_netrc = root / "empty_netrc"
    empty_netrc.write_text("")
    proc = accelerate_launch(
        "recipes/smoke.py",
        [
            "--output_dir",
            str(out),
            "--report_to",
            "auto",
            "--method",
            "lora",
            "--num_train_epochs",
            "2",
            "--max_train_samples",
            "128",
            "--max_eval_samples",
            "48",
            "--logging_steps",
            "1",
            "--per_device_train_batch_size",
            "16",
            "--checkpoint_epoch_end",
            "false",
        ],
        num_processes=2,
        cpu_ddp=True,
        timeout=400,
        WANDB_MODE="",
        WANDB_API_KEY="",
        NETRC=str(empty_netrc),
        WANDB_CONFIG_DIR=str(root / "wandb_config"),
    )
    files = find_run_files(root)
    assert len(files) == 1, files  # rank 1 made no run of its own
    return SimpleNamespace(
        out=out,
        root=root,
        stdout=proc.stdout,
        results=read_json(out / "results.json"),
        run=read_run(files[0]),
        epochs=read_json(out / "epochs.json"),
        history=[json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()],
    )


def test_auto_without_login_logs_offline_and_says_where(wandb_run):
    lines = [m for m in wandb_run.stdout.splitlines() if "wandb offline: run written to " in m]
    assert len(lines) == 1, wandb_run.stdout[-3000:]  # once: only the main process logs
    where = Path(re.search(r"wandb offline: run written to (\S+)", lines[0]).group(1))
    assert where == wandb_run.run.path.parent
    assert where.parent == wandb_run.out / "wandb"
    assert f"wandb sync {where}" in lines[0] and f"wandb leet {where.parent}" in lines[0]
    # wandb's own viewer reads the run: `wandb leet inspect --summary --json`, as the README tells users
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(where.parent)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    state = json.loads(proc.stdout)
    assert state["run_id"] == wandb_run.run.run_id and state["exit_code"] == 0
    assert state["summary"]["final/accuracy"] == wandb_run.results["final"]["accuracy"]


def test_history_holds_every_step_and_each_epoch(wandb_run):
    run, hist = wandb_run.run, wandb_run.history
    steps = wandb_run.results["global_steps"]
    assert steps == 8 and [h["step"] for h in hist] == list(range(1, steps + 1))
    assert len(run.history) == steps  # one W&B row per optimizer step
    for key in ("train_loss", "learning_rate", "grad_norm", "tokens_per_second"):
        assert run.series(f"train/{key}") == {h["step"]: h[key] for h in hist}, key
    assert len(set(run.series("train/train_loss").values())) > 5  # a real curve, not one value repeated
    assert len(wandb_run.epochs) == 2
    for e in wandb_run.epochs:
        row = next(r for r in run.history if r["_step"] == e["step"])
        for key in (
            "accuracy",
            "macro_f1",
            "weighted_f1",
            "macro_precision",
            "macro_recall",
            "seqeval_precision",
            "seqeval_recall",
            "seqeval_f1",
            "eval_loss",
        ):
            assert row[f"eval/{key}"] == e[key], key
        assert row["train/epoch_loss"] == e["train_loss"]
        assert row["time/epoch_s"] == e["epoch_time_s"]
    assert [r["_step"] for r in run.history if "eval/accuracy" in r] == [e["step"] for e in wandb_run.epochs]


def test_summary_holds_parameter_efficiency_memory_and_time(wandb_run):
    s, res = wandb_run.run.summary, wandb_run.results
    for key in (
        "trainable_params",
        "total_params",
        "unique_params",
        "trainable_pct",
        "model_size_bytes",
        "peak_memory_bytes",
        "epoch_times_s",
        "num_processes",
        "distributed_type",
    ):
        assert s[key] == res[key], key
    assert 0 < s["trainable_params"] < s["unique_params"] < s["total_params"]  # LoRA: classifier counted twice
    assert s["trainable_pct"] == pytest.approx(100 * res["trainable_params"] / res["total_params"], abs=1e-4)
    assert s["model_size_bytes"] > 1000
    assert s["time_per_epoch_s"] == pytest.approx(np.mean(res["epoch_times_s"]))
    assert s["final/accuracy"] == wandb_run.epochs[-1]["accuracy"]
    assert s["best/accuracy"] == max(e["accuracy"] for e in wandb_run.epochs)


def test_config_names_and_topology(wandb_run):
    run = wandb_run.run
    assert (run.name, run.group, run.job_type, run.project) == (
        "smoke-synthetic-bert-lora",
        "synthetic-bert",
        "lora",
        "tagtune",
    )
    assert set(run.tags) == {"smoke", "synthetic-bert", "lora"}
    c = run.config
    assert (c["recipe"], c["method"], c["lora_r"], c["learning_rate"]) == ("smoke", "lora", 8, 3e-3)
    assert (c["num_processes"], c["distributed_type"], c["mixed_precision"]) == (2, "MULTI_CPU", "no")
    assert (wandb_run.results["num_processes"], wandb_run.results["distributed_type"]) == (2, "MULTI_CPU")
    assert c["trainable_params"] == wandb_run.results["trainable_params"]
    assert run.exit_code == 0


def test_final_confusion_matrix_and_tables(wandb_run):
    run, res = wandb_run.run, wandb_run.results
    last = run.history[-1]
    assert last["_step"] == res["global_steps"]
    img = last["eval/confusion_matrix"]
    assert img["_type"] == "image-file" and img["width"] >= 400 and img["height"] >= 400
    png = run.files_dir / img["path"]
    from matplotlib.image import imread

    pixels = imread(png)
    assert pixels.shape[:2] == (img["height"], img["width"]) and pixels.std() > 0.05

    # W&B's native confusion-matrix chart: its table holds exactly the run's counts
    chart = run.config["_wandb"]["visualize"]["eval/confusion_matrix_chart"]
    assert chart["panel_config"]["panelDefId"] == "wandb/confusion_matrix/v1"
    table = json.loads((run.files_dir / last["eval/confusion_matrix_chart_table"]["path"]).read_text())
    labels, matrix = res["confusion_matrix"]["labels"], res["confusion_matrix"]["matrix"]
    got = {(a, p): n for a, p, n in table["data"]}
    assert got == {(labels[i], labels[j]): matrix[i][j] for i in range(len(labels)) for j in range(len(labels))}
    assert sum(got.values()) == res["eval_words"]

    per_tag = json.loads((run.files_dir / last["eval/per_tag"]["path"]).read_text())
    want = wandb_run.epochs[-1]["per_tag"]
    assert per_tag["columns"] == ["Tag", "Precision", "Recall", "F1", "Support"]
    assert {r[0]: (r[1], r[2], r[3], r[4]) for r in per_tag["data"]} == {
        t: (m["precision"], m["recall"], m["f1"], m["support"]) for t, m in want.items()
    }
    epochs = json.loads((run.files_dir / last["eval/epochs"]["path"]).read_text())
    assert [r[0] for r in epochs["data"]] == [1, 2]
    assert [r[epochs["columns"].index("Accuracy")] for r in epochs["data"]] == [
        e["accuracy"] for e in wandb_run.epochs
    ]
    assert [r[epochs["columns"].index("Time (s)")] for r in epochs["data"]] == res["epoch_times_s"]


def test_offline_reader_detects_corruption_and_tolerates_a_cut_file(wandb_run, tmp_path):
    data = bytearray(wandb_run.run.path.read_bytes())
    cut = tmp_path / "cut.wandb"
    cut.write_bytes(bytes(data[: len(data) // 2]))
    partial = read_run(cut)  # a killed run: what was written before the cut is still read
    assert 0 < len(partial.history) < len(wandb_run.run.history)
    assert partial.history == wandb_run.run.history[: len(partial.history)]
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / "bad.wandb"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch") as err:
        read_run(bad)
    assert str(bad) in str(err.value)


def test_two_process_ddp_made_exactly_one_wandb_run(wandb_run):
    assert (wandb_run.results["num_processes"], wandb_run.results["distributed_type"]) == (2, "MULTI_CPU")
    assert len(list(wandb_run.root.glob("**/offline-run-*"))) == 1
    assert len(list(wandb_run.root.glob("**/*.wandb"))) == 1
    assert len(wandb_run.run.history) == wandb_run.results["global_steps"]  # each step logged once, not once per rank


def test_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb_run"
    res = _train(
        [
            "--output_dir",
            str(out),
            "--report_to",
            "tensorboard",
            "--model_name_or_path",
            "synthetic:roberta",
            "--num_train_epochs",
            "1",
            *TINY,
        ]
    )
    hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    logdirs = {p.parent for p in (out / "tb").glob("**/events.out.tfevents.*")}
    ea = EventAccumulator(str(out / "tb" / "tagtune"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    loss = {e.step: e.value for e in ea.Scalars("train/train_loss")}
    assert sorted(loss) == [h["step"] for h in hist] == list(range(1, res["global_steps"] + 1))
    assert [loss[h["step"]] for h in hist] == pytest.approx([h["train_loss"] for h in hist], rel=1e-6)
    acc = ea.Scalars("eval/accuracy")
    assert [(e.step, e.value) for e in acc] == [
        (res["global_steps"], pytest.approx(res["final"]["accuracy"], rel=1e-6))
    ]
    assert ea.Scalars("summary/trainable_params")[-1].value == res["trainable_params"]
    assert ea.Scalars("summary/peak_memory_bytes")[-1].value == pytest.approx(res["peak_memory_bytes"], rel=1e-6)
    image = ea.Images("eval/confusion_matrix")[-1]
    assert image.width >= 400 and image.height >= 400 and len(image.encoded_image_string) > 10_000
    text = ea.Tensors("eval/per_tag/text_summary")[-1].tensor_proto.string_val[0].decode()
    for tag, m in read_json(out / "epochs.json")[-1]["per_tag"].items():
        assert f"| {tag} | {m['precision']:.6f} |" in text
    assert out / "tb" / "tagtune" in logdirs


class _HidePackages:
    """A meta-path finder that makes packages look uninstalled (find_spec -> None)."""

    def __init__(self, hidden: set[str], finders: list) -> None:
        self.hidden, self.finders = hidden, finders

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.hidden:
            return None
        for f in self.finders:
            spec = getattr(f, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                return spec
        return None

    def find_distributions(self, *args, **kwargs):  # importlib.metadata asks meta_path finders too
        for f in self.finders:
            if hasattr(f, "find_distributions"):
                yield from f.find_distributions(*args, **kwargs)

    def invalidate_caches(self) -> None:
        for f in self.finders:
            getattr(f, "invalidate_caches", lambda: None)()


def _hide(monkeypatch, package: str) -> None:
    for mod in [m for m in sys.modules if m == package]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(sys, "meta_path", [_HidePackages({package}, list(sys.meta_path))])
    assert importlib.util.find_spec(package) is None


@pytest.mark.parametrize("package", ["wandb", "tensorboard"])
def test_requested_tracker_without_its_package_is_a_clear_error(package, tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, package)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        _train(["--output_dir", str(out), "--report_to", package])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"tracker '{package}' requested but the '{package}' package is not installed" in err
    assert "report_to" in err and f"pip install {package}" in err
    assert not out.exists()  # stopped before writing anything


def test_auto_picks_wandb_only_when_installed_and_online_only_when_logged_in(tmp_path, monkeypatch):
    for k in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert tracking.resolve_report_to("auto") == "wandb" and "WANDB_MODE" not in os.environ  # logged in: online

    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")  # a login for another host does not count
    assert tracking.resolve_report_to("auto") == "wandb" and os.environ["WANDB_MODE"] == "offline"

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_report_to("auto") == "wandb" and "WANDB_MODE" not in os.environ

    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's explicit mode is kept
    monkeypatch.delenv("WANDB_API_KEY")
    assert tracking.resolve_report_to("auto") == "wandb" and os.environ["WANDB_MODE"] == "disabled"

    _hide(monkeypatch, "wandb")
    assert tracking.resolve_report_to("auto") is None
    assert tracking.resolve_report_to("none") is None
    with pytest.raises(ConfigError, match="not installed"):
        tracking.resolve_report_to("wandb")


def test_sweep_config_launches_a_valid_recipe_command(tmp_path):
    """Expand the example sweep exactly as `wandb agent` does, run its shell line with a stand-in
    `accelerate`, and parse the resulting flags with the recipe: every swept field is a real field."""
    import subprocess

    import yaml
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    from tagtune.config import parse

    sweep = yaml.safe_load((ROOT / "recipes" / "sweeps" / "bert_lora_lr_rank.yaml").read_text())
    trial = {
        name: {"value": spec["values"][-1] if "values" in spec else spec["value"]}
        for name, spec in sweep["parameters"].items()
    }
    sweep_vars = sweep_utils.create_sweep_command_args({"args": trial})
    sweep_vars["program"] = [sweep["program"]]
    command = []
    for c in sweep_utils.create_sweep_command(list(sweep["command"])):
        command += sweep_vars.get(c[2:-1], []) if c.startswith("${") and c.endswith("}") else [c]
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "accelerate").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (shim / "accelerate").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "WANDB_SWEEP_ID": "sw1", "WANDB_RUN_ID": "run7"}
    argv = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert argv[:2] == ["launch", "recipes/bert_lora.py"]
    assert (ROOT / argv[1]).is_file()

    spec = importlib.util.spec_from_file_location("bert_lora_recipe", ROOT / argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = parse(mod.BertLoRA, argv[2:])
    assert cfg.output_dir == "outputs/sweeps/sw1/run7" and cfg.report_to == "wandb" and cfg.method == "lora"
    for name, v in trial.items():
        assert getattr(cfg, name) == v["value"], name
    assert sweep["metric"]["name"] in tracking.run_summary({}, [{"epoch": 1, "accuracy": 0.5, "macro_f1": 0.4}])
