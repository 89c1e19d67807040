"""One layer's attention with dropout, forward and backward on bf16 inputs as in CPU bf16 training:
transformers' SDPA function (torch's math path, whose dropout draws one bernoulli_ number per element)
against tagtune's bulk_dropout_attention (the same float32 math, the mask from keep_noise). Prints the
median of --reps calls per shape, side by side.

    python tests/bench/attention_dropout.py [--reps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from tagtune.cpu_dropout import MARK, bulk_dropout_attention

SHAPES = ((16, 24), (16, 40), (8, 64), (32, 16))  # sentences x sub-tokens of a batch
HEADS, HEAD_DIM, P = 12, 32, 0.1


def median_ms(fn, module: torch.nn.Module, batch: int, length: int, reps: int) -> float:
    q, k, v = (torch.randn(batch, HEADS, length, HEAD_DIM, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = torch.ones(batch, 1, length, length, dtype=torch.bool)
    mask[batch // 2 :, :, :, length - length // 5 :] = False  # half the sentences padded by a fifth
    times = []
    for _ in range(reps + 3):  # three warm-up calls
        t = time.perf_counter()
        out, _ = fn(module, q, k, v, mask, dropout=P, scaling=HEAD_DIM**-0.5)
        out.float().sum().backward()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times[3:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    module = torch.nn.Module().train()
    setattr(module, MARK, True)  # what use_bulk_attention_dropout marks
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {HEADS} heads of {HEAD_DIM}, dropout {P}")
    print("| sentences x sub-tokens | SDPA (math path) ms | bulk masks ms | bulk / SDPA |")
    print("| --- | ---: | ---: | ---: |")
    for batch, length in SHAPES:  # each twice, alternated; the faster of the two
        sdpa = min(median_ms(sdpa_attention_forward, module, batch, length, a.reps) for _ in range(2))
        bulk = min(median_ms(bulk_dropout_attention, module, batch, length, a.reps) for _ in range(2))
        print(f"| {batch} x {length} | {sdpa:.2f} | {bulk:.2f} | {bulk / sdpa:.2f} |")


if __name__ == "__main__":
    main()
