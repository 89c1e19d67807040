"""What a command costs around its work: wall time from start to exit of the commands users type, with the
garbage collector's objects frozen after the imports (the shipped default, gc_freeze) and without
(TAGTUNE_GC_FREEZE=0), in alternated rounds, the order reversed every other round.

    python tests/bench/command_overhead.py [--rounds 5] [--steps 20]

Commands: `accelerate launch recipes/smoke.py --max_steps N` (synthetic BERT, one process), then
`tagtune predict` of 200 sentences with the model it saved. Prints every run, then each command's medians
and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from offline_env import OFFLINE_ENV  # noqa: E402


def timed(cmd: list[str], freeze: bool) -> float:
    env = {**os.environ, **OFFLINE_ENV, "TAGTUNE_GC_FREEZE": "1" if freeze else "0"}
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="command-overhead-"))
    text = work / "input.txt"
    text.write_text("Mary saw two dogs in London. They walked slowly!\n" * 200)
    bin_dir = Path(sys.executable).parent
    times: dict[tuple[str, bool], list[float]] = {}
    print("| round | frozen | train (s) | predict (s) |")
    for r in range(a.rounds):
        for freeze in (True, False) if r % 2 == 0 else (False, True):
            run = work / f"run-{r}-{int(freeze)}"
            train = [str(bin_dir / "accelerate"), "launch", "recipes/smoke.py", "--output_dir", str(run)]
            train += ["--max_steps", str(a.steps)]
            predict = [str(bin_dir / "tagtune"), "predict", "--model", str(run), "--input", str(text)]
            predict += ["--output", str(run / "tagged.jsonl")]
            t_train, t_predict = timed(train, freeze), timed(predict, freeze)
            times.setdefault(("train", freeze), []).append(t_train)
            times.setdefault(("predict", freeze), []).append(t_predict)
            print(f"| {r + 1} | {'yes' if freeze else 'no'} | {t_train:.2f} | {t_predict:.2f} |", flush=True)
    print("\n| command | frozen (median s) | not frozen (median s) | frozen / not |")
    for name in ("train", "predict"):
        on, off = statistics.median(times[name, True]), statistics.median(times[name, False])
        print(f"| {name} | {on:.2f} | {off:.2f} | {on / off:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
