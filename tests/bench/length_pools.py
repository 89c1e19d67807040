"""Length pools against the Trainer's mega-batches, through the command users type: `tagtune bench`'s own
tagtune path (its cpu preset, `accelerate launch -m tagtune.cli train`), once with one pool (the default)
and once with its `trainer_length_pools` ablation (pools of 50 batches), for each seed, one run after
another; prints padding, training sub-tokens/s, accuracy and peak RSS per run.

    python tests/bench/length_pools.py [--seeds 1 2 3] [--precision auto]
        [--data_dir ../shared/data/ud_english_ewt]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from tagtune.bench import build_spec, parse_args, run_path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--precision", default="auto", choices=["auto", "no", "bf16"])
    p.add_argument(
        "--data_dir", default=os.path.join(os.path.dirname(__file__), "../../../shared/data/ud_english_ewt")
    )
    a = p.parse_args()
    spec = build_spec(parse_args(["--preset", "cpu", "--data_dir", a.data_dir, "--precision", a.precision]))
    out = Path(tempfile.mkdtemp(prefix="length-pools-"))
    for seed in a.seeds:
        for ablation in ("trainer_length_pools", None):
            res = run_path("tagtune", replace(spec, seed=seed, ablation=ablation), out / f"{seed}-{ablation}", 3600)
            print(
                f"seed {seed}, {'pools of 50 batches' if ablation else 'one pool'}: padding "
                f"{res['padding_fraction']:.1%}, {res['train_tokens_per_s']:,.0f} training sub-tokens/s, "
                f"accuracy {100 * res['accuracy']:.2f}%, peak {res['peak_memory_bytes'] / 2**20:,.0f} MiB",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
