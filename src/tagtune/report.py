"""The study's tables and figures from finished run directories, with no tracker and no network.

Usage:  tagtune report RUN_DIR [RUN_DIR ...] --out DIR

Writes DIR/report.md (label distribution = the study's Table 2, one per-epoch table per run =
Tables 3-6, parameter efficiency, a side-by-side comparison with LoRA-vs-full and RoBERTa-vs-BERT
deltas), DIR/comparison.csv, DIR/label_distribution.csv, and per run a row-normalised confusion
matrix (Figures 1-2) and a loss curve as PNG. Reads only results.json, epochs.json, history.jsonl
and run_config.json of each run (README "Outputs").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .config import method_name
from .errors import DataError
from .outputs import (
    PER_TAG_HEADER,
    atomic_write_text,
    csv_text,
    epoch_columns,
    epoch_rows,
    markdown_table,
    per_tag_rows,
    table_note,
)

# ----------------------------------------------------------------------------------------
# run directories
# ----------------------------------------------------------------------------------------


@dataclass
class Run:
    dir: Path
    results: dict[str, Any]
    epochs: list[dict[str, Any]]  # epochs.json rows (with per_tag) or results.json's
    history: list[dict[str, Any]]  # history.jsonl rows
    config: dict[str, Any]  # run_config.json ({} when absent)
    label: str = ""

    @property
    def model(self) -> str:
        return str(self.results.get("model") or self.config.get("model_name_or_path") or "?")

    @property
    def method(self) -> str:
        """'full', 'lora', 'lora+dora', 'ia3', ...: the adapter a run trained, from its config."""
        c = self.config
        base = str(self.results.get("method") or c.get("method") or "?")
        if base in ("lora", "peft"):
            return method_name(
                base, c.get("peft_method", "lora"), c.get("use_dora", False), c.get("use_rslora", False)
            )
        return base

    @property
    def family(self) -> str:
        return model_family(self.model)

    @property
    def data_key(self) -> tuple:
        c = self.config
        return (c.get("dataset_name"), c.get("train_file"), c.get("validation_file"), self.results.get("eval_split"))

    @property
    def evaluated(self) -> list[dict[str, Any]]:
        return [e for e in self.epochs if e.get("accuracy") is not None]


def short_name(model: str) -> str:
    return Path(model.rstrip("/")).name.replace("synthetic:", "synthetic-")


def model_family(model: str) -> str:
    """Model family for the RoBERTa-vs-BERT comparison (checked longest name first)."""
    name = model.lower()
    for fam in ("roberta", "deberta", "distilbert", "bert"):
        if fam in name:
            return fam
    return short_name(model)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(
            f"cannot parse JSON: {err}", where=str(path), fix="re-run the training that wrote it"
        ) from None


def _read_history(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.is_file():
        return rows
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"cannot parse JSON line: {err}", where=f"{path}:{i}") from None
    return rows


def load_run(run_dir: str | os.PathLike) -> Run:
    d = Path(run_dir)
    res_p = d / "results.json"
    if not res_p.is_file():
        inner = sorted(str(p.parent) for p in d.glob("*/results.json")) if d.is_dir() else []
        fix = (
            f"pass the run directories themselves, e.g. {' '.join(inner[:4])}"
            if inner
            else "pass a finished run's output_dir (results.json is written at the end of training)"
        )
        raise DataError("no results.json: not a finished tagtune run directory", where=str(d), fix=fix)
    results = _read_json(res_p)
    epochs = _read_json(d / "epochs.json") if (d / "epochs.json").is_file() else list(results.get("epochs", []))
    config = _read_json(d / "run_config.json") if (d / "run_config.json").is_file() else {}
    run = Run(d, results, epochs, _read_history(d / "history.jsonl"), config)
    run.label = (
        config.get("run_name")
        or f"{results.get('recipe') or config.get('recipe', 'run')}-{short_name(run.model)}-{run.method}"
    )
    return run


def load_runs(run_dirs: Sequence[str | os.PathLike]) -> list[Run]:
    runs = [load_run(d) for d in run_dirs]
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
    for r in runs:  # two runs of one recipe (e.g. two seeds): tell them apart by folder
        if seen[r.label] > 1:
            r.label = f"{r.label} ({r.dir.name})"
    return runs


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


# ----------------------------------------------------------------------------------------
# figures (matplotlib's object API on the Agg canvas: no display, no global pyplot state)
# ----------------------------------------------------------------------------------------


def _figure(width: float, height: float, dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def frequency_order(
    labels: Sequence[str], matrix: np.ndarray, train_counts: Optional[dict[str, int]] = None
) -> list[int]:
    """Indices of the tags seen in gold or predictions, most frequent gold tag first
    (ties: training frequency, then name)."""
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    train_counts = train_counts or {}
    keep = [i for i in range(len(labels)) if support[i] > 0 or predicted[i] > 0]
    return sorted(keep, key=lambda i: (-support[i], -train_counts.get(labels[i], 0), labels[i]))


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    return np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)


def confusion_figure(
    labels: Sequence[str], matrix: Any, title: str = "", train_counts: Optional[dict[str, int]] = None
):
    """Row-normalised confusion matrix (true tag x predicted tag), tags ordered by frequency.
    The canvas grows with the tag count so 48 tags keep readable ticks."""
    m = np.asarray(matrix, dtype=np.int64)
    order = frequency_order(labels, m, train_counts)
    m = m[np.ix_(order, order)]
    tags = [labels[i] for i in order]
    norm = row_normalised(m)
    n = max(len(tags), 1)
    side = max(5.0, 0.24 * n + 2.2)
    fig = _figure(side + 1.0, side, dpi=120)
    ax = fig.add_axes((1.6 / (side + 1.0), 1.4 / side, (side - 2.0) / (side + 1.0), (side - 2.2) / side))
    from matplotlib.colors import PowerNorm

    # square-root colour scale: 1-2 % confusions (most POS errors) stay visible beside a 0.97 diagonal
    img = ax.imshow(
        norm, cmap="Blues", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), interpolation="nearest", aspect="equal"
    )
    tick_size = 9 if n <= 20 else 7
    ax.set_xticks(range(len(tags)), tags, rotation=90, fontsize=tick_size)
    ax.set_yticks(range(len(tags)), tags, fontsize=tick_size)
    ax.set_xlabel("predicted tag")
    ax.set_ylabel("true tag")
    ax.set_title(title or "confusion matrix (rows normalised)", fontsize=10)
    # faint grid between cells: off-diagonal errors stay findable in a 48x48 matrix
    ax.set_xticks(np.arange(-0.5, len(tags), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(tags), 1), minor=True)
    ax.grid(which="minor", color="#dddddd", linewidth=0.3)
    ax.tick_params(which="minor", length=0)
    if n <= 16:
        for i in range(len(tags)):
            for j in range(len(tags)):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{norm[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    cax = fig.add_axes(((side - 0.2) / (side + 1.0), 1.4 / side, 0.25 / (side + 1.0), (side - 2.2) / side))
    fig.colorbar(img, cax=cax, label="share of the true tag's words (square-root scale)")
    return fig


def loss_figure(history: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]], title: str = ""):
    """Training loss per logged step, and per epoch the mean training and the validation loss."""
    fig = _figure(8.0, 4.5, dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    steps = [h["step"] for h in history if h.get("train_loss") is not None]
    losses = [h["train_loss"] for h in history if h.get("train_loss") is not None]
    if steps:
        ax.plot(steps, losses, color="#1f77b4", linewidth=1.0, alpha=0.8, label="training loss (per logged step)")
    ep = [e for e in epochs if e.get("step") is not None]
    if ep:
        ax.plot(
            [e["step"] for e in ep],
            [e["train_loss"] for e in ep],
            "s--",
            color="#1f77b4",
            markersize=5,
            label="training loss (epoch mean)",
        )
    ev = [e for e in ep if e.get("eval_loss") is not None]
    if ev:
        ax.plot(
            [e["step"] for e in ev],
            [e["eval_loss"] for e in ev],
            "o-",
            color="#d62728",
            markersize=6,
            label="validation loss (per epoch)",
        )
        for e in ev:
            ax.annotate(
                f"ep {e['epoch']}", (e["step"], e["eval_loss"]), textcoords="offset points", xytext=(4, 6), fontsize=8
            )
    values = [v for v in losses + [e["train_loss"] for e in ep] + [e["eval_loss"] for e in ev] if v and v > 0]
    if values and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title or "loss", fontsize=10)
    ax.grid(alpha=0.3)
    if steps or ep:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    """Write atomically: a crash never leaves a half-written PNG behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a figure is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def figure_rgb(fig: Any) -> np.ndarray:
    """The rendered figure as an HxWx3 uint8 array (for tracker image logging)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


# ----------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _mib(v: Optional[float]) -> str:
    return "" if v is None else f"{v / 2**20:.1f}"


def human_bytes(v: Optional[float]) -> str:
    if v is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return ""


def label_distribution_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Tag, train count, train %, eval count, eval %: sorted by training count (eval count for eval-only tags)."""
    dist = results.get("label_distribution", {})
    train, ev = dict(map(tuple, dist.get("train", []))), dict(map(tuple, dist.get("eval", [])))
    nt, ne = sum(train.values()) or 1, sum(ev.values()) or 1
    tags = sorted(set(train) | set(ev), key=lambda t: (-train.get(t, 0), -ev.get(t, 0), t))
    return [
        [t, train.get(t, 0), f"{100 * train.get(t, 0) / nt:.2f}", ev.get(t, 0), f"{100 * ev.get(t, 0) / ne:.2f}"]
        for t in tags
    ]


