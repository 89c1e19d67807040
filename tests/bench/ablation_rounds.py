"""Ablations in alternated rounds, through the command users type: `tagtune bench`'s own tagtune path (its cpu
preset, `accelerate launch -m tagtune.cli train`), the shipped configuration and each named ablation of
`tagtune bench --ablations`, one run after another, the order reversed every other round so that a machine
that speeds up or slows down favours none; one round per seed. Prints every run (training sub-tokens/s,
padding, evaluation words/s, peak RSS, accuracy) and each variant's medians. The bench itself runs each
ablation once; this is the measurement for a gain smaller than a single run's spread.

    python tests/bench/ablation_rounds.py --ablations trainer_length_pools [--seeds 1 2 3] [--precision auto]
        [--data_dir ../shared/data/ud_english_ewt]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from tagtune.bench import parse_args, run_path
from tagtune.bench_spec import ABLATIONS, build_spec

COLUMNS = (  # result key, heading, format
    ("train_tokens_per_s", "training sub-tokens/s", "{:,.0f}"),
    ("padding_fraction", "padding", "{:.1%}"),
    ("eval_words_per_s", "evaluation words/s", "{:,.0f}"),
    ("peak_memory_bytes", "peak MiB", "{:,.0f}"),
    ("accuracy", "accuracy", "{:.2%}"),
)


def _cells(res: dict) -> list[str]:
    return [fmt.format(res[k] / 2**20 if k == "peak_memory_bytes" else res[k]) for k, _, fmt in COLUMNS]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ablations", nargs="+", required=True, choices=sorted(ABLATIONS))
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 42, 42], help="one round per seed")
    p.add_argument("--precision", default="auto", choices=["auto", "no", "bf16"])
    p.add_argument(
        "--data_dir", default=os.path.join(os.path.dirname(__file__), "../../../shared/data/ud_english_ewt")
    )
    a = p.parse_args()
    spec = build_spec(parse_args(["--preset", "cpu", "--data_dir", a.data_dir, "--precision", a.precision]))
    out = Path(tempfile.mkdtemp(prefix="ablation-rounds-"))
    variants = [None, *a.ablations]
    runs: dict[str, list[dict]] = {str(v): [] for v in variants}
    print("| round | seed | variant | " + " | ".join(h for _, h, _ in COLUMNS) + " |", flush=True)
    for r, seed in enumerate(a.seeds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            res = run_path("tagtune", replace(spec, seed=seed, ablation=v), out / f"{r}-{v}", 3600)
            runs[str(v)].append(res)
            print(f"| {r + 1} | {seed} | {v or 'shipped'} | " + " | ".join(_cells(res)) + " |", flush=True)
    print("\nmedians:")
    for v, rs in runs.items():
        med = {k: statistics.median(x[k] for x in rs) for k, _, _ in COLUMNS}
        print(f"| {v if v != 'None' else 'shipped'} | " + " | ".join(_cells(med)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
