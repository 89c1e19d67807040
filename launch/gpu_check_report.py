"""Collect the runs of launch/gpu_check.sh into one JSON: throughput, peak memory and loss per run.

    python launch/gpu_check_report.py OUT_DIR        ->  OUT_DIR/gpu_check.json (also printed)

Reads each OUT_DIR/<run>/results.json, run_config.json and history.jsonl written by the trainer.
A run folder without results.json (a failed run) is listed under "failed".
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any


def summarize(run: Path) -> dict[str, Any]:
    res = json.loads((run / "results.json").read_text())
    cfg = json.loads((run / "run_config.json").read_text())
    hist = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    global_batch = cfg["per_device_train_batch_size"] * res["num_processes"] * cfg["gradient_accumulation_steps"]
    train_s = res.get("train_time_s") or sum(res["epoch_times_s"])
    final = res.get("final", {})
    return {
        "run": run.name,
        "recipe": res["recipe"],
        "model": res["model"],
        "method": res["method"],
        "num_processes": res["num_processes"],
        "distributed_type": res["distributed_type"],
        "mixed_precision": res["mixed_precision"],
        "device": res["device"],
        "optimizer_steps": res["global_steps"],
        "global_batch": global_batch,
        "train_time_s": train_s,
        "samples_per_second": res["global_steps"] * global_batch / train_s if train_s else None,
        "tokens_per_second": res["train_tokens"] / train_s if train_s and "train_tokens" in res else None,
        "peak_memory_bytes": res["peak_memory_bytes"],
        "peak_memory_gib": res["peak_memory_bytes"] / 1024**3,
        "peak_memory_kind": res["peak_memory_kind"],
        "first_train_loss": hist[0]["train_loss"] if hist else None,
        "last_train_loss": hist[-1]["train_loss"] if hist else None,
        "eval_loss": final.get("eval_loss"),
        "accuracy": final.get("accuracy"),
        "overflow_steps": res.get("overflow_steps"),
        "wall_time_s": res["wall_time_s"],
        "trainable_params": res["trainable_params"],
        "unique_params": res["unique_params"],
    }


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    except ImportError:
        pass
    return info


def main(out: Path) -> dict[str, Any]:
    runs = sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []
    report = {
        "device": device_info(),
        "runs": [summarize(r) for r in runs if (r / "results.json").is_file()],
        "failed": [r.name for r in runs if not (r / "results.json").is_file()],
    }
    text = json.dumps(report, indent=2)
    if out.is_dir():
        (out / "gpu_check.json").write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python launch/gpu_check_report.py OUT_DIR")
    main(Path(sys.argv[1]))
