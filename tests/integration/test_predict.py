"""Inference and export with models trained by the smoke recipe: the API, `tagtune predict`,
`tagtune evaluate` and the training evaluation agree word for word; long sentences get one tag
per word; bad input fails with a clear error and exit code 2; a merged LoRA export predicts
exactly what the adapter predicts.

    python -m pytest tests/integration/test_predict.py -x -q
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, glibc_default_env, read_json, subprocess_env, train_smoke

from tagtune import Tagger, cli
from tagtune.errors import DataError
from tagtune.text import split_text, tokenizer_name


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_conll_tags(path: Path) -> list[list[tuple[str, ...]]]:
    sents, cur = [], []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            if cur:
                sents.append(cur)
            cur = []
        else:
            cur.append(tuple(line.split("\t")))
    return sents + ([cur] if cur else [])


@pytest.fixture(scope="module")
def tagger(smoke_run) -> Tagger:
    return Tagger.load(smoke_run / "model", device="cpu")


@pytest.fixture(scope="module")
def training_eval(smoke_run) -> list[dict]:
    """The training run's last evaluation of its validation split, word for word."""
    return read_jsonl(smoke_run / "eval_predictions.jsonl")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    """A tiny LoRA adapter on the synthetic RoBERTa (byte-level BPE: add_prefix_space path), ~5 s."""
    return train_smoke(
        tmp_path_factory.mktemp("lora_run"),
        "--method",
        "lora",
        "--model_name_or_path",
        "synthetic:roberta",
        "--max_steps",
        "30",
        "--learning_rate",
        "2e-2",
        "--max_train_samples",
        "960",
        "--max_eval_samples",
        "100",
    )


def run_cli(*args: str) -> int:
    return cli.main([str(a) for a in args])


# ---- agreement ------------------------------------------------------------------------------


def test_api_cli_and_training_evaluation_agree_word_for_word(smoke_run, tagger, training_eval, tmp_path):
    results = read_json(smoke_run / "results.json")
    words = [r["words"] for r in training_eval]
    trained = [r["tags"] for r in training_eval]
    assert len(words) == results["eval_sentences"] == 300
    assert sum(map(len, words)) == results["eval_words"]
    # the training evaluation's own file matches its reported accuracy
    correct = sum(p == g for r in training_eval for p, g in zip(r["tags"], r["labels"]))
    assert correct / results["eval_words"] == pytest.approx(results["final"]["accuracy"], abs=1e-12)

    api_tags, api_scores = tagger.tag(words, return_scores=True)
    assert api_tags == trained
    assert all(0.0 < s <= 1.0 for sent in api_scores for s in sent)
    assert tagger.tag(words[:40]) == trained[:40]  # same without scores

    # CLI on the run directory (not model/): JSONL in, JSONL out with scores; gold labels pass through
    out = tmp_path / "pred.jsonl"
    assert (
        run_cli(
            "predict",
            "--model",
            smoke_run,
            "--input",
            smoke_run / "eval_predictions.jsonl",
            "--output",
            out,
            "--scores",
            "--batch_size",
            "7",
        )
        == 0
    )
    rows = read_jsonl(out)
    assert [r["tags"] for r in rows] == trained
    assert [r["labels"] for r in rows] == [r["labels"] for r in training_eval]
    # another batch size pads differently: the same tags, scores equal to float rounding
    assert max(abs(a - b) for r, sent in zip(rows, api_scores) for a, b in zip(r["scores"], sent)) < 1e-5

    # CLI with CoNLL-U in (tag columns empty), CoNLL out
    conllu = tmp_path / "eval.conllu"
    conllu.write_text(
        "".join(
            "# sent\n" + "".join(f"{i + 1}\t{w}\t_\t_\t_\t_\t_\t_\t_\t_\n" for i, w in enumerate(ws)) + "\n"
            for ws in words[:50]
        )
    )
    out2 = tmp_path / "pred.conll"
    assert run_cli("predict", "--model", smoke_run / "model", "--input", conllu, "--output", out2) == 0
    assert [[t for _, t in s] for s in read_conll_tags(out2)] == trained[:50]
    assert [[w for w, _ in s] for s in read_conll_tags(out2)] == words[:50]


