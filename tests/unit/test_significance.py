"""Intervals and verdicts of `tagtune reproduce` against hand-computed values; the study's data file."""

import math

import numpy as np
import pytest

from tagtune.significance import (
    Interval,
    mean_std,
    paired_bootstrap,
    per_sentence_correct,
    verdict,
    welch_interval,
)
from tagtune.study_compare import load_study


def test_mean_std_uses_the_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    assert mean_std([0.5]) == (0.5, 0.0, 1)
    with pytest.raises(ValueError):
        mean_std([])


def test_welch_interval_by_hand():
    a, b = [0.970, 0.972, 0.974], [0.975, 0.977, 0.979]
    iv = welch_interval(a, b)
    # equal variances 4e-6, n=3: se = sqrt(2 * 4e-6 / 3), df = 4, t(0.975, 4) = 2.7764451
    se = math.sqrt(2 * 4e-6 / 3)
    assert iv.diff == pytest.approx(0.005)
    assert iv.low == pytest.approx(0.005 - 2.7764451 * se, abs=1e-9)
    assert iv.high == pytest.approx(0.005 + 2.7764451 * se, abs=1e-9)
    assert "df=4.0" in iv.method


def test_welch_interval_needs_two_seeds_and_handles_no_spread():
    with pytest.raises(ValueError, match=">= 2 runs"):
        welch_interval([0.9], [0.9, 0.91])
    iv = welch_interval([0.9, 0.9], [0.95, 0.95])
    assert (iv.low, iv.high) == pytest.approx((0.05, 0.05))


def test_paired_bootstrap_is_exact_when_every_sentence_agrees():
    # b gets exactly one more word right in every 10-word sentence: every resample gives +0.1
    iv = paired_bootstrap([5] * 40, [6] * 40, [10] * 40, n_resamples=300)
    assert iv.diff == pytest.approx(0.1) and iv.low == pytest.approx(0.1) and iv.high == pytest.approx(0.1)


def test_paired_bootstrap_interval_covers_the_difference_and_is_reproducible():
    rng = np.random.default_rng(1)
    words = rng.integers(5, 30, size=200)
    ca = rng.binomial(words, 0.9)
    cb = np.minimum(words, ca + rng.binomial(1, 0.3, size=200))
    iv = paired_bootstrap(ca, cb, words, seed=3)
    assert iv.low < iv.diff < iv.high and iv.low > 0  # b is better on 30% of sentences, never worse
    assert iv == paired_bootstrap(ca, cb, words, seed=3)
    with pytest.raises(ValueError):
        paired_bootstrap([1, 2], [1], [3, 3])


def test_per_sentence_correct_from_prediction_rows():
    rows = [
        {"words": ["a", "b"], "labels": ["DT", "NN"], "tags": ["DT", "VB"]},
        {"words": ["c"], "labels": ["IN"], "tags": ["IN"]},
    ]
    assert per_sentence_correct(rows) == ([1, 1], [2, 1])


@pytest.mark.parametrize(
    "low,high,word",
    [
        (-0.001, 0.0015, "holds"),  # inside +-0.002
        (0.003, 0.006, "does not hold"),  # all beyond the margin
        (0.0005, 0.004, "partly"),  # excludes 0, crosses the margin
        (-0.003, 0.004, "undecided"),  # contains 0, too wide
    ],
)
def test_verdict_words(low, high, word):
    text = verdict(Interval((low + high) / 2, low, high, "t"), 0.002, "full", "LoRA")
    assert text.startswith(word + ":")
    assert "LoRA − full" in text


def test_study_data_transcribed_once_with_its_source():
    s = load_study()
    assert "seed report" in s["source"]
    assert sorted(s["tables"]) == ["3", "4", "5", "6"]
    assert s["tables"]["4"]["rows"][0] == {
        "epoch": 1,
        "train_loss": 0.0239,
        "eval_loss": 0.103123,
        "seqeval_precision": 0.96505,
        "seqeval_recall": 0.96576,
        "seqeval_f1": 0.965405,
        "accuracy": 0.974897,
    }
    assert len(s["table2"]["counts"]) == 19 and s["table2"]["counts"]["NN"] == 44657
    p = s["parameters"]
    # the seed report's arithmetic: trainable / peft total = the printed percentages
    assert round(100 * p["bert"]["trainable_params"] / p["bert"]["total_params"], 4) == 0.307
    assert round(100 * p["roberta"]["trainable_params"] / p["roberta"]["total_params"], 4) == 0.2667
    assert p["bert"]["total_params"] - p["bert"]["unique_params"] == 36_912  # the classifier counted twice


@pytest.mark.parametrize(
    "family,config",
    [
        ("bert", dict(model_type="bert", vocab_size=28996)),
        ("roberta", dict(model_type="roberta", vocab_size=50265, max_position_embeddings=514, type_vocab_size=1)),
    ],
)
def test_study_parameter_counts_are_what_tagtune_counts_for_the_base_shapes(tmp_path, family, config):
    """bert-base-cased / roberta-base shapes (meta device, no download) + LoRA r=8 and 48 labels: the comparison
    finds the study's counts exactly."""
    from transformers import AutoConfig

    from tagtune.config import TrainConfig
    from tagtune.modeling import AdapterSpec, count_parameters, model_from_config
    from tagtune.report import Run
    from tagtune.study_compare import Cell, params_section

    kind = config.pop("model_type")
    hf = AutoConfig.for_model(kind, num_labels=48, **config)
    counts = count_parameters(
        model_from_config(hf, AdapterSpec.from_config(TrainConfig(method="lora", dataset_name="x")))
    ).as_dict()
    study = load_study()
    ref = study["parameters"][family]
    assert {k: counts[k] for k in ("trainable_params", "total_params", "unique_params")} == {
        k: ref[k] for k in ("trainable_params", "total_params", "unique_params")
    }
    run = Run(tmp_path, {**counts, "model": ref["model"], "method": "lora"}, [], [], {"seed": 1})
    (row,) = params_section([Cell(family, "lora", "pretrained", ref["model"], [run])], study).rows
    assert row[2:4] == [f"{ref['trainable_params']:,}"] * 2 and row[-1] == "equal; equal; equal"
