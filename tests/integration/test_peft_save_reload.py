"""Each peft method trains, saves its adapter, reloads in a fresh Tagger and predicts exactly what the
training evaluation predicted; the run logs its parameter-count line and names its method."""

import json

import pytest
from conftest import read_json, train_smoke

from tagtune.tagger import Tagger


@pytest.mark.parametrize(
    "args, name, adapter_type",
    [
        (["--method", "lora", "--use_dora", "true"], "lora+dora", "LORA"),
        (["--method", "lora", "--use_rslora", "true"], "lora+rslora", "LORA"),
        (["--method", "peft", "--peft_method", "ia3"], "ia3", "IA3"),
        (["--method", "peft", "--peft_method", "loha"], "loha", "LOHA"),
        (["--method", "peft", "--peft_method", "lokr"], "lokr", "LOKR"),
    ],
)
def test_peft_method_saves_and_reloads(tmp_path, caplog, args, name, adapter_type):
    caplog.set_level("INFO", logger="tagtune")
    out = train_smoke(
        tmp_path / name, *args, "--max_train_samples", "128", "--max_eval_samples", "60", "--num_train_epochs", "1"
    )
    res = read_json(out / "results.json")
    assert res["method"] == name
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("trainable params:"))
    assert f"trainable params: {res['trainable_params']:,}" in line and line.endswith(f"({name})")
    assert 0 < res["trainable_params"] < res["unique_params"]
    adapter = read_json(out / "model" / "adapter_config.json")
    assert adapter["peft_type"] == adapter_type
    assert adapter.get("use_dora", False) == (name == "lora+dora")
    assert adapter.get("use_rslora", False) == (name == "lora+rslora")
    rows = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    tagger = Tagger.load(out, device="cpu")
    assert tagger.is_adapter
    assert tagger.tag([r["words"] for r in rows]) == [r["tags"] for r in rows]
