"""`tagtune bench`'s report: each run's counts and times as rates, the medians of repeated runs,
tagtune's ratios to the grouped and the default Trainer, the CPU floors or the GPU's MFU, and
bench.md's tables. Pure arithmetic on the runs' numbers, apart from the versions `assemble` records.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from . import bench_predict
from .bench_spec import ABLATIONS, BenchSpec, model_label, worker_env

PATH_LABELS = {
    "tagtune": "tagtune (accelerate launch)",
    "grouped": "Trainer, group_by_length",
    "baseline": "Trainer, defaults",
}

# Peak dense tensor FLOPS (no sparsity) per device, by the precision the preset trains in.
PEAK_TFLOPS = [  # (substring of torch.cuda.get_device_name(), {precision: TFLOPS}, what)
    ("H200", {"bf16": 989.0, "fp16": 989.0}, "H200 SXM dense bf16/fp16"),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0}, "H100 PCIe dense bf16/fp16"),
    ("H100", {"bf16": 989.0, "fp16": 989.0}, "H100 SXM dense bf16/fp16"),
    ("A100", {"bf16": 312.0, "fp16": 312.0}, "A100 dense bf16/fp16"),
    ("T4", {"fp16": 65.0}, "T4 dense fp16"),
]


def rates(raw: dict[str, Any]) -> dict[str, Any]:
    """Per-run counts and times -> the reported rates."""
    out = dict(raw)
    out["train_words_per_s"] = raw["train_words"] / raw["train_time_s"]
    out["train_tokens_per_s"] = raw["train_tokens"] / raw["train_time_s"]
    out["padding_fraction"] = (
        1.0 - raw["train_tokens"] / raw["train_padded_tokens"] if raw["train_padded_tokens"] else 0.0
    )
    out["eval_words_per_s"] = raw["eval_words"] / raw["eval_time_s"]
    return out


RATE_KEYS = (
    "train_words_per_s",
    "train_tokens_per_s",
    "eval_words_per_s",
    "padding_fraction",
    "train_time_s",
    "eval_time_s",
    "peak_memory_bytes",
)


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeats of one path -> one row: the median of each timing, the rest from the first run."""
    row = dict(runs[0])
    for k in RATE_KEYS:
        row[k] = statistics.median(r[k] for r in runs)
    row["repeats"] = len(runs)
    return row


def peak_flops(
    device_name: str, precision: str, override_tflops: Optional[float] = None
) -> tuple[Optional[float], str]:
    """Peak dense FLOPS used for MFU and a line saying which figure it is."""
    if override_tflops:
        return override_tflops * 1e12, f"{override_tflops:g} TFLOPS (given with --peak_tflops)"
    for key, table, what in PEAK_TFLOPS:
        if key in device_name and precision in table:
            return table[precision] * 1e12, f"{table[precision]:g} TFLOPS ({what})"
    return None, f"unknown peak for '{device_name}' at {precision}: pass --peak_tflops"


def mfu(params: int, tokens_per_s: float, peak: float) -> float:
    """Model-FLOPs utilisation of training: 6 FLOPs per parameter per token (forward + backward)."""
    return 6.0 * params * tokens_per_s / peak


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """tagtune / baseline for every rate; for peak memory and padding, lower is better."""
    out = {
        k: a[k] / b[k]
        for k in ("train_words_per_s", "train_tokens_per_s", "eval_words_per_s", "peak_memory_bytes")
        if b[k]
    }
    out["accuracy_points"] = 100.0 * (a["accuracy"] - b["accuracy"])
    return out


def verdict(r: dict[str, float]) -> dict[str, bool]:
    """The CPU floors, against the grouped Trainer in the same precision: >= 1.3x training sub-tokens/s,
    >= 1.5x evaluation words/s, <= 0.6x peak memory, accuracy within 0.3 points."""
    return {
        "train_tokens_per_s >= 1.3x": r["train_tokens_per_s"] >= 1.3,
        "eval_words_per_s >= 1.5x": r["eval_words_per_s"] >= 1.5,
        "peak memory <= 0.6x": r["peak_memory_bytes"] <= 0.6,
        "accuracy within 0.3 points (or better)": r["accuracy_points"] >= -0.3,
    }


