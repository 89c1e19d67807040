"""The on-disk feature cache: a hit gives exactly what build_features gives; the key follows the data,
the tokenizer and the settings; entries appear whole (no temporary folders left); and through the
trainer, a 2-process launch tokenises once (rank 0 builds, rank 1 reads) and a rerun reads the cache."""

from __future__ import annotations

import shutil

import pytest
from conftest import accelerate_launch, read_json

from tagtune import features as F
from tagtune.features import build_features, cached_features, feature_cache_key, load_tokenizer

L2I = {"DT": 0, "JJ": 1, "NN": 2}
SENTS = [["the", "unbelievable", "teacher"], ["a", "cat"], ["the"] * 40]
TAGS = [["DT", "JJ", "NN"], ["DT", "NN"], ["DT"] * 40]


@pytest.fixture(scope="module")
def tok(synthetic_bert):
    return load_tokenizer(synthetic_bert)


def test_hit_equals_build_and_nothing_temporary_is_left(tmp_path, tok, monkeypatch):
    kw = dict(max_length=16, stride=4)  # the long sentence is windowed
    ref = build_features(SENTS, TAGS, tok, L2I, **kw)
    first, what = cached_features(tmp_path, SENTS, TAGS, tok, L2I, **kw)
    assert what == "built" and first.input_ids == ref.input_ids
    monkeypatch.setattr(F, "build_features", lambda *a, **k: pytest.fail("a cache hit must not tokenise"))
    again, what = cached_features(tmp_path, SENTS, TAGS, tok, L2I, **kw)
    assert what == "hit" and len(ref) > len(SENTS)
    for name in ("input_ids", "labels", "word_ids", "sent_ids", "num_words"):
        assert getattr(again, name) == getattr(ref, name), name
    assert [p.name.startswith(".") for p in tmp_path.iterdir()] == [False]  # one entry, no temp folder


def test_key_follows_data_tokenizer_and_settings(tok, synthetic_bert, synthetic_roberta):
    s = {"max_length": None, "stride": 32, "label_all_subtokens": False}
    base = feature_cache_key(SENTS, TAGS, tok, L2I, s)
    fresh = load_tokenizer(synthetic_bert)
    assert feature_cache_key(SENTS, TAGS, fresh, L2I, s) == base
    fresh(["a b c"] * 2, truncation=True, max_length=4, padding=True)  # leaves state on the backend tokenizer
    assert feature_cache_key(SENTS, TAGS, fresh, L2I, s) == base
    assert base == feature_cache_key([list(x) for x in SENTS], TAGS, tok, dict(L2I), dict(s))
    changed = [
        feature_cache_key(SENTS[:2], TAGS[:2], tok, L2I, s),
        feature_cache_key(SENTS, [["JJ", "JJ", "NN"], *TAGS[1:]], tok, L2I, s),
        feature_cache_key(SENTS, None, tok, None, s),
        feature_cache_key(SENTS, TAGS, tok, {"DT": 1, "JJ": 0, "NN": 2}, s),
        feature_cache_key(SENTS, TAGS, tok, L2I, {**s, "max_length": 64}),
        feature_cache_key(SENTS, TAGS, tok, L2I, {**s, "label_all_subtokens": True}),
        feature_cache_key(SENTS, TAGS, load_tokenizer(synthetic_roberta), L2I, s),
        feature_cache_key([["the", "unbelievableteacher"], *SENTS[1:]], TAGS, tok, L2I, s),  # word boundaries
    ]
    assert len(set(changed + [base])) == len(changed) + 1


def test_two_process_launch_tokenises_once_and_a_rerun_reads_the_cache(tmp_path, synthetic_bert):
    cache = tmp_path / "cache"
    model_dir = cache / "synthetic-bert-v2"
    shutil.copytree(synthetic_bert, model_dir)  # the model is not what this test is about
    args = ["--max_steps", "2", "--report_to", "none", "--overwrite_output_dir", "true"]
    out = tmp_path / "ddp"
    accelerate_launch(
        "recipes/smoke.py", ["--output_dir", str(out), *args], num_processes=2, cpu_ddp=True, TAGTUNE_CACHE=str(cache)
    )
    res = read_json(out / "results.json")
    assert res["num_processes"] == 2 and res["distributed_type"] == "MULTI_CPU"
    assert res["feature_cache"] == [{"train": "built", "eval": "built"}, {"train": "hit", "eval": "hit"}]
    entries = list((cache / "features").iterdir())
    assert len(entries) == 2 and not any(p.name.startswith(".") for p in entries)

    out1 = tmp_path / "single"
    accelerate_launch("recipes/smoke.py", ["--output_dir", str(out1), *args], TAGTUNE_CACHE=str(cache))
    assert read_json(out1 / "results.json")["feature_cache"] == [{"train": "hit", "eval": "hit"}]
    assert len(list((cache / "features").iterdir())) == 2
