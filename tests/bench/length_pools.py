"""Length pools against the Trainer's mega-batches, through the command users type: the bench's cpu preset
(MiniLM on EWT, 250 steps x 16) trained by `accelerate launch -m tagtune.cli train` for each seed and pool
size, one run after another; prints padding, training sub-tokens/s, accuracy and peak RSS per run.

    python tests/bench/length_pools.py [--seeds 1 2 3] [--pools 50 0] [--precision no]
        [--data_dir ../shared/data/ud_english_ewt]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from tagtune.bench import accelerate_executable, minilm_path


def run(data_dir: str, seed: int, pool: int, precision: str) -> dict:
    out = tempfile.mkdtemp(prefix="length-pools-")
    cfg = dict(
        model_name_or_path=minilm_path(),
        dataset_name=None,
        train_file=os.path.join(data_dir, "en_ewt-ud-train.conllu"),
        validation_file=os.path.join(data_dir, "en_ewt-ud-dev.conllu"),
        conllu_tag_column="xpos",
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        learning_rate=3e-4,
        warmup_steps=25,
        max_steps=250,
        seed=seed,
        mixed_precision=precision,
        report_to="none",
        save_model=False,
        checkpoint_epoch_end=False,
        output_dir=os.path.join(out, "run"),
        overwrite_output_dir=True,
        length_group_batches=pool,
    )
    config = os.path.join(out, "config.json")
    with open(config, "w") as f:
        json.dump(cfg, f)
    cmd = [accelerate_executable(), "launch", "--num_processes", "1", "-m", "tagtune.cli", "train", config]
    subprocess.run(cmd, check=True, capture_output=True)
    with open(os.path.join(out, "run", "results.json")) as f:
        return json.load(f)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--pools", type=int, nargs="+", default=[50, 0], help="length_group_batches values")
    p.add_argument("--precision", default="no", choices=["no", "bf16"])
    p.add_argument(
        "--data_dir", default=os.path.join(os.path.dirname(__file__), "../../../shared/data/ud_english_ewt")
    )
    a = p.parse_args()
    for seed in a.seeds:
        for pool in a.pools:
            res = run(a.data_dir, seed, pool, a.precision)
            print(
                f"seed {seed}, length_group_batches {pool}: padding "
                f"{1 - res['train_tokens'] / res['train_padded_tokens']:.1%}, "
                f"{res['train_tokens'] / res['train_time_s']:,.0f} training sub-tokens/s, "
                f"accuracy {100 * res['final']['accuracy']:.2f}%, peak {res['peak_memory_bytes'] / 2**20:,.0f} MiB",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
