"""Shared by test_resume.py and test_preemption.py: a tiny training (synthetic BERT *with dropout*, so
RNG restoration matters; gradient accumulation 2, so the accumulation counter matters) run as a real
subprocess, one uninterrupted baseline per test session, and exact comparison of two run folders."""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from conftest import ROOT, run_cmd, subprocess_env
from safetensors.torch import load_file

from tagtune.checkpoint import list_checkpoints

# things that measure time, not training
TIMING_KEYS = {"epoch_time_s", "eval_time_s", "tokens_per_second"}
_ROOT = Path(tempfile.mkdtemp(prefix="tagtune-resume-"))
atexit.register(shutil.rmtree, _ROOT, True)
_BASELINE: dict[str, Path] = {}


def material() -> Path:
    """96 training / 24 dev sentences and a copy of the synthetic BERT with dropout 0.1."""
    d = _ROOT / "material"
    if (d / "model" / "config.json").is_file():
        return d
    from tagtune.synthetic import generate_splits, synthetic_model_path

    d.mkdir(parents=True, exist_ok=True)
    sp = generate_splits()
    for name, split, n in (("train", "train", 96), ("dev", "validation", 24)):
        (d / f"{name}.jsonl").write_text(
            "".join(json.dumps({"words": w, "labels": t}) + "\n" for w, t in sp[split][:n])
        )
    shutil.copytree(synthetic_model_path("synthetic:bert"), d / "model")
    cfg = json.loads((d / "model" / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    (d / "model" / "config.json").write_text(json.dumps(cfg))
    return d


def train_args(out: Path, *extra: str) -> list[str]:
    d = material()
    # 96 sentences / (4 x 2 accumulation) = 12 optimizer steps an epoch, 24 in all
    return [
        sys.executable,
        "-m",
        "tagtune.cli",
        "train",
        "--dataset_name",
        "",
        "--train_file",
        str(d / "train.jsonl"),
        "--validation_file",
        str(d / "dev.jsonl"),
        "--model_name_or_path",
        str(d / "model"),
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "2",
        "--num_train_epochs",
        "2",
        "--learning_rate",
        "3e-3",
        "--logging_steps",
        "3",
        "--report_to",
        "none",
        "--output_dir",
        str(out),
        *extra,
    ]


ENV = dict(OMP_NUM_THREADS="1")  # one thread: fast under a loaded CI machine, same numbers as more threads


def run_ok(cmd: list[str]) -> subprocess.CompletedProcess:
    return run_cmd(cmd, timeout=300, **ENV)


def baseline(*extra: str) -> Path:
    """The uninterrupted run (same flags as the interrupted ones), once per session."""
    key = " ".join(extra)
    if key not in _BASELINE:
        out = _ROOT / f"baseline-{len(_BASELINE)}"
        run_ok(train_args(out, *extra))
        _BASELINE[key] = out
    return _BASELINE[key]


def start_and_wait(cmd: list[str], until: Callable[[], bool], timeout: float = 240) -> subprocess.Popen:
    """Start a training process and return once ``until()`` holds (polled every 5 ms)."""
    log = open(_ROOT / f"log-{time.time_ns()}.txt", "w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(**ENV), stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log  # type: ignore[attr-defined]
    t0 = time.time()
    while not until():
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(
                f"training ended (rc={proc.returncode}) before the awaited point:\n{log.read()[-3000:]}"
            )
        if time.time() - t0 > timeout:
            proc.kill()
            log.seek(0)
            raise AssertionError(f"timed out waiting for the training process:\n{log.read()[-3000:]}")
        time.sleep(0.005)
    return proc


def output(proc: subprocess.Popen) -> str:
    proc.log.seek(0)  # type: ignore[attr-defined]
    return proc.log.read()  # type: ignore[attr-defined]


def has_checkpoint(out: Path, min_step: int = 1) -> Callable[[], bool]:
    return lambda: any(step >= min_step for step, _ in list_checkpoints(out))


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    """Bitwise-equal final weights; equal per-epoch metrics, step history and word counts."""
    wa, wb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, (
        f"{len(differ)} tensors differ, e.g. {differ[:3]}: max |diff| "
        f"{max(float((wa[k] - wb[k]).abs().max()) for k in differ):.3g}"
    )
    ea, eb = json.loads((a / "epochs.json").read_text()), json.loads((b / "epochs.json").read_text())
    assert _strip(ea) == _strip(eb)
    ha = [json.loads(x) for x in (a / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (b / "history.jsonl").read_text().splitlines()]
    assert len(ha) == 8 and _strip(ha) == _strip(hb)  # steps 3, 6, ..., 24
    ra, rb = json.loads((a / "results.json").read_text()), json.loads((b / "results.json").read_text())
    for key in (
        "global_steps",
        "train_tokens",
        "train_words",
        "train_padded_tokens",
        "eval_words",
        "confusion_matrix",
    ):
        assert ra[key] == rb[key], key
    assert {k: v for k, v in ra["final"].items() if k not in TIMING_KEYS} == {
        k: v for k, v in rb["final"].items() if k not in TIMING_KEYS
    }
    assert ra["global_steps"] == 24
