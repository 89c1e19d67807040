"""Inference throughput: `tagtune predict` against transformers' `pipeline("token-classification")`.

Both tag the same pre-split sentences with the same saved model on the same device (the GPU when there is
one), each in a fresh process with the machine's default threads, and neither counts model loading. tagtune
runs as users type it (`tagtune predict --model RUN --input FILE --output FILE`; its summary line gives the
tagging time). The pipeline gets the words with
`is_split_into_words=True` and `ignore_labels=[]`; a word's tag is the pipeline's label for the word's first
sub-token, the rule tagtune trains and predicts with, so in float32 the tags must be identical. The pipeline
runs with its default batch size (1) and with the batch size a user tuning it would pass (tagtune's), and the
floor (3x) is checked against the faster of the two.

When the bench trains in bf16 (or fp16) both also run in that dtype, as a user of that hardware would. There
the tags cannot be identical: a near-tie between two tags resolves differently with the batch's padding, so the
pipeline's own batch sizes disagree with each other on a few words. The half-precision floor is the same 3x,
with the tags agreeing on at least 99.9% of the words (the agreement of the pipeline with itself is printed beside).

    python -m tagtune.bench_predict pipeline MODEL_DIR INPUT.jsonl RESULT.json BATCH_SIZE DTYPE   (the worker)
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PREDICT_FLOOR = 3.0  # tagtune predict words/s over the pipeline's best
HALF_AGREEMENT_FLOOR = 0.999  # in bf16/fp16: the share of words tagged as the pipeline tags them


def read_words(path: Path) -> list[list[str]]:
    return [json.loads(line)["words"] for line in path.read_text().splitlines() if line.strip()]


def first_subtoken_tags(entities: list[dict[str, Any]], word_ids: list[int | None]) -> list[str]:
    """The pipeline's per-sub-token output -> one tag per word: the label at the word's first sub-token."""
    by_index = {e["index"]: e["entity"] for e in entities}
    tags: dict[int, str] = {}
    for index, word in enumerate(word_ids):
        if word is not None and word not in tags:
            tags[word] = by_index[index]
    return [tags[w] for w in range(len(tags))]


def pipeline_worker(model_dir: str, input_file: str, result_file: str, batch_size: int, dtype: str) -> None:
    import torch
    from transformers import pipeline

    from .tagger import resolve_device

    sentences = read_words(Path(input_file))
    device = resolve_device("auto")  # where `tagtune predict --device auto` runs
    pipe = pipeline(
        "token-classification", model=model_dir, device=device, ignore_labels=[], dtype=getattr(torch, dtype)
    )
    tok = pipe.tokenizer
    pipe(sentences[:2], is_split_into_words=True, batch_size=batch_size)  # warm-up, as tagtune loads before timing
    t = time.perf_counter()
    out = pipe(sentences, is_split_into_words=True, batch_size=batch_size)
    secs = time.perf_counter() - t
    tags = [
        first_subtoken_tags(ents, tok(words, is_split_into_words=True).word_ids())
        for words, ents in zip(sentences, out)
    ]
    words = sum(map(len, sentences))
    ran = {"dtype": str(pipe.model.dtype), "device": str(pipe.device)}
    Path(result_file).write_text(json.dumps({"seconds": secs, "words": words, "tags": tags, **ran}))


def run_tagtune(model_dir: Path, input_file: Path, workdir: Path, dtype: str, env: dict[str, str]) -> dict[str, Any]:
    out = workdir / "tagtune.jsonl"
    cmd = [sys.executable, "-m", "tagtune.cli", "predict", "--model", str(model_dir), "--input", str(input_file)]
    cmd += ["--output", str(out), "--dtype", dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tagtune predict failed: {proc.stderr[-2000:]}")
    m = re.search(r"(\d+) words in \d+ sentences .* in ([0-9.]+) s", proc.stderr)
    tags = [json.loads(line)["tags"] for line in out.read_text().splitlines()]
    return {"seconds": float(m.group(2)), "words": int(m.group(1)), "tags": tags}


def run_pipeline(
    model_dir: Path, input_file: Path, workdir: Path, batch: int, dtype: str, env: dict[str, str]
) -> dict[str, Any]:
    result = workdir / f"pipeline-b{batch}.json"
    cmd = [sys.executable, "-m", "tagtune.bench_predict", "pipeline", str(model_dir), str(input_file), str(result)]
    proc = subprocess.run(cmd + [str(batch), dtype], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline worker failed: {proc.stderr[-2000:]}")
    return json.loads(result.read_text())


def agreement(a: list[list[str]], b: list[list[str]]) -> float:
    """The share of words two taggings of the same sentences tag alike (a missing word is an error)."""
    pairs = [(x, y) for sa, sb in zip(a, b, strict=True) for x, y in zip(sa, sb, strict=True)]
    return sum(x == y for x, y in pairs) / max(len(pairs), 1)


def alternating_order(names: list[str], repeats: int) -> list[str]:
    """c b a, a b c, c b a ...: each path goes first as often as last over pairs of repeats, so that a drift of
    the machine's speed during the runs does not always favour the same path."""
    out: list[str] = []
    for i in range(repeats):
        out += list(reversed(names)) if i % 2 == 0 else list(names)
    return out


