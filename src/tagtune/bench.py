"""`tagtune bench`: tagtune's trainer against the standard Hugging Face recipe, side by side.

  tagtune bench --preset tiny                                             (synthetic, seconds: CI)
  tagtune bench --preset cpu --data_dir ../shared/data/ud_english_ewt
  tagtune bench --preset gpu --data_dir ../shared/data/ud_english_ewt    (or --dataset synthetic:pos)

(a) ``tagtune`` is the trainer launched as its users launch it: ``accelerate launch -m tagtune.cli
train CONFIG.json`` (its results.json is read back); (b) ``grouped`` and (c) ``baseline`` are the
recipe of transformers' token-classification example (run_ner.py): ``datasets.map`` tokenisation
with first-sub-token labels, ``Trainer`` + ``DataCollatorForTokenClassification``, seqeval in
``compute_metrics``, run as a plain ``python`` process (bench_trainer.py): (b) with
``train_sampling_strategy="group_by_length"`` (the Trainer at its best, the one every floor is
checked against), (c) with the Trainer's defaults (for reference). All get the same model, data,
hyperparameters and seed. Each run is its own process tree, so peak RSS is per path; the paths
alternate (c b a, a b c, ...) so a busy machine slows all alike. Throughput counts real sub-tokens
only (no padding). Then (unless --no_predict) the model the tagtune run saved tags the validation
sentences with `tagtune predict` and with transformers' pipeline("token-classification")
(bench_predict.py): words/s side by side, and the tags must be identical; when the bench trains in bf16 or
fp16, both also tag in that dtype (where the floor asks the tags to agree on at least 99.9% of words).
Writes bench.json and bench.md (bench_report.py). The presets, the setting all paths share and the
ablation variants are in bench_spec.py; this module runs the paths and is the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from . import bench_predict
from .bench_report import add_predict_floor, assemble, markdown, rates
from .bench_spec import (
    ABLATIONS,
    PATHS,
    PRESETS,
    BenchSpec,
    build_spec,
    on_gpu,
    train_config,
    train_kwargs,
    worker_env,
)
from .errors import ConfigError, TagtuneError


def accelerate_executable() -> str:
    """The `accelerate` command of this Python environment (the one users type)."""
    beside = Path(sys.executable).parent / "accelerate"
    found = str(beside) if beside.is_file() else shutil.which("accelerate")
    if not found:
        raise ConfigError(
            "the `accelerate` command is not installed in this environment",
            where="tagtune bench",
            fix="pip install accelerate (tagtune's trainer is launched through `accelerate launch`)",
        )
    return found


def tagtune_command(spec: BenchSpec, workdir: Path) -> list[str]:
    """`accelerate launch -m tagtune.cli train CONFIG.json`: the trainer exactly as the README launches it.

    No thread setting unless --threads is given: accelerate launch and tagtune's runtime choose, as for users.
    """
    overrides = ABLATIONS[spec.ablation][0] if spec.ablation else {}
    kw = train_kwargs(spec, workdir, **overrides)
    train_config(spec, workdir, **overrides)  # a bad setting fails here, with the field named
    config_file = workdir / "train_config.json"
    config_file.write_text(json.dumps(kw, indent=2))
    cmd = [accelerate_executable(), "launch", "--num_processes", "1"]
    if spec.threads:
        cmd += ["--num_cpu_threads_per_process", str(spec.threads)]
    return cmd + ["-m", "tagtune.cli", "train", str(config_file)]


def tagtune_result(workdir: Path) -> dict[str, Any]:
    """The counts and times of the launched run, read from the results.json it wrote."""
    res = json.loads((workdir / "run" / "results.json").read_text())
    final = res["final"]
    on_gpu = str(res.get("device", "cpu")).startswith("cuda")
    if on_gpu:
        import torch

        device = torch.cuda.get_device_name()
    return {
        "steps": res["global_steps"],
        "train_time_s": res["train_time_s"],
        "train_tokens": res["train_tokens"],
        "train_words": res["train_words"],
        "train_padded_tokens": res["train_padded_tokens"],
        "eval_time_s": final["eval_time_s"],
        "eval_words": res["eval_words"],
        "accuracy": final["accuracy"],
        "params": res["unique_params"],
        "peak_memory_bytes": res["peak_memory_bytes"],
        "peak_memory_kind": res["peak_memory_kind"],
        "device": device if on_gpu else "cpu",
        "torch_threads": res.get("cpu_threads"),
        "precision": res["mixed_precision"],
        "path": "tagtune",
    }


def _predict_dtypes(precision: str) -> dict[str, str]:
    """The inference comparison runs in float32 and, when tagtune trained in half precision, in that too
    (on a CPU, fp16 runs as fp32: resolve_precision)."""
    half = {"bf16": "bfloat16", "fp16": "float16"}.get(precision)
    return {"predict": "float32", **({"predict_half": half} if half else {})}


def run_path(path: str, spec: BenchSpec, workdir: Path, timeout: int) -> dict[str, Any]:
    """One path in a fresh process (its own peak RSS); returns its counts and times."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_file, result_file, log_file = workdir / "spec.json", workdir / "result.json", workdir / "log.txt"
    spec_file.write_text(json.dumps(asdict(spec), indent=2))
    if path == "tagtune":
        cmd = tagtune_command(spec, workdir)
        result_file = workdir / "run" / "results.json"
    else:
        cmd = [sys.executable, "-m", "tagtune.bench_trainer", path, str(spec_file), str(result_file)]
    t = time.time()
    with open(log_file, "w") as log:
        env = worker_env(spec.omp_wait_policy)
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    if proc.returncode != 0 or not result_file.is_file():
        tail = log_file.read_text()[-3000:]
        raise TagtuneError(
            f"the {path} path failed (exit code {proc.returncode}); last lines of its log:\n{tail}",
            where=str(log_file),
        )
    raw = tagtune_result(workdir) if path == "tagtune" else json.loads(result_file.read_text())
    raw["process_wall_s"] = time.time() - t
    return rates(raw)