def test_predict_batches_by_sub_tokens_as_the_training_evaluation_did(smoke_run, tagger, training_eval):
    words, trained = [r["words"] for r in training_eval], [r["tags"] for r in training_eval]
    run_cfg = read_json(smoke_run / "model" / "tagtune_config.json")
    assert run_cfg["per_device_eval_batch_tokens"] is None and run_cfg["per_device_eval_batch_size"] == 32
    assert tagger.batch_tokens == 2048  # the run's setting, resolved for a CPU as training resolved it
    shapes = []
    hook = tagger.model.register_forward_pre_hook(
        lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        assert tagger.tag(words) == trained
    finally:
        hook.remove()
    assert sum(n for n, _ in shapes) == len(words)  # the smoke run's sentences are one window each
    assert all(n * width <= 2048 for n, width in shapes) and max(n for n, _ in shapes) > 32
    assert [w for _, w in shapes] == sorted((w for _, w in shapes), reverse=True)  # longest first
    by_count = Tagger.load(smoke_run / "model", device="cpu", batch_size=7)  # a batch size alone: 7 per batch
    assert by_count.batch_tokens == 0 and by_count.tag(words[:50]) == trained[:50]
    small = Tagger.load(smoke_run / "model", device="cpu", batch_tokens=40)  # mostly one sentence per batch
    assert small.batch_tokens == 40 and small.tag(words[:50]) == trained[:50]


def test_evaluate_gives_the_training_evaluations_metrics_and_files(smoke_run, tmp_path):
    out = tmp_path / "eval"
    assert run_cli("evaluate", "--model", smoke_run, "--dataset", "synthetic:pos", "--out", out) == 0
    trained = read_json(smoke_run / "epochs.json")[-1]
    ours = read_json(out / "epochs.json")[-1]
    for key in (
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "weighted_f1",
        "seqeval_precision",
        "seqeval_recall",
        "seqeval_f1",
        "num_words",
        "num_sentences",
        "per_tag",
    ):
        assert ours[key] == trained[key], key
    assert ours["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-5)
    assert (out / "eval_predictions.jsonl").read_bytes() == (smoke_run / "eval_predictions.jsonl").read_bytes()
    assert (out / "per_tag.csv").read_bytes() == (smoke_run / "per_tag.csv").read_bytes()
    summary = read_json(out / "eval_results.json")
    assert summary["split"] == "validation" and summary["eval_words"] == trained["num_words"]
    assert summary["confusion_matrix"]["matrix"] == read_json(smoke_run / "results.json")["confusion_matrix"]["matrix"]

    # the same sentences from a CoNLL-U file (XPOS column): the same scores
    rows = read_jsonl(smoke_run / "eval_predictions.jsonl")
    conllu = tmp_path / "dev.conllu"
    conllu.write_text(
        "".join(
            "".join(
                f"{i + 1}\t{w}\t_\t_\t{t}\t_\t_\t_\t_\t_\n" for i, (w, t) in enumerate(zip(r["words"], r["labels"]))
            )
            + "\n"
            for r in rows
        )
    )
    assert run_cli("evaluate", "--model", smoke_run, "--dataset", conllu, "--out", tmp_path / "eval2") == 0
    assert read_json(tmp_path / "eval2" / "epochs.json")[-1]["accuracy"] == trained["accuracy"]


def test_evaluate_refuses_unseen_labels_and_run_directories(smoke_run, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"words": ["the", "cat"], "labels": ["DT", "NN"]})
        + "\n"
        + json.dumps({"words": ["a", "dog"], "labels": ["DT", "XYZ"]})
        + "\n"
    )
    assert run_cli("evaluate", "--model", smoke_run, "--dataset", bad, "--out", tmp_path / "e") == 2
    err = capsys.readouterr().err
    assert "'XYZ' x1" in err and "never seen in training" in err and f"{bad}:2" in err
    assert not (tmp_path / "e").exists()
    before = (smoke_run / "epochs.csv").read_bytes()
    assert run_cli("evaluate", "--model", smoke_run, "--dataset", "synthetic:pos", "--out", smoke_run) == 2
    assert "holds a training run" in capsys.readouterr().err
    assert (smoke_run / "epochs.csv").read_bytes() == before