def compare(
    model_dir: Path,
    sentences: list[list[str]],
    workdir: Path,
    batch: int,
    env: dict[str, str],
    dtype: str,
    rounds: int = 1,
) -> dict[str, Any]:
    """Side-by-side rows (words/s) in one dtype, the ratio against the pipeline's best, and the tags'
    agreement: every tag in float32, at least 99.9% of them in half precision (see the module's note).

    Each path runs ``rounds`` times, each time in a fresh process, the order alternating between rounds; a
    path's rate is its median, and every round's tags are compared (one differing round is a mismatch)."""
    workdir.mkdir(parents=True, exist_ok=True)
    input_file = workdir / "input.jsonl"
    input_file.write_text("".join(json.dumps({"words": w}) + "\n" for w in sentences))
    batches = {f"pipeline, batch_size={b}": b for b in sorted({1, batch})}
    runs: dict[str, list[dict[str, Any]]] = {"tagtune predict": [], **{name: [] for name in batches}}
    for name in alternating_order(list(runs), rounds):
        if name == "tagtune predict":
            runs[name].append(run_tagtune(model_dir, input_file, workdir, dtype, env))
        else:
            runs[name].append(run_pipeline(model_dir, input_file, workdir, batches[name], dtype, env))
    per_round = [{name: r[i]["words"] / max(r[i]["seconds"], 1e-9) for name, r in runs.items()} for i in range(rounds)]
    rate = {name: statistics.median(rnd[name] for rnd in per_round) for name in runs}
    tt = runs["tagtune predict"][0]
    pipes = list(batches)
    best = max(pipes, key=rate.get)
    mismatched = [name for name, rs in runs.items() if any(r["tags"] != tt["tags"] for r in rs)]
    agree = min(agreement(tt["tags"], r["tags"]) for r in runs[best])
    ratio = rate["tagtune predict"] / rate[best]
    tags_ok = not mismatched if dtype == "float32" else agree >= HALF_AGREEMENT_FLOOR
    return {
        "dtype": dtype,
        "words": tt["words"],
        "sentences": len(sentences),
        "words_per_s": rate,
        "rounds": rounds,
        "round_words_per_s": per_round,
        # tagtune against the faster pipeline within each round (runs a few minutes apart)
        "round_ratios": [rnd["tagtune predict"] / max(rnd[p] for p in pipes) for rnd in per_round],
        "best_pipeline": best,
        "ratio": ratio,
        "floor": PREDICT_FLOOR,
        "identical_tags": not mismatched,
        "mismatched": mismatched,
        "agreement": agree,
        "pipeline_dtype": runs[best][0]["dtype"],
        # the pipeline's two batch sizes against each other (None when tagtune's batch size is 1 as well)
        "pipeline_self_agreement": agreement(runs[pipes[0]][0]["tags"], runs[pipes[-1]][0]["tags"])
        if len(pipes) > 1
        else None,
        "met": ratio >= PREDICT_FLOOR and tags_ok,
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"Inference in {res['dtype']}: {res['sentences']} sentences, {res['words']} words, the trained model, "
        "fresh processes.",
        "",
        "| path | words/s | tagtune is |",
        "| --- | ---: | ---: |",
    ]
    tt = res["words_per_s"]["tagtune predict"]
    for name, rate in res["words_per_s"].items():
        lines.append(f"| {name} | {rate:,.0f} | {'' if name == 'tagtune predict' else f'{tt / rate:.2f}x'} |")
    if res["dtype"] == "float32":
        tags = f"Tags identical to the pipeline's: {'yes' if res['identical_tags'] else 'NO'}."
    else:
        own = res["pipeline_self_agreement"]
        tags = (
            f"Tags agree with the pipeline's on {100 * res['agreement']:.2f}% of the words (floor "
            f"{100 * HALF_AGREEMENT_FLOOR:.1f}%"
            + (f"; the pipeline's two batch sizes agree with each other on {100 * own:.2f}%" if own else "")
            + ")."
        )
    rounds = res.get("rounds", 1)
    lines += [
        "",
        f"Against the faster pipeline ({res['best_pipeline']}): {res['ratio']:.2f}x, floor {res['floor']:.0f}x: "
        f"{'met' if res['met'] else 'NOT met'}. {tags}",
    ]
    if rounds > 1:
        each = ", ".join(f"{r:.2f}x" for r in res["round_ratios"])
        lines += [
            "",
            f"Rates are medians of {rounds} rounds (alternating order, fresh processes); tagtune against the faster "
            f"pipeline within each round: {each}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 7 or sys.argv[1] != "pipeline":
        raise SystemExit("usage: python -m tagtune.bench_predict pipeline MODEL_DIR INPUT RESULT BATCH_SIZE DTYPE")
    pipeline_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
