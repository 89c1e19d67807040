"""The smoke recipe end to end through `accelerate launch`: it learns, writes every output, and
the saved model reloads in a fresh process with plain transformers / peft."""

import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT, accelerate_launch, read_json, run_cmd

RELOAD = r"""
import json, sys, torch
from transformers import AutoModelForTokenClassification, AutoTokenizer
from tagtune.synthetic import generate_splits
model_dir, kind = sys.argv[1], sys.argv[2]
if kind == "lora":
    from peft import PeftModel
    tc = json.load(open(f"{model_dir}/tagtune_config.json"))
    labels = tc["labels"]
    base = AutoModelForTokenClassification.from_pretrained(json.load(open(f"{model_dir}/adapter_config.json"))["base_model_name_or_path"],
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    model = PeftModel.from_pretrained(base, model_dir)
    id2label = dict(enumerate(labels))
else:
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    id2label = model.config.id2label
tok = AutoTokenizer.from_pretrained(model_dir)
model.eval()
right = total = 0
for words, tags in generate_splits()["validation"]:
    enc = tok(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        pred = model(**enc).logits[0].argmax(-1).tolist()
    seen = set()
    for pos, w in enumerate(enc.word_ids()):
        if w is not None and w not in seen:
            seen.add(w)
            right += id2label[pred[pos]] == tags[w]
            total += 1
print(json.dumps({"accuracy": right / total, "words": total}))
"""


def reload_accuracy(model_dir: Path, kind: str) -> dict:
    proc = run_cmd([sys.executable, "-c", RELOAD, str(model_dir), kind])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_smoke_recipe_learns_and_outputs_reload(tmp_path):
    out = tmp_path / "smoke"
    proc = accelerate_launch("recipes/smoke.py", ["--output_dir", str(out)], num_processes=1)
    res = read_json(out / "results.json")
    assert res["num_processes"] == 1
    assert res["final"]["accuracy"] >= 0.9, res["final"]
    assert res["final"]["macro_f1"] >= 0.85
    assert res["eval_words"] == res["final"]["num_words"] > 3000
    # every output file of the README's table
    for name in (
        "epochs.csv",
        "epochs.md",
        "epochs.json",
        "per_tag.csv",
        "per_tag.md",
        "history.jsonl",
        "run_config.json",
        "model/model.safetensors",
        "model/config.json",
        "model/tokenizer.json",
        "model/tagtune_config.json",
    ):
        assert (out / name).is_file(), name
    epochs = read_json(out / "epochs.json")
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    header = (out / "epochs.csv").read_text().splitlines()[0]
    assert header.startswith("Epoch,Training Loss,Validation Loss,Precision,Recall,F1,Accuracy")
    assert "report-compatible" in (out / "epochs.md").read_text()
    assert "Training Loss" in proc.stdout and "trainable params: " in proc.stdout  # table printed at the end
    config = json.loads((out / "model" / "config.json").read_text())
    assert list(config["id2label"].values()) == res["labels"] == sorted(res["labels"])
    # a fresh process with plain transformers gets the same accuracy, word for word counted once
    again = reload_accuracy(out / "model", "full")
    assert again["words"] == res["eval_words"]
    assert again["accuracy"] == pytest.approx(res["final"]["accuracy"], abs=1e-12)


def test_lora_adapter_reloads_with_peft(tmp_path):
    out = tmp_path / "lora"
    accelerate_launch(
        "recipes/smoke.py",
        ["--output_dir", str(out), "--method", "lora", "--max_steps", "40", "--learning_rate", "1e-2"],
        num_processes=1,
    )
    res = read_json(out / "results.json")
    assert (out / "model" / "adapter_model.safetensors").stat().st_size > 10_000  # not the empty-adapter failure
    assert res["trainable_params"] < res["unique_params"]
    again = reload_accuracy(out / "model", "lora")
    assert again["accuracy"] == pytest.approx(res["final"]["accuracy"], abs=1e-12)


def test_output_dir_of_another_run_is_refused(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "run_config.json").write_text("{}")
    with pytest.raises(AssertionError, match="already holds another run"):
        run_cmd([sys.executable, str(ROOT / "recipes" / "smoke.py"), "--output_dir", str(out)])
    assert (out / "run_config.json").read_text() == "{}"  # untouched
