"""DeepSpeed ZeRO-1/2/3 x (full, LoRA) on 2 CPU processes (gloo), each launched exactly as a user would:
`accelerate launch --config_file accelerate_configs/deepspeed_zero<N>.yaml --num_processes 2 recipes/smoke.py`.

Each run must be really distributed under DeepSpeed at the intended stage (2 processes, DEEPSPEED, the
checkpoint's recorded ZeRO stage and one shard per process), score every validation word once, follow the
single-process loss curve at the same global batch, and save a model/adapter that a fresh process reloads
with plain transformers/peft to the same predictions as the model at the end of training (under ZeRO-3 the
LoRA adapter must hold every LoRA and classifier weight, not the empty file of the well-known failure).
Then: DeepSpeed save_state/load_state resume is exact, resuming at another world size fails pointing at
zero_to_fp32, and launch/zero_to_fp32.sh turns a ZeRO-3 checkpoint into a plain model with the same predictions.
The first DeepSpeed run compiles deepspeed_shm_comm (~30 s; cached in TORCH_EXTENSIONS_DIR by conftest).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from _scaleout_common import (
    ZERO_EXTRA,
    assert_same_predictions,
    check_run,
    launch,
    losses,
    reference,
    reload_in_fresh_process,
    shared_launch,
)
from conftest import ROOT, read_json, run_cmd
from safetensors.torch import load_file

MATRIX = [(stage, method) for stage in (1, 2, 3) for method in ("full", "lora")]


@pytest.fixture(scope="module")
def zero_runs(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    runs = {}
    for stage, method in MATRIX:
        runs[stage, method] = shared_launch(f"deepspeed_zero{stage}", method, root, *ZERO_EXTRA)
    return runs


@pytest.fixture(scope="module")
def converted(zero_runs, tmp_path_factory):
    """launch/zero_to_fp32.sh on the final ZeRO-3 checkpoints, as a run folder the reload check can read."""
    root = tmp_path_factory.mktemp("fp32")
    out = {}
    for method in ("full", "lora"):
        run = zero_runs[3, method]
        folder = root / method
        folder.mkdir()
        shutil.copy(run / "eval_predictions.jsonl", folder)
        run_cmd(
            [
                "bash",
                str(ROOT / "launch" / "zero_to_fp32.sh"),
                str(run / "checkpoints" / "step-4"),
                str(folder / "model"),
            ],
            PYTHON=shutil.which("python") or "python",
        )
        out[method] = folder
    return out


@pytest.fixture(scope="module")
def reloaded(zero_runs, converted):
    return reload_in_fresh_process([*zero_runs.values(), *converted.values()])


@pytest.mark.parametrize("stage,method", MATRIX)
def test_zero_two_processes(stage, method, zero_runs, reloaded, tmp_path_factory):
    run = zero_runs[stage, method]
    check_run(run, "DEEPSPEED", reference(method, tmp_path_factory.getbasetemp()))
    ckpt = run / "checkpoints" / "step-4"
    meta = read_json(ckpt / "tagtune_checkpoint.json")
    assert (meta["zero_stage"], meta["world_size"]) == (stage, 2)
    assert sorted(p.name for p in (ckpt / "pytorch_model").glob("zero_pp_rank_*_optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    assert_same_predictions(run, reloaded)
    info = reloaded[str(run)]["load_info"]
    if method == "full":
        assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == [], info
    else:
        shapes = info["adapter_shapes"]
        for layer in (0, 1):  # synthetic BERT: 2 layers, hidden 64; LoRA r=8 on query and value
            for mod in ("query", "value"):
                key = f"base_model.model.bert.encoder.layer.{layer}.attention.self.{mod}"
                assert shapes[f"{key}.lora_A.weight"] == [8, 64] and shapes[f"{key}.lora_B.weight"] == [64, 8], shapes
        n_labels = len(read_json(run / "results.json")["labels"])
        assert shapes["base_model.model.classifier.weight"] == [n_labels, 64]
        assert shapes["base_model.model.classifier.bias"] == [n_labels]
        assert info["adapter_bytes"] > 15_000 and info["lora_B_abs_sum"] > 0  # trained, not the empty-adapter failure


def test_zero_to_fp32_gives_a_plain_model(zero_runs, converted, reloaded):
    for folder in converted.values():
        assert_same_predictions(folder, reloaded)
        info = reloaded[str(folder)]["load_info"]
        assert info["missing_keys"] == [] and info["unexpected_keys"] == [], info
    # full fine-tuning: DeepSpeed's fp32 reconstruction equals the model saved at the end, weight for weight
    legacy = {"gamma": "weight", "beta": "bias"}  # transformers may write LayerNorm weights under their old names
    norm = lambda k: ".".join(legacy.get(part, part) for part in k.split("."))  # noqa: E731
    saved = {norm(k): v for k, v in load_file(zero_runs[3, "full"] / "model" / "model.safetensors").items()}
    conv = {norm(k): v for k, v in load_file(converted["full"] / "model" / "model.safetensors").items()}
    assert saved.keys() == conv.keys()
    assert all(torch.equal(saved[k].float(), conv[k]) for k in saved)


def test_zero3_resume_from_checkpoint_is_exact(zero_runs, tmp_path):
    """save_state at step 2 under ZeRO-3, load_state in a new launch: the same steps 3-4 and final model."""
    run = zero_runs[3, "full"]
    resumed = launch(
        "deepspeed_zero3",
        "full",
        tmp_path / "resumed",
        "--resume_from_checkpoint",
        str(run / "checkpoints" / "step-2"),
    )
    results = read_json(resumed / "results.json")
    assert results["resumed_from"].endswith("step-2") and results["distributed_type"] == "DEEPSPEED"
    assert losses(resumed) == pytest.approx(losses(run), rel=1e-6, abs=0)
    assert (resumed / "eval_predictions.jsonl").read_text() == (run / "eval_predictions.jsonl").read_text()
    assert results["final"]["eval_loss"] == pytest.approx(
        read_json(run / "results.json")["final"]["eval_loss"], rel=1e-6
    )


def test_zero_checkpoint_at_another_world_size_points_at_zero_to_fp32(zero_runs, tmp_path):
    """The 2-process ZeRO-3 checkpoint resumed by 1 process (same global batch): refused, naming the fix."""

    from _scaleout_common import recipe_args
    from conftest import accelerate_launch

    run = zero_runs[3, "full"]
    proc = accelerate_launch(
        "recipes/smoke.py",
        recipe_args(tmp_path / "one", "full", 16, "--resume_from_checkpoint", str(run / "checkpoints" / "step-2")),
        num_processes=1,
        extra_launch=["--config_file", str(ROOT / "accelerate_configs" / "deepspeed_zero3.yaml")],
        check=False,
    )
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("tagtune: error:"))
    message = " ".join(lines[at : at + 2])  # the error, then its "Fix:" line
    assert "written by 2 processes, this launch has 1" in message and "zero_to_fp32" in message, message
    assert "tagtune convert-checkpoint --to universal" in message, message  # the conversion that keeps the optimizer
    assert not (tmp_path / "one" / "results.json").exists()
    assert json.loads((run / "checkpoints" / "step-2" / "tagtune_checkpoint.json").read_text())["world_size"] == 2