LABEL_DIST_HEADER = ["Tag", "Train", "Train %", "Eval", "Eval %"]


def _best(run: Run, key: str) -> tuple[Optional[float], Optional[int]]:
    ev = [e for e in run.evaluated if e.get(key) is not None]
    if not ev:
        return None, None
    b = max(ev, key=lambda e: e[key])
    return b[key], b["epoch"]


def _final(run: Run, key: str) -> Optional[float]:
    ev = run.evaluated
    return ev[-1].get(key) if ev else None


def time_per_epoch(run: Run) -> Optional[float]:
    t = run.results.get("epoch_times_s") or []
    return float(np.mean(t)) if t else None


COMPARISON_HEADER = [
    "Run",
    "Model",
    "Method",
    "Primary metric",
    "Best primary (epoch)",
    "Final primary",
    "Best accuracy (epoch)",
    "Final accuracy",
    "Best macro-F1 (epoch)",
    "Final macro-F1",
    "Final seqeval F1*",
    "Trainable params",
    "Trainable %",
    "Time/epoch (s)",
    "Peak memory (MiB)",
]


def comparison_row(run: Run) -> list[str]:
    r = run.results
    ba, bae = _best(run, "accuracy")
    bm, bme = _best(run, "macro_f1")
    bp, bpe = _best(run, primary_name(run))
    return [
        run.label,
        short_name(run.model),
        run.method,
        primary_name(run),
        f"{_f(bp)} ({bpe})" if bp is not None else "",
        _f(_final(run, primary_name(run))),
        f"{_f(ba)} ({bae})" if ba is not None else "",
        _f(_final(run, "accuracy")),
        f"{_f(bm)} ({bme})" if bm is not None else "",
        _f(_final(run, "macro_f1")),
        _f(_final(run, "seqeval_f1")),
        f"{r['trainable_params']:,}" if "trainable_params" in r else "",
        _f(r.get("trainable_pct")),
        _f(time_per_epoch(run), 1),
        _mib(r.get("peak_memory_bytes")),
    ]