def run_bench(
    spec: BenchSpec,
    out: Path,
    repeats: int = 1,
    ablations: tuple[str, ...] = (),
    command: str = "",
    peak_tflops: Optional[float] = None,
    timeout: int = 3600,
    log=print,
    compare_predict: bool = True,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    jobs = [(p, spec) for p in bench_predict.alternating_order(list(PATHS), repeats)]
    if compare_predict:  # the last tagtune run keeps its model for the inference comparison
        last = max(i for i, (p, _) in enumerate(jobs) if p == "tagtune")
        jobs[last] = ("tagtune", BenchSpec(**{**asdict(spec), "save_model": True}))
    if spec.precision == "bf16" and not on_gpu():  # the bf16 floor is against the grouped Trainer in fp32
        jobs.append(("grouped-fp32", BenchSpec(**{**asdict(spec), "precision": "no"})))
    jobs += [(f"ablation-{name}", BenchSpec(**{**asdict(spec), "ablation": name})) for name in ablations]
    abl: dict[str, dict[str, Any]] = {}
    fp32_ref: Optional[dict[str, Any]] = None
    for i, (name, s) in enumerate(jobs):
        path = "tagtune" if name.startswith("ablation-") else name.split("-")[0]
        log(f"[bench] {i + 1}/{len(jobs)}: {name} ...")
        r = run_path(path, s, out / f"{i:02d}-{name}", timeout)
        log(
            f"[bench]   {r['train_tokens_per_s']:,.0f} train sub-tokens/s, {r['eval_words_per_s']:,.0f} eval words/s, "
            f"padding {100 * r['padding_fraction']:.1f}%, accuracy {100 * r['accuracy']:.2f}% ({r['process_wall_s']:.0f} s)"
        )
        if name.startswith("ablation-"):
            abl[name.split("-", 1)[1]] = r
        elif name == "grouped-fp32":
            fp32_ref = r
        else:
            runs[name].append(r)
    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    report = assemble(spec, runs, abl, command, peak_tflops, load, fp32_ref)
    _write_report(out, report)  # the training paths' numbers stay on disk if the inference part fails
    if compare_predict:
        log("[bench] inference: tagtune predict vs pipeline('token-classification') ...")
        run_dir = next(p for p in sorted(out.glob("*-tagtune")) if (p / "run" / "model").is_dir()) / "run"
        sentences = [json.loads(x)["words"] for x in (run_dir / "eval_predictions.jsonl").read_text().splitlines()]
        env = worker_env(spec.omp_wait_policy)
        for key, dtype in _predict_dtypes(runs["tagtune"][-1]["precision"]).items():  # as tagtune really ran
            report[key] = bench_predict.compare(
                run_dir / "model", sentences, out / key, spec.eval_batch_size, env, dtype, rounds=repeats
            )
            add_predict_floor(report, key)
            _write_report(out, report)
    return report


def _write_report(out: Path, report: dict[str, Any]) -> None:
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    (out / "bench.md").write_text(markdown(report))


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tagtune bench", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), required=True)
    p.add_argument(
        "--data_dir", help="UD English-EWT folder (en_ewt-ud-train/dev.conllu), e.g. ../shared/data/ud_english_ewt"
    )
    p.add_argument("--dataset", help="instead of --data_dir: a dataset id such as synthetic:pos")
    p.add_argument("--model", help="model folder or synthetic:bert|synthetic:roberta (default: the preset's)")
    p.add_argument(
        "--out", default=None, help="output folder for bench.json / bench.md (default outputs/bench-<preset>)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per path (training and predict), alternating order; timings are medians",
    )
    p.add_argument(
        "--ablations",
        nargs="*",
        default=[],
        choices=sorted(ABLATIONS),
        help="extra tagtune runs with one optimisation switched off",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "no", "fp16", "bf16"],
        default="auto",
        help="auto: the cpu preset in bf16 on a CPU with native bf16 (else fp32; the tiny preset always fp32), "
        "bf16 on compute capability >= 8, else fp16. Under CPU bf16 the grouped Trainer also runs in fp32 (its floor)",
    )
    p.add_argument(
        "--peak_tflops", type=float, default=None, help="peak dense TFLOPS for MFU when the device is not in the table"
    )
    p.add_argument(
        "--allow_cpu", action="store_true", help="let the gpu preset run on CPU (checks the code path only)"
    )
    p.add_argument("--torch_compile", action="store_true", help="torch.compile in both paths")
    p.add_argument(
        "--no_predict",
        action="store_true",
        help="skip the inference comparison (tagtune predict vs pipeline('token-classification'))",
    )
    p.add_argument(
        "--omp_wait_policy",
        choices=["passive", "active"],
        default=None,
        help="OMP_WAIT_POLICY for every path (default: the environment's, as users run; passive on a CPU "
        "shared with other jobs, where spinning threads slow each other at random)",
    )
    p.add_argument("--timeout", type=int, default=3600, help="seconds per path before it is stopped")
    for name, typ in (
        ("max_steps", int),
        ("train_batch_size", int),
        ("eval_batch_size", int),
        ("learning_rate", float),
        ("max_train_samples", int),
        ("max_eval_samples", int),
        ("warmup_steps", int),
        ("threads", int),
        ("dataloader_num_workers", int),
        ("seed", int),
    ):
        p.add_argument(f"--{name}", type=typ, default=None, help="override the preset's value")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    spec = build_spec(args)
    out = Path(args.out or f"outputs/bench-{args.preset}")
    report = run_bench(
        spec,
        out,
        args.repeats,
        tuple(args.ablations),
        command="tagtune bench " + " ".join(argv),
        peak_tflops=args.peak_tflops,
        timeout=args.timeout,
        compare_predict=not args.no_predict,
    )
    print(markdown(report))
    print(f"written: {out / 'bench.json'}, {out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
