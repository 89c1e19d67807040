"""Two-process CPU DDP (gloo) through a real `accelerate launch` with accelerate_configs/multi_gpu.yaml,
full fine-tuning and LoRA: really distributed (2 processes, MULTI_CPU), every validation word scored
once, the single-process loss curve at the same global batch, and a saved model/adapter that a fresh
process reloads with plain transformers/peft to the same predictions as the model at the end of training.
~45 s (two launches of ~15 s, the single-process references, one reload process).
"""

from __future__ import annotations

import pytest
from _scaleout_common import assert_same_predictions, check_run, launch, reference, reload_in_fresh_process

METHODS = ["full", "lora"]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return {m: launch("multi_gpu", m, root / f"ddp-{m}") for m in METHODS}


@pytest.fixture(scope="module")
def reloaded(ddp_runs):
    return reload_in_fresh_process(list(ddp_runs.values()))


@pytest.mark.parametrize("method", METHODS)
def test_cpu_ddp_two_processes(method, ddp_runs, reloaded, tmp_path_factory):
    run = ddp_runs[method]
    check_run(run, "MULTI_CPU", reference(method, tmp_path_factory.getbasetemp()))
    assert_same_predictions(run, reloaded)
    info = reloaded[str(run)]["load_info"]
    if method == "full":
        assert info["missing_keys"] == [] and info["unexpected_keys"] == [], info
    else:
        assert any("lora_A" in k for k in info["adapter_shapes"]) and info["lora_B_abs_sum"] > 0


def test_multi_gpu_config_without_cpu_flag_is_refused(tmp_path):
    """The silent failure from the notes: on CPU, multi_gpu.yaml without ACCELERATE_USE_CPU=1 starts two
    processes that would each train alone. The trainer must stop with a message, not train twice."""
    with pytest.raises(AssertionError) as err:
        launch("multi_gpu", "lora", tmp_path / "run", "--max_steps", "1", ACCELERATE_USE_CPU="0")
    assert "each would train alone" in str(err.value) and "ACCELERATE_USE_CPU=1" in str(err.value)
    assert not (tmp_path / "run" / "results.json").exists()
