"""bf16 attention as two matmuls for short batches at inference on CPU: its math, where the dispatcher
uses it and where it leaves transformers' SDPA alone, and who marks a model for it (the trainer on CPU
unless told not to, the Tagger as the run evaluated)."""

import pytest
import torch
from conftest import model_recording, smoke_config, tiny_sdpa_batch, tiny_sdpa_bert

import tagtune.cpu_attention as ca
from tagtune import cpu_dropout


@pytest.fixture
def calls(monkeypatch):
    """Every call of the half-precision path, by padded length."""
    seen = []
    real = ca.half_matmul_attention
    monkeypatch.setattr(ca, "half_matmul_attention", lambda q, *a: seen.append(q.shape[2]) or real(q, *a))
    return seen


def test_the_math_is_softmax_of_bf16_products_in_float32():
    """Exactly: scores = bf16(q kᵀ) in float32 × scale, masked, softmax in float32, rounded to bf16, times v;
    and close to float32 attention (bf16's precision)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 8) for _ in range(3))
    mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    mask[1, :, :, 5:] = False
    qb, kb, vb = (x.to(torch.bfloat16) for x in (q, k, v))
    out = ca.half_matmul_attention(qb, kb, vb, mask, 0.3)
    scores = (qb @ kb.transpose(-1, -2)).float() * 0.3
    probs = torch.softmax(scores.masked_fill(~mask, torch.finfo(torch.float32).min), -1).to(torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 7, 4, 8)
    assert torch.equal(out, (probs @ vb).transpose(1, 2))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3).transpose(1, 2)
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)
    additive = torch.zeros(2, 1, 7, 7).masked_fill(~mask, torch.finfo(torch.float32).min)
    assert torch.equal(ca.half_matmul_attention(qb, kb, vb, additive, 0.3), out)


def test_used_for_short_bf16_inference_in_a_marked_model_only(calls):
    """A marked model in bf16 evaluation takes the matmul path up to HALF_MATMUL_MAX_LENGTH (one call per
    layer) and SDPA above it; its logits stay within bf16's precision of SDPA's. float32, training, and an
    unmarked model in the same process never take it."""
    marked, other = tiny_sdpa_bert().eval(), tiny_sdpa_bert().eval()
    assert ca.use_half_matmul_attention(marked)
    marked.bfloat16()
    other.bfloat16()
    short, long_ = tiny_sdpa_batch(ca.HALF_MATMUL_MAX_LENGTH), tiny_sdpa_batch(ca.HALF_MATMUL_MAX_LENGTH + 1)
    with torch.inference_mode():
        a = marked(input_ids=short[0], attention_mask=short[1]).logits
        assert calls == [ca.HALF_MATMUL_MAX_LENGTH] * 2
        b = other(input_ids=short[0], attention_mask=short[1]).logits
        marked(input_ids=long_[0], attention_mask=long_[1])
    assert calls == [ca.HALF_MATMUL_MAX_LENGTH] * 2  # neither the unmarked model nor the long batch
    real = short[1].bool()
    torch.testing.assert_close(a[real].float(), b[real].float(), atol=0.05, rtol=0.05)
    marked.float()
    other.float()
    with torch.inference_mode():
        torch.testing.assert_close(
            marked(input_ids=short[0], attention_mask=short[1]).logits,
            other(input_ids=short[0], attention_mask=short[1]).logits,
            rtol=0,
            atol=0,
        )
    marked.bfloat16().train()
    marked(input_ids=short[0], attention_mask=short[1]).logits.float().sum().backward()
    assert calls == [ca.HALF_MATMUL_MAX_LENGTH] * 2


@pytest.mark.parametrize(
    "use, mark",
    [(ca.use_half_matmul_attention, ca.MARK), (cpu_dropout.use_bulk_attention_dropout, cpu_dropout.MARK)],
    ids=["half_matmul", "bulk_dropout"],
)
def test_left_alone_when_not_sdpa(use, mark):
    """Both marks go through ``cpu_attention.mark``, which leaves a model whose attention is not SDPA alone."""
    model = tiny_sdpa_bert().eval()
    model.config._attn_implementation = "eager"
    assert not use(model)
    assert not any(getattr(m, mark, False) for m in model.modules())


@pytest.mark.parametrize("on", [True, False])
def test_trainer_marks_its_model_on_cpu_unless_told_not_to(tmp_path, on):
    """Both marks go through one registered function, so bulk dropout and this path coexist."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from tagtune.train import TrainingRecipe

    recipe = TrainingRecipe(smoke_config(tmp_path, max_steps=1, cpu_half_matmul_attention=on))
    try:
        recipe.setup()
        modules = list(recipe.model.modules())
    finally:
        recipe.cleanup()
    assert all(getattr(m, ca.MARK, False) for m in modules) is on
    assert not any(getattr(m, ca.MARK, False) for m in modules) is not on
    assert all(getattr(m, cpu_dropout.MARK, False) for m in modules)
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is ca.attention


@pytest.mark.parametrize("on", [True, False])
def test_tagger_follows_the_run(smoke_run, tmp_path, on):
    """Predictions match the run's evaluation: the Tagger uses the path when the run did."""
    from tagtune.tagger import Tagger

    model_dir = tmp_path / "model"
    assert model_recording(smoke_run, model_dir, "cpu_half_matmul_attention", on) is True  # recorded with the model
    tagger = Tagger.load(model_dir, device="cpu", dtype="bfloat16")
    assert all(getattr(m, ca.MARK, False) for m in tagger.model.modules()) is on