# ---- long sentences, raw text ---------------------------------------------------------------


def test_a_2000_word_sentence_gets_2000_tags(tagger, training_eval):
    from tagtune.features import build_features

    words, gold = [], []
    for r in training_eval * 2:
        words += r["words"]
        gold += r["labels"]
    words, gold = words[:2000], gold[:2000]
    feats = build_features([words], None, tagger.tokenizer, max_length=tagger.max_length, stride=tagger.stride)
    assert len(feats) >= 20  # many windows (128 sub-tokens each)
    tags = tagger.tag([words])
    assert len(tags) == 1 and len(tags[0]) == 2000
    # each tag lines up with its word: a window shifted by one word scores ~0.1. (Measured 0.886, below
    # the 0.969 of separate sentences: windows start mid-sentence, which training never showed it.)
    accuracy = sum(t == g for t, g in zip(tags[0], gold)) / 2000
    assert accuracy >= 0.8, accuracy


def test_raw_text_is_split_by_the_documented_rule(smoke_run, tagger, tmp_path, monkeypatch, capsys):
    assert tokenizer_name() == "pysbd+nltk"
    # PTB words and abbreviation-aware sentences: what the training data keeps whole stays whole
    assert split_text("Mr. Smith bought U.S. stamps at 10:30 a.m. today. He paid $5.") == [
        ["Mr.", "Smith", "bought", "U.S.", "stamps", "at", "10:30", "a.m.", "today", "."],
        ["He", "paid", "$", "5", "."],
    ]
    assert split_text("John's dog can't run. It costs 1,000 dollars!\n\n\"Really?\" she said.") == [
        ["John", "'s", "dog", "ca", "n't", "run", "."],
        ["It", "costs", "1,000", "dollars", "!"],
        ['"', "Really", "?", '"', "she", "said", "."],  # quotes kept as written, not `` ''
    ]
    text = tmp_path / "in.txt"
    text.write_text("Mary's dog can run in London. The teacher saw two cats!\nthey walked slowly .\n")
    out = tmp_path / "out.conll"
    assert run_cli("predict", "--model", smoke_run, "--input", text, "--output", out, "--scores") == 0
    assert "(text, pysbd+nltk -> conll)" in capsys.readouterr().err  # says which tokenizer was used
    sents = read_conll_tags(out)
    words = [[row[0] for row in s] for s in sents]
    assert words == [
        ["Mary", "'s", "dog", "can", "run", "in", "London", "."],
        ["The", "teacher", "saw", "two", "cats", "!"],
        ["they", "walked", "slowly", "."],
    ]
    assert [[row[1] for row in s] for s in sents] == tagger.tag(words)
    assert [[t for _, t, _ in s] for s in sents][0] == ["NNP", "POS", "NN", "MD", "VB", "IN", "NNP", "."]
    assert all(0.0 < float(row[2]) <= 1.0 for s in sents for row in s)

    # stdin: JSON lines are recognised as pre-split words, anything else is raw text
    for stdin, expected in (
        ('["they", "walked", "slowly", "."]\n', [words[2]]),
        ("they walked slowly .\n", [words[2]]),
        ('{"words": ["they", "walked"], "id": 7}\n', [["they", "walked"]]),
    ):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert run_cli("predict", "--model", smoke_run, "--input", "-", "--output", tmp_path / "o.jsonl") == 0
        rows = read_jsonl(tmp_path / "o.jsonl")
        assert [r["words"] for r in rows] == expected and [r["tags"] for r in rows] == tagger.tag(expected)
    assert rows[0]["id"] == 7  # other fields pass through


