"""Parameter counts of every peft method on a bert-base-cased shape (meta device), computed by hand."""

import pytest
from test_modeling import bert_base_cased  # the study's shape, 48 labels

from tagtune import TrainConfig
from tagtune.errors import ConfigError
from tagtune.modeling import AdapterSpec, count_parameters, model_from_config

CLASSIFIER = 768 * 48 + 48  # 36,912: trained in full by every method
BASE = 108_051_504 - 294_912  # unique weights of the plain model


@pytest.mark.parametrize(
    "kw, adapter",
    [
        (dict(method="lora"), 12 * 2 * 8 * (768 + 768)),  # query, value: A (8x768) + B (768x8)
        (dict(method="lora", use_rslora=True), 12 * 2 * 8 * (768 + 768)),  # same weights, other scaling
        (dict(method="lora", use_dora=True), 12 * 2 * (8 * (768 + 768) + 768)),  # + a magnitude per output
        # IA3: key, value (one scale per output) and both output.dense (one per input: 768 and 3072)
        (dict(method="peft", peft_method="ia3"), 12 * (768 + 768 + 768 + 3072)),
        (dict(method="peft", peft_method="loha"), 12 * 2 * 2 * 8 * (768 + 768)),  # two low-rank pairs
        # LoKr: 768 = 24 x 32; w1 full 24x24, w2 low-rank (32x8)(8x32)
        (dict(method="peft", peft_method="lokr"), 12 * 2 * (24 * 24 + 2 * 32 * 8)),
        # all-linear: q, k, v, attention output (768->768) + intermediate (768->3072) + output (3072->768)
        (dict(method="lora", lora_target_modules=["all-linear"]), 12 * 8 * (4 * 1536 + 2 * (768 + 3072))),
    ],
)
def test_trainable_counts_by_method(kw, adapter):
    c = count_parameters(
        model_from_config(bert_base_cased(), AdapterSpec.from_config(TrainConfig(dataset_name="synthetic:pos", **kw)))
    )
    assert c.trainable == adapter + CLASSIFIER
    assert c.unique == BASE + adapter  # the frozen original classifier is counted once
    assert f"trainable params: {c.trainable:,}" in c.line()


def test_rslora_scales_by_sqrt_rank():
    cfg = TrainConfig(dataset_name="synthetic:pos", method="lora", use_rslora=True, lora_r=16, lora_alpha=16)
    model = model_from_config(bert_base_cased(), AdapterSpec.from_config(cfg))
    query = model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert query.scaling["default"] == pytest.approx(16 / 4)  # alpha / sqrt(r), not alpha / r = 1


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(method="lora", peft_method="ia3"), "peft_method"),
        (dict(method="full", use_dora=True), "method"),
        (dict(method="peft", peft_method="ia3", use_rslora=True), "use_rslora"),
        (dict(method="lora", lora_target_modules=["all-linear", "query"]), "lora_target_modules"),
        (dict(method="lora", lora_target_modules=["classifier"]), "lora_target_modules"),
    ],
)
def test_inconsistent_peft_settings_are_config_errors(kw, field):
    with pytest.raises(ConfigError, match=field):
        model_from_config(bert_base_cased(), AdapterSpec.from_config(TrainConfig(dataset_name="synthetic:pos", **kw)))