def add_predict_floor(report: dict[str, Any], key: str) -> None:
    """The inference comparison ``report[key]`` joins the CPU floors (when the report has them): >= 3x the
    faster pipeline in words/s, with identical tags in float32 or agreeing ones in half precision."""
    res = report.get(key)
    if "floors" in report and res:
        tags = "tags identical" if res["dtype"] == "float32" else "tags agreeing"
        report["floors"][f"predict {res['dtype']} >= {res['floor']:g}x the faster pipeline, {tags}"] = res["met"]


def assemble(
    spec: BenchSpec,
    runs: dict[str, list[dict[str, Any]]],
    abl: dict[str, dict[str, Any]],
    command: str = "",
    peak_tflops: Optional[float] = None,
    load: str = "n/a",
    fp32_ref: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Runs of all paths -> the report: medians, ratios, CPU floors or GPU MFU, versions; ``fp32_ref``:
    the grouped Trainer in fp32 when the paths ran CPU bf16 (its own floor)."""
    a, g, b = combine(runs["tagtune"]), combine(runs["grouped"]), combine(runs["baseline"])
    r = ratios(a, g)
    report: dict[str, Any] = {
        "spec": asdict(spec),
        "command": command,
        "model_name": model_label(spec.model),
        "tagtune": a,
        "grouped": g,
        "baseline": b,
        "ratios": r,  # against the grouped Trainer: the floors
        "ratios_default": ratios(a, b),
        # tagtune / grouped Trainer within each round of --repeats (their i-th runs, minutes apart)
        "round_ratios": [ratios(t, gr) for t, gr in zip(runs["tagtune"], runs["grouped"])],
        "runs": runs,
        "ablations": abl,
        "data_name": (
            spec.dataset_name
            or f"{Path(spec.train_file).name} -> {Path(spec.validation_file).name} ({spec.conllu_tag_column})"
        ),
        "environment": _environment(a, g, b, spec.omp_wait_policy, load),
    }
    if a.get("device", "cpu") != "cpu":
        report["mfu"] = _mfu_row(a, g, b, spec.precision, peak_tflops)
    elif spec.preset == "cpu":
        report["floors"] = verdict(r)
    if fp32_ref is not None:
        report["grouped_fp32"] = fp32_ref
        report["ratios_fp32"] = rf = ratios(a, fp32_ref)
        if "floors" in report:
            report["floors"]["bf16 train_tokens_per_s >= 1.8x grouped fp32"] = rf["train_tokens_per_s"] >= 1.8
            report["floors"]["bf16 accuracy within 0.3 points of grouped fp32"] = rf["accuracy_points"] >= -0.3
    return report


def _environment(
    a: dict[str, Any], g: dict[str, Any], b: dict[str, Any], omp_wait_policy: Optional[str], load: str
) -> dict[str, Any]:
    """Date, device, versions, each path's threads and the OpenMP policy they ran under."""
    import accelerate
    import torch
    import transformers

    on_gpu = a.get("device", "cpu") != "cpu"
    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": a["device"] if on_gpu else f"CPU, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "threads": {p: row.get("torch_threads") for p, row in (("tagtune", a), ("grouped", g), ("baseline", b))},
        "omp_wait_policy": worker_env(omp_wait_policy).get("OMP_WAIT_POLICY", "unset (libgomp: spin, then sleep)"),
        "load": load,
        "python": sys.version.split()[0],
    }


def _mfu_row(
    a: dict[str, Any], g: dict[str, Any], b: dict[str, Any], precision: str, peak_tflops: Optional[float]
) -> dict[str, Any]:
    """Each path's MFU against the device's peak in the precision trained (None where the peak is unknown)."""
    peak, used = peak_flops(a["device"], precision, peak_tflops)
    row: dict[str, Any] = {
        p: mfu(r["params"], r["train_tokens_per_s"], peak) if peak else None
        for p, r in (("tagtune", a), ("grouped", g), ("baseline", b))
    }
    return {**row, "peak_used": used, "peak_flops": peak}


