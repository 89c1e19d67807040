"""Inference throughput: `tagtune predict` against transformers' `pipeline("token-classification")`.

Both tag the same pre-split sentences with the same saved model, each in a fresh process with the machine's
default threads, and neither counts model loading. tagtune runs as users type it (`tagtune predict --model
RUN --input FILE --output FILE`; its summary line gives the tagging time). The pipeline gets the words with
`is_split_into_words=True` and `ignore_labels=[]`; a word's tag is the pipeline's label for the word's first
sub-token, the rule tagtune trains and predicts with, so the tags must be identical. The pipeline runs with
its default batch size (1) and with the batch size a user tuning it would pass (tagtune's), and the floor
(3x) is checked against the faster of the two.

    python -m tagtune.bench_predict pipeline MODEL_DIR INPUT.jsonl RESULT.json BATCH_SIZE   (the worker)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PREDICT_FLOOR = 3.0  # tagtune predict words/s over the pipeline's best


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


def pipeline_worker(model_dir: str, input_file: str, result_file: str, batch_size: int) -> None:
    from transformers import pipeline

    sentences = read_words(Path(input_file))
    pipe = pipeline("token-classification", model=model_dir, device="cpu", ignore_labels=[])
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
    Path(result_file).write_text(json.dumps({"seconds": secs, "words": words, "tags": tags}))


def run_tagtune(model_dir: Path, input_file: Path, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    out = workdir / "tagtune.jsonl"
    cmd = [sys.executable, "-m", "tagtune.cli", "predict", "--model", str(model_dir), "--input", str(input_file)]
    proc = subprocess.run(cmd + ["--output", str(out)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tagtune predict failed: {proc.stderr[-2000:]}")
    m = re.search(r"(\d+) words in \d+ sentences .* in ([0-9.]+) s", proc.stderr)
    tags = [json.loads(line)["tags"] for line in out.read_text().splitlines()]
    return {"seconds": float(m.group(2)), "words": int(m.group(1)), "tags": tags}


def run_pipeline(model_dir: Path, input_file: Path, workdir: Path, batch: int, env: dict[str, str]) -> dict[str, Any]:
    result = workdir / f"pipeline-b{batch}.json"
    cmd = [sys.executable, "-m", "tagtune.bench_predict", "pipeline", str(model_dir), str(input_file), str(result)]
    proc = subprocess.run(cmd + [str(batch)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline worker failed: {proc.stderr[-2000:]}")
    return json.loads(result.read_text())


def compare(model_dir: Path, sentences: list[list[str]], workdir: Path, batch: int, env: dict[str, str]) -> dict:
    """Side-by-side rows (words/s), the ratio against the pipeline's best, and whether every tag agrees."""
    workdir.mkdir(parents=True, exist_ok=True)
    input_file = workdir / "input.jsonl"
    input_file.write_text("".join(json.dumps({"words": w}) + "\n" for w in sentences))
    tt = run_tagtune(model_dir, input_file, workdir, env)
    rows = {"tagtune predict": tt}
    for b in sorted({1, batch}):
        rows[f"pipeline, batch_size={b}"] = run_pipeline(model_dir, input_file, workdir, b, env)
    rate = {name: r["words"] / max(r["seconds"], 1e-9) for name, r in rows.items()}
    best = max((n for n in rate if n.startswith("pipeline")), key=rate.get)
    mismatched = [name for name, r in rows.items() if name != "tagtune predict" and r["tags"] != tt["tags"]]
    return {
        "words": tt["words"],
        "sentences": len(sentences),
        "words_per_s": rate,
        "best_pipeline": best,
        "ratio": rate["tagtune predict"] / rate[best],
        "floor": PREDICT_FLOOR,
        "identical_tags": not mismatched,
        "mismatched": mismatched,
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"Inference: {res['sentences']} sentences, {res['words']} words, the trained model, fresh processes.",
        "",
        "| path | words/s | tagtune is |",
        "| --- | ---: | ---: |",
    ]
    tt = res["words_per_s"]["tagtune predict"]
    for name, rate in res["words_per_s"].items():
        lines.append(f"| {name} | {rate:,.0f} | {'' if name == 'tagtune predict' else f'{tt / rate:.2f}x'} |")
    ok = res["ratio"] >= res["floor"]
    lines += [
        "",
        f"Against the faster pipeline ({res['best_pipeline']}): {res['ratio']:.2f}x, floor {res['floor']:.0f}x: "
        f"{'met' if ok else 'NOT met'}. Tags identical to the pipeline's: {'yes' if res['identical_tags'] else 'NO'}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "pipeline":
    pipeline_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