def primary_name(run: Run) -> str:
    """The metric the run is judged by (entity_f1 for NER/chunking, accuracy for POS; older runs: accuracy)."""
    ev = run.evaluated
    return str(ev[-1].get("primary_metric", "accuracy")) if ev else ""


DELTA_HEADER = [
    "Comparison",
    "Δ final primary",
    "Δ final accuracy",
    "Δ final macro-F1",
    "Δ final seqeval F1*",
    "Δ best accuracy",
    "Δ trainable % (points)",
    "Time/epoch ratio",
    "Peak memory ratio",
]


def _d(a: Optional[float], b: Optional[float]) -> str:
    return "" if a is None or b is None else f"{b - a:+.4f}"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return "" if not a or b is None else f"{b / a:.2f}x"


def delta_pairs(runs: Sequence[Run]) -> list[tuple[str, Run, Run]]:
    """(name, baseline, other): LoRA vs full for one model, and RoBERTa (or any other family) vs BERT for one
    method, on the same data."""
    pairs = []
    for a in runs:
        for b in runs:
            if a is b or a.data_key != b.data_key:
                continue
            if a.family == b.family and a.method == "full" and b.method != "full":
                pairs.append((f"{b.method} vs {a.method} ({short_name(a.model)}): {b.label} − {a.label}", a, b))
            elif a.method == b.method and a.family == "bert" and b.family != "bert":
                pairs.append((f"{b.family} vs {a.family} ({a.method}): {b.label} − {a.label}", a, b))
    return pairs