def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "n/a"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "frac":
        return f"{100 * v:.1f}%"
    if kind == "acc":
        return f"{100 * v:.2f}%"
    if kind == "mem":
        return f"{v / 2**20:,.0f} MiB"
    if kind == "s":
        return f"{v:.1f} s"
    if kind == "x":
        return f"{v:.2f}x"
    return str(v)


TABLE_ROWS = [  # (label, key, kind, ratio key)
    ("training words/s", "train_words_per_s", "rate", "train_words_per_s"),
    ("training sub-tokens/s (real, no padding)", "train_tokens_per_s", "rate", "train_tokens_per_s"),
    ("padding fraction of training batches", "padding_fraction", "frac", None),
    ("evaluation words/s", "eval_words_per_s", "rate", "eval_words_per_s"),
    ("peak memory", "peak_memory_bytes", "mem", "peak_memory_bytes"),
    ("final token accuracy", "accuracy", "acc", "accuracy_points"),
    ("training time (loop only)", "train_time_s", "s", None),
    ("evaluation time", "eval_time_s", "s", None),
]


def _ratio_cell(r: dict[str, float], rkey: Optional[str]) -> str:
    if rkey == "accuracy_points":
        return f"{r[rkey]:+.2f} points"
    return _fmt(r[rkey], "x") if rkey and rkey in r else ""


def markdown(report: dict[str, Any]) -> str:
    """bench.md: the header, the three paths side by side, then whichever of the per-round ratios, the bf16
    table, the ablation rows, the inference comparison and the floors the report holds."""
    lines = _header(report) + _paths_table(report) + _rounds_line(report) + _bf16_table(report)
    lines += _ablation_table(report)
    for key in ("predict", "predict_half"):
        if report.get(key):
            lines += ["", bench_predict.markdown(report[key]).rstrip()]
    if report.get("floors"):
        lines += _floor_lines(report)
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def _floor_lines(report: dict[str, Any]) -> list[str]:
    """Each CPU floor, met or not, then whether this one run met every floor it checked."""
    floors = report["floors"]
    missed = [k for k, v in floors.items() if not v]
    unchecked = "" if report.get("predict") else " (predict not run)"
    return [
        "",
        "CPU floors (training, evaluation and memory against the grouped Trainer; predict against the faster "
        "pipeline): " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in floors.items()),
        "",
        f"Every floor met in this run{unchecked}: " + ("yes" if not missed else f"no ({len(missed)} not met)"),
    ]


def _header(report: dict[str, Any]) -> list[str]:
    a, env = report["tagtune"], report["environment"]
    return [
        f"# tagtune bench --preset {report['spec']['preset']}",
        "",
        f"{env['date']} · {env['device']} · torch {env['torch']} · transformers {env['transformers']} · "
        f"accelerate {env['accelerate']} · OMP_WAIT_POLICY {env.get('omp_wait_policy', 'n/a')} · "
        f"1-minute load average {env.get('load', 'n/a')}",
        "",
        f"Model `{report['model_name']}` ({a['params']:,} parameters); {report['data_name']}; "
        f"{a['steps']} optimizer steps of {report['spec']['train_batch_size']} sentences, evaluation on "
        f"{a['eval_words']:,} words; median of {a['repeats']} run(s) per path.",
        "",
    ]


def _paths_table(report: dict[str, Any]) -> list[str]:
    a, g, b = report["tagtune"], report["grouped"], report["baseline"]
    r, rd = report["ratios"], report["ratios_default"]
    lines = [
        f"| metric | {PATH_LABELS['tagtune']} | {PATH_LABELS['grouped']} | {PATH_LABELS['baseline']} "
        "| tagtune / grouped | tagtune / defaults |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| torch threads | {a.get('torch_threads')} | {g.get('torch_threads')} | {b.get('torch_threads')} | | |",
        f"| precision | {a.get('precision')} | {g.get('precision')} | {b.get('precision')} | | |",
    ]
    for label, key, kind, rkey in TABLE_ROWS:
        lines.append(
            f"| {label} | {_fmt(a.get(key), kind)} | {_fmt(g.get(key), kind)} | {_fmt(b.get(key), kind)} "
            f"| {_ratio_cell(r, rkey)} | {_ratio_cell(rd, rkey)} |"
        )
    if report.get("mfu"):
        m = report["mfu"]
        lines.append(
            f"| MFU (6 x params x sub-tokens/s / peak) | {_fmt(m['tagtune'], 'frac')} | {_fmt(m['grouped'], 'frac')} "
            f"| {_fmt(m['baseline'], 'frac')} | | |"
        )
        lines += ["", f"MFU peak used: {m['peak_used']}."]
    return lines


