"""`tagtune report` on real smoke-run directories: tables equal the runs' JSON, PNGs are real
images, confusion matrices are row-normalised, frequency-ordered and legible with 48 tags."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, read_json

from tagtune.cli import main as cli_main
from tagtune.report import confusion_figure, frequency_order, load_run, loss_figure, row_normalised

RUN_FILES = ("results.json", "epochs.json", "history.jsonl", "run_config.json")
TINY = [
    "--num_train_epochs",
    "1",
    "--max_train_samples",
    "96",
    "--max_eval_samples",
    "48",
    "--logging_steps",
    "1",
    "--report_to",
    "none",
    "--checkpoint_epoch_end",
    "false",
]


def _train(out: Path, args: list[str]) -> Path:
    from tagtune import main

    spec = importlib.util.spec_from_file_location("smoke_recipe_for_report", ROOT / "recipes" / "smoke.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    main(mod.Smoke, ["--output_dir", str(out), *TINY, *args])
    return out


@pytest.fixture(scope="module")
def report(smoke_run, tmp_path_factory):
    """The shared smoke run (BERT full) copied as its four JSON files only (no model, no tracker files),
    plus tiny BERT-LoRA and RoBERTa-full runs, reported together."""
    root = tmp_path_factory.mktemp("report")
    bert_full = root / "bert_full"
    bert_full.mkdir()
    for name in RUN_FILES:
        shutil.copy(smoke_run / name, bert_full / name)
    bert_lora = _train(root / "bert_lora", ["--method", "lora"])
    roberta_full = _train(
        root / "roberta_full", ["--model_name_or_path", "synthetic:roberta", "--save_model", "false"]
    )
    out = root / "out"
    assert cli_main(["report", str(bert_full), str(bert_lora), str(roberta_full), "--out", str(out)]) == 0
    return {"out": out, "md": (out / "report.md").read_text(), "runs": [bert_full, bert_lora, roberta_full]}


def md_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(nearest heading above, header, rows) for every Markdown table."""
    tables, heading, block = [], "", []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if block:
            tables.append((heading, block[0], block[2:]))
            block = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return tables


def table(rep, heading: str, first_col: str):
    found = [(h, rows) for hd, h, rows in md_tables(rep["md"]) if hd == heading and h[0] == first_col]
    assert len(found) == 1, (heading, first_col)
    return found[0]


def test_label_distribution_table_matches_results(report, smoke_run):
    res = read_json(smoke_run / "results.json")
    tables = [(h, rows) for hd, h, rows in md_tables(report["md"]) if hd == "Label distribution"]
    assert len(tables) == 2  # the tiny runs share a smaller data set: each data set gets its own Table 2
    assert "Data of `smoke-synthetic-bert-lora`, `smoke-synthetic-roberta-full`: 96 training sentences" in report["md"]
    header, rows = tables[0]
    assert header == ["Tag", "Train", "Train %", "Eval", "Eval %"]
    train, ev = (
        dict(map(tuple, res["label_distribution"]["train"])),
        dict(map(tuple, res["label_distribution"]["eval"])),
    )
    assert [r[0] for r in rows] == [t for t, _ in res["label_distribution"]["train"]]  # sorted by count
    for tag, n_train, p_train, n_eval, p_eval in rows:
        assert int(n_train) == train[tag] and int(n_eval) == ev.get(tag, 0)
        assert float(p_train) == pytest.approx(100 * train[tag] / sum(train.values()), abs=0.005)
        assert float(p_eval) == pytest.approx(100 * ev.get(tag, 0) / sum(ev.values()), abs=0.005)
    csv_rows = (report["out"] / "label_distribution.csv").read_text().splitlines()
    assert len(csv_rows) == len(rows) + 1 and csv_rows[1].split(",")[:2] == rows[0][:2]


def test_per_epoch_tables_match_epochs_json(report):
    keys = [
        "epoch",
        "train_loss",
        "eval_loss",
        "seqeval_precision",
        "seqeval_recall",
        "seqeval_f1",
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "weighted_f1",
    ]
    for run_dir in report["runs"]:
        run = load_run(run_dir)
        header, rows = table(report, run.label, "Epoch")
        assert header[:7] == ["Epoch", "Training Loss", "Validation Loss", "Precision", "Recall", "F1", "Accuracy"]
        epochs = read_json(run_dir / "epochs.json")
        assert len(rows) == len(epochs) > 0
        for row, e in zip(rows, epochs):
            assert [float(c) for c in row] == pytest.approx([e[k] for k in keys], abs=5e-7)


