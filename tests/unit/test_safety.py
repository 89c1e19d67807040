"""Safety: repository code never runs unless trust_remote_code is on; weights are safetensors and
checkpoints load weights-only (a booby-trapped pickle is refused, its payload never runs); secrets
in the environment reach no file the run writes (config, checkpoints, W&B and TensorBoard files),
no log and no tracker config."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from tagtune.config import TrainConfig
from tagtune.outputs import redact
from tagtune.train import main

FAKE_WANDB_KEY = "wandb-fake-0123456789abcdef0123456789abcdef"
FAKE_HF_TOKEN = "hf_FakeTokenForTheSafetyTest0123456789"


def test_trust_remote_code_is_off_by_default_and_repo_code_never_runs(tmp_path, synthetic_bert):
    from tagtune.features import load_tokenizer
    from tagtune.modeling import build_model

    assert TrainConfig.__dataclass_fields__["trust_remote_code"].default is False
    model_dir = tmp_path / "model"
    shutil.copytree(synthetic_bert, model_dir)
    marker = tmp_path / "REMOTE_CODE_RAN"
    cfg_json = json.loads((model_dir / "config.json").read_text())
    cfg_json["auto_map"] = {"AutoConfig": "custom.Cfg", "AutoModelForTokenClassification": "custom.Model"}
    (model_dir / "config.json").write_text(json.dumps(cfg_json))
    (model_dir / "custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertConfig, BertForTokenClassification\n"
        "class Cfg(BertConfig):\n    pass\n"
        "class Model(BertForTokenClassification):\n    config_class = Cfg\n"
    )
    cfg = TrainConfig(model_name_or_path=str(model_dir), dataset_name="synthetic:pos")
    model = build_model(cfg, ["DT", "NN"])
    load_tokenizer(str(model_dir))
    assert type(model).__module__.startswith("transformers.models.bert")  # the stock class, not the repo's
    assert not marker.exists()
    # the same folder with the switch on does run it: the check above can fail
    build_model(
        TrainConfig(model_name_or_path=str(model_dir), dataset_name="synthetic:pos", trust_remote_code=True),
        ["DT", "NN"],
    )
    assert marker.exists()


def _tiny_run(out: Path, data: Path, *extra: str) -> dict:
    if not (data / "train.jsonl").exists():
        from tagtune.synthetic import generate_splits

        data.mkdir(parents=True, exist_ok=True)
        sp = generate_splits()
        for name, split in (("train", "train"), ("dev", "validation")):
            (data / f"{name}.jsonl").write_text(
                "".join(json.dumps({"words": w, "labels": t}) + "\n" for w, t in sp[split][:16])
            )
    return main(
        TrainConfig,
        [
            "--dataset_name",
            "",
            "--model_name_or_path",
            "synthetic:bert",
            "--train_file",
            str(data / "train.jsonl"),
            "--validation_file",
            str(data / "dev.jsonl"),
            "--per_device_train_batch_size",
            "8",
            "--num_train_epochs",
            "1",
            "--logging_steps",
            "1",
            "--output_dir",
            str(out),
            *extra,
        ],
    )


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_are_safetensors_and_a_pickled_payload_is_refused(tmp_path, capsys):
    out, data = tmp_path / "run", tmp_path / "data"
    _tiny_run(out, data, "--report_to", "none")
    ckpt = out / "checkpoints" / "step-2"
    assert (ckpt / "model.safetensors").is_file() and (out / "model" / "model.safetensors").is_file()
    assert not list(out.rglob("pytorch_model*.bin"))
    marker = tmp_path / "PAYLOAD_RAN"
    with open(ckpt / "optimizer.bin", "wb") as f:  # what an attacker could hand over as a "checkpoint"
        pickle.dump(_Payload(str(marker)), f)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as exit_:
        _tiny_run(out, data, "--report_to", "none", "--resume_from_checkpoint", "latest")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "cannot load checkpoint" in err and str(ckpt) in err and "weights-only" in err
    assert not marker.exists(), "the pickle payload ran"
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing rewritten


def test_redact_by_name_part_and_by_value(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_HF_TOKEN)
    cfg = {
        "hub_token": "x" * 12,
        "wandb_api_key": "y" * 12,
        "tokenizer_name": "bert-base-cased",
        "label_all_subtokens": True,
        "run_name": f"try-{FAKE_HF_TOKEN}",
        "nested": [{"password": "hunter22"}],
    }
    red = redact(cfg)
    assert red["hub_token"] == red["wandb_api_key"] == red["nested"][0]["password"] == "<redacted>"
    assert red["tokenizer_name"] == "bert-base-cased" and red["label_all_subtokens"] is True  # settings, not secrets
    assert FAKE_HF_TOKEN not in json.dumps(red)


def test_secrets_in_the_environment_reach_no_written_file_log_or_tracker(tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    monkeypatch.setenv("HF_TOKEN", FAKE_HF_TOKEN)
    monkeypatch.setenv("WANDB_MODE", "offline")
    caplog.set_level("DEBUG")
    out = tmp_path / "run"
    # the token also typed into a config value by mistake
    results = _tiny_run(
        out,
        tmp_path / "data",
        "--report_to",
        "wandb",
        "--run_name",
        f"try-{FAKE_HF_TOKEN}",
        "--checkpointing_steps",
        "1",
    )
    assert results["global_steps"] == 2
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files), "no W&B run file was written: the tracker was not exercised"
    assert (out / "run_config.json").is_file() and (out / "model" / "tagtune_config.json").is_file()
    assert list((out / "checkpoints").glob("step-*/tagtune_checkpoint.json"))
    captured = capfd.readouterr()
    for secret in (FAKE_WANDB_KEY, FAKE_HF_TOKEN):
        leaks = [str(p.relative_to(out)) for p in files if secret.encode() in p.read_bytes()]
        assert not leaks, f"secret found in {leaks}"
        assert secret not in captured.out + captured.err + caplog.text
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["run_name"] == "try-<redacted>" and run_config["label_all_subtokens"] is False


# ----------------------------------------------------------------------------------------
# numerics: a diverging run stops and keeps its last good checkpoint; fp16 overflow steps counted
# ----------------------------------------------------------------------------------------


def test_persistent_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:  # lr 1e30: the weights explode after one step, the loss is NaN after
        _tiny_run(
            out,
            tmp_path / "data",
            "--report_to",
            "none",
            "--learning_rate",
            "1e30",
            "--max_grad_norm",
            "0",
            "--checkpointing_steps",
            "1",
            "--nonfinite_loss_patience",
            "2",
            "--num_train_epochs",
            "3",
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "training loss was NaN/inf for 2 consecutive steps" in err
    good = out / "checkpoints" / "step-1"
    assert f"the last good checkpoint is {good}" in err and "--resume_from_checkpoint" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1"]  # nothing saved after the NaN
    assert all(t.isfinite().all() for t in load_file(str(good / "model.safetensors")).values())
    assert not (out / "results.json").exists()


def test_fp16_overflow_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    """fp16 loss scaling needs a GPU. On CPU the same path (scaled backward, unscale, skip on inf/NaN
    gradients, back off the scale) is driven by a real GradScaler whose scale is infinite, so every
    step's gradients overflow: each must be skipped by the fused AdamW kernel (weights unchanged) and
    counted in the log rows and results. (Under fp32 compute no finite scale overflows these gradients.)"""
    import torch
    from safetensors.torch import load_file

    import tagtune.runtime as runtime

    real = runtime.make_accelerator

    def with_loss_scaling(**kwargs):
        acc = real(**kwargs)
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=float("inf"))
        return acc

    monkeypatch.setattr(runtime, "make_accelerator", with_loss_scaling)
    out = tmp_path / "run"
    # no clipping: under real fp16 Accelerate unscales before clipping, this emulation cannot
    results = _tiny_run(
        out,
        tmp_path / "data",
        "--report_to",
        "none",
        "--max_grad_norm",
        "0",
        "--checkpointing_steps",
        "1",
        "--save_total_limit",
        "0",
    )
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert results["overflow_steps"] == results["global_steps"] == 2
    assert [h["overflow_steps"] for h in history] == [1, 2]  # logged every step, cumulative
    w1 = load_file(str(out / "checkpoints" / "step-1" / "model.safetensors"))
    w2 = load_file(str(out / "checkpoints" / "step-2" / "model.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # the skipped step left the weights alone