def _rounds_line(report: dict[str, Any]) -> list[str]:
    rounds = report.get("round_ratios", [])
    if len(rounds) < 2:
        return []
    each = {k: ", ".join(f"{x[k]:.2f}x" for x in rounds) for k in ("train_tokens_per_s", "eval_words_per_s")}
    return [
        "",
        f"tagtune / grouped Trainer within each of the {len(rounds)} rounds (the paths' i-th runs, minutes apart): "
        f"training {each['train_tokens_per_s']}; evaluation {each['eval_words_per_s']}.",
    ]


def _bf16_table(report: dict[str, Any]) -> list[str]:
    if not report.get("grouped_fp32"):
        return []
    a, f, rf = report["tagtune"], report["grouped_fp32"], report["ratios_fp32"]
    return [
        "",
        "bf16 against fp32: the grouped Trainer again, in fp32 (the floor for tagtune in bf16 is 1.8x its rate).",
        "",
        "| path | precision | training sub-tokens/s | evaluation words/s | peak memory | token accuracy |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        f"| {PATH_LABELS['grouped']} | {f.get('precision')} | {_fmt(f['train_tokens_per_s'], 'rate')} | "
        f"{_fmt(f['eval_words_per_s'], 'rate')} | {_fmt(f['peak_memory_bytes'], 'mem')} | {_fmt(f['accuracy'], 'acc')} |",
        f"| {PATH_LABELS['tagtune']} | {a.get('precision')} | {_fmt(a['train_tokens_per_s'], 'rate')} | "
        f"{_fmt(a['eval_words_per_s'], 'rate')} | {_fmt(a['peak_memory_bytes'], 'mem')} | {_fmt(a['accuracy'], 'acc')} |",
        f"| tagtune {a.get('precision')} / Trainer fp32 | | **{rf['train_tokens_per_s']:.2f}x** | "
        f"{rf['eval_words_per_s']:.2f}x | {rf['peak_memory_bytes']:.2f}x | {rf['accuracy_points']:+.2f} points |",
    ]


def _ablation_table(report: dict[str, Any]) -> list[str]:
    if not report.get("ablations"):
        return []
    a, g = report["tagtune"], report["grouped"]
    lines = [
        "",
        "What each optimisation buys: tagtune with one of them switched off (one run each); LoRA's row is "
        "its cost against full fine-tuning (the same sub-tokens per step, so the rate ratio is the step-time ratio).",
        "",
        "| tagtune variant | training sub-tokens/s | padding | evaluation words/s | peak memory | accuracy "
        "| training / eval / memory vs grouped Trainer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    variants = [("all optimisations (above)", a)] + [(ABLATIONS[k][1], v) for k, v in report["ablations"].items()]
    for label, row in variants:
        lines.append(
            f"| {label} | {_fmt(row['train_tokens_per_s'], 'rate')} | {_fmt(row['padding_fraction'], 'frac')} | "
            f"{_fmt(row['eval_words_per_s'], 'rate')} | {_fmt(row['peak_memory_bytes'], 'mem')} | "
            f"{_fmt(row['accuracy'], 'acc')} | "
            f"{row['train_tokens_per_s'] / g['train_tokens_per_s']:.2f}x / "
            f"{row['eval_words_per_s'] / g['eval_words_per_s']:.2f}x / "
            f"{row['peak_memory_bytes'] / g['peak_memory_bytes']:.2f}x |"
        )
    return lines