def test_predict_on_cpu_bounds_the_kernel_caches_unless_the_user_sized_them(smoke_run, tmp_path, monkeypatch):
    """On CPU `tagtune predict` bounds oneDNN's kernel caches before its first forward
    (tests/unit/test_onednn_cache.py measures what that saves); a size the user set stays."""
    from tagtune.onednn_cache import VARIABLES

    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    src = tmp_path / "in.jsonl"
    src.write_text('["they", "walked", "slowly", "."]\n')
    args = ("predict", "--model", smoke_run, "--device", "cpu", "--input", src, "--output", tmp_path / "o.jsonl")
    assert run_cli(*args) == 0
    assert (os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"], os.environ["LRU_CACHE_CAPACITY"]) == ("64", "1")
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "8")
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
    assert run_cli(*args) == 0
    assert (os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"], os.environ["LRU_CACHE_CAPACITY"]) == ("256", "8")


KEEPING = "import sys; from tagtune import cli, cpu_malloc; rc = cli.main(sys.argv[1:]); print('keeping', cpu_malloc._KEEPING)"


def _keeps_freed_memory(*args: str) -> bool:
    """Whether a `tagtune` subcommand, run in a fresh process with glibc's defaults, left glibc keeping freed memory."""
    proc = subprocess.run(
        [sys.executable, "-c", KEEPING, *args], capture_output=True, text=True, env=glibc_default_env(), check=True
    )
    return {"True": True, "False": False}[proc.stdout.split()[-1]]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere nothing is changed")
def test_predict_and_evaluate_on_cpu_keep_freed_memory_for_reuse_unless_told_not_to(smoke_run, tmp_path):
    """`tagtune predict` and `tagtune evaluate` on CPU tell glibc to keep freed memory, as training does
    (tests/unit/test_cpu_malloc.py measures the pages it saves); `--cpu_malloc_reuse false` leaves glibc's
    defaults; the tags are the same either way."""
    src = tmp_path / "in.jsonl"
    src.write_text('["they", "walked", "slowly", "."]\n["the", "dog", "barked", "."]\n')
    said, tags = {}, {}
    for reuse in ("true", "false"):
        out = tmp_path / f"{reuse}.jsonl"
        args = ["predict", "--model", str(smoke_run), "--device", "cpu", "--input", str(src), "--output", str(out)]
        said[reuse] = _keeps_freed_memory(*args, "--cpu_malloc_reuse", reuse)
        tags[reuse] = [r["tags"] for r in read_jsonl(out)]
    assert said == {"true": True, "false": False}
    assert tags["true"] == tags["false"] and len(tags["true"]) == 2 and len(tags["true"][0]) == 4
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(smoke_run), "--device", "cpu", "--dataset", "synthetic:pos", "--out", str(out)]
    assert _keeps_freed_memory(*args) is True
    assert (out / "eval_predictions.jsonl").read_bytes() == (smoke_run / "eval_predictions.jsonl").read_bytes()


def test_predict_packs_linear_layers_as_the_run_evaluated_unless_told(smoke_run, tmp_path, monkeypatch):
    """`--cpu_packed_linear auto` (the default) follows the run, which packed (cpu_linear); true and false
    choose; the output is byte-identical either way on this model."""
    import torch

    import tagtune.cpu_linear as cpu_linear

    packs = []
    real = cpu_linear.pack
    monkeypatch.setattr(cpu_linear, "pack", lambda model, dtype: packs.append(dtype) or real(model, dtype))
    src = tmp_path / "in.jsonl"
    src.write_text('["they", "walked", "slowly", "."]\n["the", "dog", "barked", "."]\n')
    outs, packed = {}, {}
    for choice in ("auto", "true", "false"):
        outs[choice], n = tmp_path / f"{choice}.jsonl", len(packs)
        args = ["--device", "cpu", "--input", src, "--output", outs[choice], "--cpu_packed_linear", choice]
        assert run_cli("predict", "--model", smoke_run, *args) == 0
        packed[choice] = packs[n:]
    assert packed == {"auto": [torch.float32], "true": [torch.float32], "false": []}
    assert outs["auto"].read_bytes() == outs["true"].read_bytes() == outs["false"].read_bytes()
    assert len(read_jsonl(outs["auto"])) == 2


# ---- errors -----------------------------------------------------------------------------------


