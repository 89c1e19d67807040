"""Linear layers on weights packed once for oneDNN, at inference on CPU: what they compute, that autograd and
unpacking get the live weights back, and who packs (the Tagger as the run evaluated, the trainer's evaluation
for its duration only)."""

import pytest
import torch
from conftest import model_recording, smoke_config, tiny_sdpa_batch, tiny_sdpa_bert

from tagtune import cpu_linear
from tagtune.cpu_linear import PackedLinear

pytestmark = pytest.mark.skipif(not cpu_linear.supported(torch.float32), reason="torch built without oneDNN")


def linears(model: torch.nn.Module) -> list[type]:
    return [type(m) for m in model.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_packed_model_computes_what_its_linear_layers_compute(dtype):
    if not cpu_linear.supported(dtype):
        pytest.skip(f"no native {dtype} on this CPU")  # bf16 packing is refused there, tested below
    model = tiny_sdpa_bert().to(dtype).eval()
    ids, mask = tiny_sdpa_batch()
    with torch.inference_mode():
        before = model(input_ids=ids, attention_mask=mask).logits
        assert cpu_linear.pack(model, dtype) == 2 * 6 + 1  # per layer q, k, v, o, up, down; the classifier
        assert set(linears(model)) == {PackedLinear}
        packed = model(input_ids=ids, attention_mask=mask).logits
        assert cpu_linear.unpack(model) == 13
        after = model(input_ids=ids, attention_mask=mask).logits
    assert set(linears(model)) == {torch.nn.Linear}
    assert not any(hasattr(m, "packed") for m in model.modules())
    assert torch.equal(after, before)  # unpacked: torch's own Linear again
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # another GEMM kernel: the last bits differ
    torch.testing.assert_close(packed, before, rtol=tol, atol=tol)
    assert not torch.equal(packed, torch.zeros_like(packed))


def test_a_packed_layer_is_a_snapshot_for_inference_and_live_for_autograd():
    """Changed weights reach autograd (the live weights) but not inference on the packed copy: why only
    frozen weights are packed, and training's evaluation unpacks at its end."""
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(8, 4), torch.randn(3, 8)
    old = layer.weight.detach().clone()
    cpu_linear.pack(layer, torch.float32)
    with torch.no_grad():
        layer.weight.add_(1.0)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, old, layer.bias))
    y = layer(x)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, layer.weight, layer.bias))
    y.sum().backward()
    torch.testing.assert_close(layer.weight.grad, x.sum(0).expand(4, 8))


def test_the_block_unpacks_however_it_ends_and_none_packs_nothing():
    model = tiny_sdpa_bert()
    with pytest.raises(KeyError), cpu_linear.packed(model, torch.float32) as n:
        assert n == 13 and set(linears(model)) == {PackedLinear}
        raise KeyError("evaluation failed")
    assert set(linears(model)) == {torch.nn.Linear}
    with cpu_linear.packed(model, None) as n:
        assert n == 0 and set(linears(model)) == {torch.nn.Linear}


def test_dtypes_oneDNN_cannot_run_well_pack_nothing(monkeypatch):
    model = tiny_sdpa_bert()
    assert not cpu_linear.supported(torch.float16)
    assert cpu_linear.pack(model.half(), torch.float16) == 0
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)  # a CPU without native bf16
    assert cpu_linear.pack(model.bfloat16(), torch.bfloat16) == 0
    assert set(linears(model)) == {torch.nn.Linear}


@pytest.mark.parametrize("recorded", [True, False, None])
def test_the_tagger_packs_as_the_run_evaluated(smoke_run, tmp_path, recorded):
    """Recorded with the run (true by default); a run saved before the setting existed did not pack, so its
    predictions still reproduce its evaluation; an explicit choice wins."""
    from tagtune.tagger import Tagger

    model_dir = tmp_path / "model"
    assert model_recording(smoke_run, model_dir, "cpu_packed_linear", recorded) is True  # recorded with the model
    tagger = Tagger.load(model_dir, device="cpu")
    assert tagger.packed_linear is (recorded is True)
    assert set(linears(tagger.model)) == {PackedLinear if recorded else torch.nn.Linear}
    forced = Tagger.load(model_dir, device="cpu", packed_linear=not recorded)
    assert set(linears(forced.model)) == {torch.nn.Linear if recorded else PackedLinear}
    words = [["the", "cat", "saw", "a", "dog"], ["a", "dog"] * 9]
    assert tagger.tag(words) == forced.tag(words)


@pytest.mark.parametrize("on", [True, False])
def test_the_trainers_evaluation_packs_for_its_forward_passes_only(tmp_path, monkeypatch, on):
    """Packed while the evaluation's forward passes run, in the evaluation's precision; plain Linear layers
    again for training after it."""
    import tagtune.train as train
    from tagtune.train import TrainingRecipe

    seen = []
    real = train.gather_positions
    monkeypatch.setattr(
        train,
        "gather_positions",
        lambda acc, model, *a, **k: seen.append(set(linears(model))) or real(acc, model, *a, **k),
    )
    recipe = TrainingRecipe(smoke_config(tmp_path, max_steps=1, cpu_packed_linear=on))
    try:
        recipe.setup()
        precision = torch.bfloat16 if recipe.accelerator.mixed_precision == "bf16" else torch.float32
        assert recipe.eval_linear_dtype == (precision if on else None)
        metrics = recipe._evaluate()
        assert seen == [{PackedLinear if on else torch.nn.Linear}]
        assert set(linears(recipe.model)) == {torch.nn.Linear}
        assert metrics["accuracy"] > 0
    finally:
        recipe.cleanup()