def delta_row(name: str, a: Run, b: Run) -> list[str]:
    same = primary_name(a) == primary_name(b)
    return [
        name,
        _d(_final(a, primary_name(a)), _final(b, primary_name(b))) if same else "",
        _d(_final(a, "accuracy"), _final(b, "accuracy")),
        _d(_final(a, "macro_f1"), _final(b, "macro_f1")),
        _d(_final(a, "seqeval_f1"), _final(b, "seqeval_f1")),
        _d(_best(a, "accuracy")[0], _best(b, "accuracy")[0]),
        _d(a.results.get("trainable_pct"), b.results.get("trainable_pct")),
        _ratio(time_per_epoch(a), time_per_epoch(b)),
        _ratio(a.results.get("peak_memory_bytes"), b.results.get("peak_memory_bytes")),
    ]


EFFICIENCY_HEADER = [
    "Run",
    "Trainable params",
    "Total params (peft count)",
    "Unique params",
    "Trainable %",
    "Saved model/adapter",
]


def efficiency_row(run: Run) -> list[str]:
    r = run.results

    def n(k: str) -> str:
        return f"{r[k]:,}" if k in r else ""

    return [
        run.label,
        n("trainable_params"),
        n("total_params"),
        n("unique_params"),
        _f(r.get("trainable_pct")),
        human_bytes(r.get("model_size_bytes")),
    ]


# ----------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------


