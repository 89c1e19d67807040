"""A batch run in parts has the gradient and loss of one pass; only oversized batches are split."""

import pytest
import torch
from accelerate import Accelerator
from transformers import BertConfig, BertForTokenClassification

from tagtune import TrainConfig
from tagtune.errors import ConfigError
from tagtune.microbatch import (
    CPU_DEFAULT_TOKENS,
    forward_backward,
    resolve_micro_batch_tokens,
    sentence_cost,
    split_batch,
)


def _batch(rows: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(rows, length, dtype=torch.long)
    lengths = torch.randint(3, length + 1, (rows,), generator=g)
    lengths[0] = length
    for i, n in enumerate(lengths.tolist()):
        mask[i, n:] = 0
    labels = torch.randint(0, 5, (rows, length), generator=g)
    labels[mask == 0] = -100
    labels[:, 0] = -100  # [CLS]
    labels[:, 2::3] = -100  # non-first sub-tokens
    return {
        "input_ids": torch.randint(5, 99, (rows, length), generator=g) * mask,
        "attention_mask": mask,
        "labels": labels,
        "word_ids": torch.where(labels >= 0, 0, -1),
        "sent_ids": torch.arange(rows),
    }


def _model() -> BertForTokenClassification:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=5,
        hidden_dropout_prob=0.0,  # no dropout: one pass and parts must agree to rounding
        attention_probs_dropout_prob=0.0,
    )
    return BertForTokenClassification(cfg)


def _grads(
    model: torch.nn.Module, batch: dict, max_tokens: int, attention_length: int = 0
) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = forward_backward(model, batch, max_tokens, Accelerator(cpu=True), attention_length)
    return float(loss), [p.grad.clone() for p in model.parameters()]


def test_split_sizes_and_untouched_batches():
    batch = _batch(16, 40)
    assert split_batch(batch, 0, 0) == [batch]  # 0: never
    assert split_batch(batch, 16 * 40, 0) == [batch]  # at the budget: one pass, the same tensors
    parts = split_batch(batch, 100, 0)  # 2 sentences of 40 per part
    assert [p["input_ids"].shape[0] for p in parts] == [2] * 8
    # as even as possible: 16 sentences, at most 6 per part -> 3 parts of 5, 5, 6 (not 6, 6, 4)
    assert [p["input_ids"].shape[0] for p in split_batch(batch, 240, 0)] == [5, 5, 6]
    assert torch.equal(torch.cat([p["labels"] for p in parts]), batch["labels"])
    assert torch.equal(torch.cat([p["sent_ids"] for p in parts]), batch["sent_ids"])
    # a budget below one sentence still makes progress: one sentence per part
    assert len(split_batch(batch, 10, 0)) == 16


@pytest.mark.parametrize("max_tokens", [100, 20, 200])  # 5, 1 and 10 (+2) sentences per part
def test_parts_have_the_one_pass_gradient_and_loss(max_tokens):
    model, batch = _model(), _batch(12, 20, seed=1)
    whole_loss, whole = _grads(model, batch, 0)
    part_loss, parts = _grads(model, batch, max_tokens)
    assert len(split_batch(batch, max_tokens, 0)) > 1
    assert part_loss == pytest.approx(whole_loss, rel=1e-5)
    for a, b in zip(whole, parts):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # and the one-pass loss is the model's own mean over labelled positions
    with torch.no_grad():
        hf = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert whole_loss == pytest.approx(float(hf), rel=1e-5)


def test_long_sentences_count_as_their_attention():
    """Past attention_length a sentence counts length x length / attention_length: long batches run in
    smaller parts, and batches of sentences up to that length are split exactly as before."""
    assert sentence_cost(64, 64) == 64 and sentence_cost(40, 64) == 40 and sentence_cost(200, 0) == 200
    assert sentence_cost(96, 64) == 144 and sentence_cost(200, 64) == 625  # ceil(200 * 200 / 64)

    def sizes(rows: int, length: int, att: int) -> list[int]:
        return [p["input_ids"].shape[0] for p in split_batch(_batch(rows, length), 1024, att)]

    assert sizes(16, 64, 64) == [16]  # 1,024 sub-tokens, no longer than the knee: one pass, as before
    assert sizes(16, 96, 0) == [8, 8]  # padded sub-tokens only: 10 per part
    assert sizes(16, 96, 64) == [5, 5, 6]  # 144 each: 7 per part
    assert sizes(16, 200, 64) == [1] * 16  # 625 each: one sentence per part
    assert sizes(16, 200, 0) == [4, 4, 4, 4]  # 5 per part by sub-tokens alone


def test_parts_by_attention_have_the_one_pass_gradient():
    model, batch = _model(), _batch(6, 24, seed=2)
    whole_loss, whole = _grads(model, batch, 0)
    part_loss, parts = _grads(model, batch, 200, attention_length=12)  # 24 counts as 48: 4 sentences per part
    assert [p["input_ids"].shape[0] for p in split_batch(batch, 200, 12)] == [3, 3]
    assert part_loss == pytest.approx(whole_loss, rel=1e-5)
    for a, b in zip(whole, parts):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_budget_resolution():
    # by activation bytes: fp32 activations are twice bf16's, so half the sub-tokens per pass
    assert resolve_micro_batch_tokens(None, "cpu", deepspeed=False, precision="bf16") == CPU_DEFAULT_TOKENS == 1024
    assert resolve_micro_batch_tokens(None, "cpu", deepspeed=False, precision="no") == 512
    assert resolve_micro_batch_tokens(None, "cuda", deepspeed=False, precision="bf16") == 0
    assert resolve_micro_batch_tokens(512, "cuda", deepspeed=False, precision="fp16") == 512
    assert resolve_micro_batch_tokens(0, "cpu", deepspeed=False, precision="no") == 0
    assert resolve_micro_batch_tokens(1024, "cpu", deepspeed=False, precision="no") == 1024  # asked for: kept
    assert (
        resolve_micro_batch_tokens(512, "cpu", deepspeed=True, precision="no") == 0
    )  # DeepSpeed: its own micro-steps


def test_negative_budget_is_refused_with_the_field_named():
    with pytest.raises(ConfigError, match="micro_batch_tokens"):
        TrainConfig(model_name_or_path="m", train_file="t.conllu", micro_batch_tokens=-1)
    with pytest.raises(ConfigError, match="micro_batch_attention_length"):
        TrainConfig(model_name_or_path="m", train_file="t.conllu", micro_batch_attention_length=-1)
    assert TrainConfig(model_name_or_path="m", train_file="t.conllu").micro_batch_attention_length == 64
