"""Memory of `tagtune predict` as the input grows: peak RSS is bounded by the chunk, not by the file.

    python tests/bench/predict_streaming.py --model RUN_DIR [--sizes 10000 100000 1000000] [--chunk_lines 20000]
        [--predict_args "--dtype bfloat16 --cpu_malloc_reuse false"]

For each size it writes a JSONL file of that many sentences (the run's validation sentences, repeated),
runs `tagtune predict --model RUN_DIR --input FILE --output OUT.jsonl` in a fresh process, and prints the
sentences, words, seconds, words/s and the process's peak RSS (ru_maxrss of the child), side by side, with
each size's RSS as a ratio of the smallest's. A bounded-memory reader prints ratios near 1.0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_input(words: list[list[str]], n: int, path: Path) -> int:
    total = 0
    with open(path, "w") as f:
        for i in range(n):
            w = words[i % len(words)]
            total += len(w)
            f.write(json.dumps({"id": i, "words": w}) + "\n")
    return total


def run(model: str, src: Path, out: Path, chunk_lines: int, extra: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one `tagtune predict` process, measured by a wrapper process of its
    own (ru_maxrss of RUSAGE_CHILDREN is a maximum over every child a process ever had)."""
    cmd = [sys.executable, "-m", "tagtune.cli", "predict", "--model", model, "--input", str(src)]
    cmd += ["--output", str(out), "--chunk_lines", str(chunk_lines), *extra]
    wrapper = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    t = time.time()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True)
    return time.time() - t, int(proc.stdout.split()[-1]) * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a run directory (its eval_predictions.jsonl gives the words)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--chunk_lines", type=int, default=20_000)
    ap.add_argument("--predict_args", default="", help="more `tagtune predict` options, as one string")
    a = ap.parse_args()
    run_dir = Path(a.model)
    words = [json.loads(x)["words"] for x in (run_dir / "eval_predictions.jsonl").read_text().splitlines()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(a.sizes):
            src, out = Path(tmp) / f"in-{n}.jsonl", Path(tmp) / f"out-{n}.jsonl"
            n_words = write_input(words, n, src)
            secs, rss = run(str(run_dir), src, out, a.chunk_lines, a.predict_args.split())
            assert sum(1 for _ in open(out)) == n
            rows.append((n, n_words, secs, rss))
            src.unlink()
            out.unlink()
    print(
        f"| sentences | words | wall s (with start-up) | words/s | peak RSS | RSS / smallest |  (chunk_lines {a.chunk_lines}) {a.predict_args}"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, w, s, rss in rows:
        print(f"| {n:,} | {w:,} | {s:.1f} | {w / s:,.0f} | {rss / 2**20:,.0f} MiB | {rss / rows[0][3]:.2f} |")


if __name__ == "__main__":
    main()