def _topology(run: Run) -> str:
    r = run.results
    return (
        f"{r.get('num_processes', '?')} process(es), {r.get('distributed_type', '?')}, "
        f"precision {r.get('mixed_precision', '?')}, {r.get('global_steps', '?')} optimizer steps"
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    return markdown_table(header, rows).rstrip("\n")


def build_report(runs: Sequence[Run], out: str | os.PathLike) -> Path:
    """Write report.md, comparison.csv, label_distribution.csv and the PNGs into ``out``; return report.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md: list[str] = ["# tagtune report", "", "Runs: " + ", ".join(f"`{r.label}` ({r.dir})" for r in runs), ""]
    md += _label_distribution_section(runs, out)
    md += _comparison_section(runs, out)
    md += _efficiency_section(runs)
    md += ["## Runs", ""]
    for r in runs:
        md += _run_section(r, out)
    path = out / "report.md"
    atomic_write_text(path, "\n".join(md).rstrip() + "\n")
    return path


def _label_distribution_section(runs: Sequence[Run], out: Path) -> list[str]:
    """Table 2: one label distribution per distinct data set, each also written as a CSV."""
    md = ["## Label distribution", ""]
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(json.dumps(r.results.get("label_distribution"), sort_keys=True), []).append(r)
    for i, members in enumerate(groups.values()):
        rows = label_distribution_rows(members[0].results)
        r0 = members[0].results
        md += [
            f"Data of {', '.join(f'`{m.label}`' for m in members)}: {r0.get('train_sentences', '?')} training sentences, "
            f"{r0.get('eval_sentences', '?')} evaluation sentences (split `{r0.get('eval_split', '?')}`), {len(rows)} tags, "
            "sorted by training count.",
            "",
        ]
        md.append(_table(LABEL_DIST_HEADER, [[str(c) for c in row] for row in rows]))
        name = "label_distribution.csv" if i == 0 else f"label_distribution_{i + 1}.csv"
        atomic_write_text(out / name, csv_text(LABEL_DIST_HEADER, rows))
    return md


def _comparison_section(runs: Sequence[Run], out: Path) -> list[str]:
    """The runs side by side (also comparison.csv), and each run's deltas against its baseline."""
    rows = [comparison_row(r) for r in runs]
    md = ["## Comparison", "", _table(COMPARISON_HEADER, rows)]
    atomic_write_text(out / "comparison.csv", csv_text(COMPARISON_HEADER, rows))
    pairs = delta_pairs(runs)
    if pairs:
        md += ["", "Deltas (other − baseline; ratios other / baseline):", ""]
        md.append(_table(DELTA_HEADER, [delta_row(*p) for p in pairs]))
    md += [
        "",
        "\\* seqeval F1 is report-compatible only (seqeval misreads POS tags as IOB chunks); accuracy and "
        "macro-F1 are the primary metrics. Time/epoch is training time; peak memory is "
        + ", ".join(sorted({str(r.results.get("peak_memory_kind", "?")) for r in runs}))
        + ".",
        "",
    ]
    return md


def _efficiency_section(runs: Sequence[Run]) -> list[str]:
    return [
        "## Parameter efficiency",
        "",
        _table(EFFICIENCY_HEADER, [efficiency_row(r) for r in runs]),
        "",
        "Total counts a LoRA classifier twice (peft's frozen original and trainable copy), as peft reports it; "
        "unique counts each weight once.",
        "",
    ]


def _run_section(r: Run, out: Path) -> list[str]:
    """Tables 3-6 and Figures 1-2 of one run: its epochs, loss curve, confusion matrix and per-tag scores."""
    s = slug(r.label)
    md = [f"### {r.label}", "", f"`{r.model}`, method `{r.method}`; {_topology(r)}; run directory `{r.dir}`.", ""]
    md.append(_table([h for h, _ in epoch_columns(r.epochs)], epoch_rows(r.epochs)))
    md += ["", table_note(r.epochs), ""]
    loss_png = save_png(loss_figure(r.history, r.epochs, f"{r.label}: loss"), out / f"loss_{s}.png")
    md += [f"![loss curve of {r.label}]({loss_png.name})", ""]
    cm = r.results.get("confusion_matrix")
    if cm:
        train_counts = dict(map(tuple, r.results.get("label_distribution", {}).get("train", [])))
        acc = _final(r, "accuracy")
        title = f"{r.label}: confusion matrix, rows normalised" + (f" (accuracy {acc:.4f})" if acc is not None else "")
        png = save_png(confusion_figure(cm["labels"], cm["matrix"], title, train_counts), out / f"confusion_{s}.png")
        md += [f"![confusion matrix of {r.label}]({png.name})", ""]
    else:
        md += ["(no confusion matrix: the run did not evaluate)", ""]
    per_tag = r.epochs[-1].get("per_tag") if r.epochs else None
    if per_tag:
        md += ["<details><summary>per-tag precision / recall / F1 (last epoch)</summary>", ""]
        md.append(_table(PER_TAG_HEADER, [[str(c) for c in row] for row in per_tag_rows(per_tag)]))
        md += ["</details>", ""]
    return md


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="tagtune report", description="Markdown tables and PNG figures from tagtune run directories."
    )
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run directories (each holds results.json)")
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, CSVs and PNGs (created)")
    ap.add_argument(
        "--compare-study",
        action="store_true",
        help="add the study's published numbers side by side, intervals and verdicts (study_comparison.md)",
    )
    ap.add_argument(
        "--wandb-group",
        default=None,
        metavar="GROUP",
        help="with --compare-study: also log its tables to a W&B summary run in this group (offline unless logged in)",
    )
    args = ap.parse_args(argv)
    runs = load_runs(args.runs)
    path = build_report(runs, args.out)
    if args.compare_study:
        from .study_compare import compare_study

        compare_study(runs, args.out, path, args.wandb_group)
    print(f"report written to {path}")
    for f in sorted(path.parent.glob("*.png")):
        print(f"  {f}")
    return 0