def test_comparison_and_deltas_match_results(report):
    header, rows = table(report, "Comparison", "Run")
    results = {load_run(d).label: read_json(d / "results.json") for d in report["runs"]}
    assert [r[0] for r in rows] == list(results)
    col = {h: i for i, h in enumerate(header)}
    for row in rows:
        res = results[row[0]]
        ep = res["epochs"]
        best = max(ep, key=lambda e: e["accuracy"])
        assert row[col["Best accuracy (epoch)"]] == f"{best['accuracy']:.4f} ({best['epoch']})"
        assert float(row[col["Final accuracy"]]) == pytest.approx(res["final"]["accuracy"], abs=5e-5)
        assert float(row[col["Final macro-F1"]]) == pytest.approx(res["final"]["macro_f1"], abs=5e-5)
        assert float(row[col["Final seqeval F1*"]]) == pytest.approx(res["final"]["seqeval_f1"], abs=5e-5)
        assert row[col["Trainable params"]] == f"{res['trainable_params']:,}"
        assert float(row[col["Trainable %"]]) == pytest.approx(res["trainable_pct"], abs=5e-5)
        assert float(row[col["Time/epoch (s)"]]) == pytest.approx(np.mean(res["epoch_times_s"]), abs=0.05)
        assert float(row[col["Peak memory (MiB)"]]) == pytest.approx(res["peak_memory_bytes"] / 2**20, abs=0.05)
    assert float(rows[1][col["Trainable %"]]) < 10 < float(rows[0][col["Trainable %"]])  # LoRA vs full

    csv = (report["out"] / "comparison.csv").read_text().splitlines()
    assert len(csv) == len(rows) + 1 and csv[1].startswith(rows[0][0])

    dh, deltas = table(report, "Comparison", "Comparison")
    full, lora, roberta = list(results.values())
    by_name = {r[0].split(":")[0]: r for r in deltas}
    assert set(by_name) == {"lora vs full (synthetic-bert)", "roberta vs bert (full)"}
    d = by_name["lora vs full (synthetic-bert)"]
    assert float(d[dh.index("Δ final accuracy")]) == pytest.approx(
        lora["final"]["accuracy"] - full["final"]["accuracy"], abs=1e-4
    )
    assert float(d[dh.index("Δ trainable % (points)")]) == pytest.approx(
        lora["trainable_pct"] - full["trainable_pct"], abs=1e-4
    )
    d = by_name["roberta vs bert (full)"]
    assert float(d[dh.index("Δ final macro-F1")]) == pytest.approx(
        roberta["final"]["macro_f1"] - full["final"]["macro_f1"], abs=1e-4
    )
    ratio = np.mean(roberta["epoch_times_s"]) / np.mean(full["epoch_times_s"])
    assert float(d[dh.index("Time/epoch ratio")].rstrip("x")) == pytest.approx(ratio, abs=0.006)

    eh, eff = table(report, "Parameter efficiency", "Run")
    assert [r[eh.index("Unique params")] for r in eff] == [f"{r['unique_params']:,}" for r in results.values()]


def test_pngs_exist_and_are_real_images(report):
    from matplotlib.image import imread

    out = report["out"]
    pngs = sorted(out.glob("*.png"))
    assert sorted(p.name.split("_")[0] for p in pngs) == ["confusion"] * 3 + ["loss"] * 3
    for p in pngs:
        assert f"]({p.name})" in report["md"]  # linked from the report
        img = imread(p)
        assert img.shape[0] >= 300 and img.shape[1] >= 500, (p, img.shape)
        assert p.stat().st_size > 10_000
        flat = img[..., :3].reshape(-1, 3)
        assert flat.std(axis=0).max() > 0.05  # not every pixel the same
        assert len(np.unique(flat[:: max(1, len(flat) // 20000)], axis=0)) > 20


def test_confusion_matrix_rows_normalised_and_frequency_ordered(smoke_run):
    res = read_json(smoke_run / "results.json")
    labels, m = res["confusion_matrix"]["labels"], np.array(res["confusion_matrix"]["matrix"])
    order = frequency_order(labels, m)
    support = m.sum(axis=1)
    assert [support[i] for i in order] == sorted(support[order], reverse=True)
    assert labels[order[0]] == max(res["label_distribution"]["eval"], key=lambda kv: kv[1])[0]
    norm = row_normalised(m)
    assert np.allclose(norm[support > 0].sum(axis=1), 1.0)
    fig = confusion_figure(labels, m, "t")
    shown = fig.axes[0].images[0].get_array()
    assert np.allclose(shown, norm[np.ix_(order, order)])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [labels[i] for i in order]


def test_loss_curve_plots_the_logged_losses(smoke_run):
    hist = [json.loads(x) for x in (smoke_run / "history.jsonl").read_text().splitlines()]
    epochs = read_json(smoke_run / "epochs.json")
    lines = {ln.get_label(): ln for ln in loss_figure(hist, epochs).axes[0].get_lines()}
    train, val = lines["training loss (per logged step)"], lines["validation loss (per epoch)"]
    assert list(train.get_xdata()) == [h["step"] for h in hist]
    assert list(train.get_ydata()) == [h["train_loss"] for h in hist]
    assert list(val.get_xdata()) == [e["step"] for e in epochs]
    assert list(val.get_ydata()) == [e["eval_loss"] for e in epochs]


def _overlaps(boxes) -> bool:
    return any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))


def test_confusion_png_legible_with_48_tags(tmp_path):
    from matplotlib.image import imread

    from tagtune.report import save_png

    rng = np.random.default_rng(0)
    tags = [f"T{i:02d}$" for i in range(48)]
    support = (4000 * np.exp(-np.arange(48) / 8)).astype(int) + 3
    m = np.zeros((48, 48), dtype=int)
    for i, s in enumerate(support):
        m[i, i] = int(0.9 * s)
        np.add.at(m[i], rng.integers(0, 48, size=5), max(1, (s - m[i, i]) // 5))
    perm = rng.permutation(48)  # labels arrive alphabetically, not by frequency
    shuffled = m[np.ix_(perm, perm)]
    labels = [tags[i] for i in perm]
    fig = confusion_figure(labels, shuffled, "48 tags")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == tags  # most frequent first
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        assert all(t.get_fontsize() >= 6 for t in ticks)
        assert not _overlaps([t.get_window_extent(renderer) for t in ticks])
    cell_px = ax.get_window_extent(renderer).height / 48
    assert cell_px >= 1.3 * max(t.get_window_extent(renderer).height for t in ax.get_yticklabels())
    png = save_png(fig, tmp_path / "cm48.png")
    img = imread(png)
    assert min(img.shape[:2]) >= 48 * 20
    assert img[..., :3].std() > 0.05
