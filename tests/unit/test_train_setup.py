"""One place decides precision; AdamW groups exclude biases and LayerNorm weights from decay."""

import pytest
import torch

from tagtune import ConfigError, runtime
from tagtune.optim import make_optimizer, param_groups
from tagtune.runtime import resolve_precision


def fake_gpu(monkeypatch, capability, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)


def test_t4_fp16_ok_bf16_refused(monkeypatch):
    fake_gpu(monkeypatch, (7, 5), "Tesla T4")
    assert resolve_precision("fp16") == "fp16"
    with pytest.raises(ConfigError, match=r"Tesla T4 \(compute capability 7.5\) has no bf16"):
        resolve_precision("bf16")


def test_ampere_bf16_ok(monkeypatch):
    fake_gpu(monkeypatch, (8, 0), "A100")
    assert resolve_precision("bf16") == "bf16"


def test_cpu_fp16_runs_fp32_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: True)
    assert resolve_precision("fp16") == "no"
    assert "fp16 needs a GPU" in caplog.text
    assert resolve_precision("bf16") == "bf16"  # real autocast on CPU


def test_cpu_without_native_bf16_refuses_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert runtime.cpu_bf16_supported() is False
    with pytest.raises(ConfigError) as err:
        resolve_precision("bf16")
    msg = str(err.value)
    assert "without native bf16" in msg and "mixed_precision" in msg and "--mixed_precision no" in msg
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # the launcher's setting is checked the same way
    with pytest.raises(ConfigError, match="without native bf16"):
        resolve_precision(None)
    assert resolve_precision("no") == "no"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # AMX computes bf16 too
    assert resolve_precision("bf16") == "bf16"


def test_cpu_bf16_autocasts_through_the_accelerator(monkeypatch, tmp_path):
    from accelerate.state import AcceleratorState

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: True)  # autocast itself works on any CPU
    # an earlier in-process run of this session fixed the (process-global) Accelerator state to fp32
    AcceleratorState._reset_state(reset_partial_state=True)
    acc = runtime.make_accelerator(
        mixed_precision="bf16", gradient_accumulation_steps=1, tracker=None, output_dir=str(tmp_path), timeout_s=60
    )
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with acc.autocast():
        y = layer(x)
    assert acc.mixed_precision == "bf16" and y.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    assert layer(x).dtype == torch.float32  # outside autocast: fp32
    AcceleratorState._reset_state(reset_partial_state=True)  # leave no bf16 state to the next in-process test


def test_precision_from_accelerate_launch_env(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: True)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_precision(None) == "bf16"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert resolve_precision(None) == "no"


def test_no_decay_on_bias_and_layernorm():
    from transformers import BertConfig, BertForTokenClassification

    model = BertForTokenClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
        )
    )
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert all(n.endswith(".bias") or "LayerNorm" in n for n in nd)
    assert "bert.embeddings.LayerNorm.weight" in nd and "classifier.bias" in nd
    assert "classifier.weight" in d and "bert.encoder.layer.0.attention.self.query.weight" in d
    assert len(d) + len(nd) == len(list(model.parameters()))
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    adam = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    opt = make_optimizer(model, lr=3e-4, **adam)
    assert opt.param_groups[0]["lr"] == 3e-4
    assert opt.defaults["fused"] and not opt.defaults["foreach"]
    # under fp16 loss scaling Accelerate must see skipped steps, which a fused AdamW hides
    scaled = make_optimizer(model, lr=3e-4, loss_scaling=True, **adam)
    assert scaled.defaults["foreach"] and not scaled.defaults["fused"]
    foreach = make_optimizer(model, lr=3e-4, implementation="adamw_torch", **adam)
    assert foreach.defaults["foreach"] and not foreach.defaults["fused"]