def test_empty_and_malformed_input_give_clear_errors(smoke_run, tagger, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("earlier results\n")
    cases = {
        "empty.txt": ("", "input has no words"),
        "blank.jsonl": ("\n  \n", "input has no words"),
        "bad.jsonl": ('{"words": ["the", "cat"]}\n{"words": ["a", "dog"\n', "bad.jsonl:2: invalid JSON line"),
        "field.jsonl": ('{"tokens": ["the", "cat"]}\n', "field.jsonl:1: missing field(s) ['words']"),
        "notlist.jsonl": ('{"words": "the cat"}\n', "must be a list of strings"),
        "emptyword.jsonl": ('["the", " ", "cat"]\n', "emptyword.jsonl:1: word 1"),
        "bad.conllu": ("1\tThe\t_\n2 cat\n", "bad.conllu:2: expected tab-separated ID and FORM"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        assert run_cli("predict", "--model", smoke_run, "--input", tmp_path / name, "--output", out) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("tagtune: error: ") and message in err, (name, err)
        assert "Traceback" not in err
    assert out.read_text() == "earlier results\n"  # nothing written over on failure

    assert run_cli("predict", "--model", tmp_path / "nope", "--input", tmp_path / "bad.jsonl") == 2
    assert "model path not found" in capsys.readouterr().err

    with pytest.raises(DataError, match="expected a list of sentences"):
        tagger.tag("The cat sat")
    with pytest.raises(DataError, match="sentence 1: word 2 is empty"):
        tagger.tag([["the", "cat"], ["a", "dog", ""]])
    assert tagger.tag([]) == [] and tagger.tag([[], ["the"]])[0] == []

    # the installed console script: exit code 2 and the message alone, for empty stdin
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "tagtune"), "predict", "--model", str(smoke_run), "--input", "-"],
        input="",
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and "input has no words" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ---- LoRA: adapter loading and merged export --------------------------------------------------


def test_lora_adapter_predicts_like_training_and_merged_export_is_identical(lora_run, tmp_path, capsys):
    trained = read_jsonl(lora_run / "eval_predictions.jsonl")
    words = [r["words"] for r in trained]
    adapter = Tagger.load(lora_run, device="cpu")
    assert adapter.is_adapter
    tags, scores = adapter.tag(words, return_scores=True)
    assert tags == [r["tags"] for r in trained]
    assert len({t for s in tags for t in s}) >= 10  # a model that learned something, not one tag everywhere
    # merged in memory, the packed weights (cpu_linear) are the merged ones, not the base model's
    inproc = Tagger.load(lora_run, device="cpu").merged()
    assert inproc.packed_linear and {
        type(m).__name__ for m in inproc.model.modules() if "Linear" in type(m).__name__
    } == {"PackedLinear"}
    assert inproc.tag(words) == tags

    merged_dir = tmp_path / "merged"
    assert run_cli("export", "--model", lora_run, "--out", merged_dir) == 2
    assert "needs --merge" in capsys.readouterr().err and not merged_dir.exists()
    assert run_cli("export", "--model", lora_run, "--merge", "--out", merged_dir) == 0
    assert (merged_dir / "model.safetensors").is_file() and not (merged_dir / "adapter_config.json").exists()

    # a plain transformers model: no peft needed, no LoRA weights left
    from safetensors import safe_open
    from transformers import AutoModelForTokenClassification

    plain = AutoModelForTokenClassification.from_pretrained(merged_dir)
    assert type(plain).__name__ == "RobertaForTokenClassification"
    assert [plain.config.id2label[i] for i in range(plain.config.num_labels)] == adapter.labels
    with safe_open(str(merged_dir / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "modules_to_save" in k]

    merged = Tagger.load(merged_dir, device="cpu")
    assert not merged.is_adapter
    m_tags, m_scores = merged.tag(words, return_scores=True)
    assert m_tags == tags
    assert max(abs(a - b) for s, t in zip(scores, m_scores) for a, b in zip(s, t)) < 1e-4

    # exporting over a non-empty folder needs --overwrite; the earlier export stays intact
    before = (merged_dir / "model.safetensors").read_bytes()
    assert run_cli("export", "--model", lora_run, "--merge", "--out", merged_dir) == 2
    assert "not empty" in capsys.readouterr().err
    assert (merged_dir / "model.safetensors").read_bytes() == before


# ---- the POS metric as a Hugging Face `evaluate` module -----------------------------------------


def test_shipped_evaluate_metric_matches_training_metrics_on_real_predictions(smoke_run, training_eval, monkeypatch):
    import evaluate

    from tagtune.hf_metric import POS_METRIC_PATH
    from tagtune.metrics import compute_metrics

    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    metric = evaluate.load(POS_METRIC_PATH)  # a local folder: no hub
    gold = [r["labels"] for r in training_eval]
    pred = [r["tags"] for r in training_eval]
    for g, p in zip(gold, pred):
        metric.add_batch(predictions=[p], references=[g])
    got = metric.compute()
    assert got == compute_metrics(gold, pred)
    final = read_json(smoke_run / "results.json")["final"]
    for key in ("accuracy", "macro_f1", "weighted_f1", "seqeval_f1"):
        assert got[key] == pytest.approx(final[key], abs=1e-12), key
    assert 0.5 < got["accuracy"] < 1.0 and got["macro_f1"] != got["accuracy"]  # real, imperfect predictions
    assert sum(t["support"] for t in got["per_tag"].values()) == got["num_words"] == final["num_words"]
    with pytest.raises(ValueError, match="sentence 0: 2 reference tags but 1 predicted"):
        metric.compute(predictions=[["DT"]], references=[["DT", "NN"]])


# ---- plain transformers / peft loading, in a process that never imports tagtune ----------------

PLAIN_LOAD = r"""
import json, sys
import torch
from peft import AutoPeftModelForTokenClassification
from transformers import AutoModelForTokenClassification, AutoTokenizer

kind, path, sentences = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if kind == "lora":
    model = AutoPeftModelForTokenClassification.from_pretrained(path)  # the one line the README promises
else:
    model = AutoModelForTokenClassification.from_pretrained(path)
tokenizer = AutoTokenizer.from_pretrained(path, add_prefix_space=True)
id2label = model.config.id2label
tags = []
for words in sentences:  # each word's tag from its first sub-token
    enc = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        best = model(**enc).logits[0].argmax(-1).tolist()
    firsts = {}
    for i, w in enumerate(enc.word_ids()):
        if w is not None and w not in firsts:
            firsts[w] = i
    tags.append([id2label[best[firsts[w]]] for w in range(len(words))])
print(json.dumps({
    "tagtune_imported": sorted(m for m in sys.modules if m.split(".")[0] == "tagtune"),
    "type": type(model).__name__,
    "num_labels": model.config.num_labels,
    "id2label": {str(k): v for k, v in id2label.items()},
    "tags": tags,
}))
"""


def plain_load(kind: str, model_dir: Path, sentences: list[list[str]], cwd: Path) -> dict:
    env = subprocess_env()
    env.pop("PYTHONPATH", None)  # transformers and peft only: tagtune is not on the path
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_LOAD, kind, str(model_dir), json.dumps(sentences)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_model_folder_loads_with_plain_transformers_or_one_line_of_peft(kind, smoke_run, lora_run, tmp_path):
    run = smoke_run if kind == "full" else lora_run
    tagger = Tagger.load(run, device="cpu")
    sentences = [r["words"] for r in read_jsonl(run / "eval_predictions.jsonl")[:25]]
    got = plain_load(kind, run / "model", sentences, tmp_path)
    assert got["tagtune_imported"] == []
    assert got["type"] == ("PeftModelForTokenClassification" if kind == "lora" else "BertForTokenClassification")
    assert got["num_labels"] == len(tagger.labels)
    assert [got["id2label"][str(i)] for i in range(len(tagger.labels))] == tagger.labels  # names, not LABEL_0
    assert got["tags"] == tagger.tag(sentences)
    if kind == "lora":
        adapter = read_json(run / "model" / "adapter_config.json")
        assert adapter["base_model_name_or_path"] == str((run / "model" / "base").resolve())
        assert read_json(run / "model" / "base" / "config.json")["id2label"]["0"] == tagger.labels[0]
