"""One layer's attention at inference on bf16 inputs, for evaluation-batch shapes (about 2,048 padded
sub-tokens, and batches of 16 and 32 sentences): torch's SDPA (on CPU, its flash kernel) against
tagtune's half_matmul_attention (two bf16 matmuls, the softmax in float32). Prints the median of --reps
calls per shape, side by side, and the length up to which tagtune uses the matmuls.

    python tests/bench/short_attention.py [--reps 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from tagtune.cpu_attention import HALF_MATMUL_MAX_LENGTH, half_matmul_attention

LENGTHS = (7, 16, 24, 32, 40, 48, 56, 64, 90, 128)
HEADS, HEAD_DIM, BATCH_TOKENS = 12, 32, 2048


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps + 2):  # two warm-up calls
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times[2:])


def row(batch: int, length: int, reps: int) -> str:
    q, k, v = (torch.randn(batch, HEADS, length, HEAD_DIM, dtype=torch.bfloat16) for _ in range(3))
    mask = torch.ones(batch, 1, length, length, dtype=torch.bool)
    mask[batch // 2 :, :, :, length - max(length // 5, 1) :] = False  # half the sentences padded by a fifth
    scale = HEAD_DIM**-0.5
    with torch.inference_mode():
        sdpa = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale), reps)
        mm = median_ms(lambda: half_matmul_attention(q, k, v, mask, scale), reps)
    used = "matmuls" if length <= HALF_MATMUL_MAX_LENGTH else "SDPA"
    return f"| {batch} x {length} | {sdpa:.2f} | {mm:.2f} | {sdpa / mm:.2f} | {used} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {HEADS} heads of {HEAD_DIM}, bf16")
    print("| sentences x sub-tokens | SDPA ms | bf16 matmuls ms | SDPA / matmuls | tagtune uses |")
    print("| --- | ---: | ---: | ---: | --- |")
    for length in LENGTHS:
        for batch in sorted({max(BATCH_TOKENS // length, 1), 16, 32}):
            print(row(batch, length, a.reps), flush=True)


if __name__ == "__main__":
    main()
