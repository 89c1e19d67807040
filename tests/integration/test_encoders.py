"""Every encoder family end to end on tiny random-init models built locally: sub-word alignment
(with the family's word-boundary marker), LoRA targets, training, save, reload in a fresh Tagger,
and predictions identical to the training evaluation's."""

import json

import pytest
from conftest import read_json, train_smoke

from tagtune import TrainConfig
from tagtune.errors import ConfigError
from tagtune.features import build_features, load_tokenizer
from tagtune.modeling import AdapterSpec, model_from_config
from tagtune.synthetic import synthetic_model_path
from tagtune.tagger import Tagger

# family -> (word-start marker its tokenizer puts on a word's first sub-token, LoRA targets peft picks)
FAMILIES = {
    "distilbert": ("", None),  # peft has no default for DistilBERT: the run names its targets
    "electra": ("", ["query", "value"]),
    "deberta-v2": ("▁", ["query_proj", "value_proj"]),
    "deberta-v3": ("▁", ["query_proj", "value_proj"]),
    "xlm-roberta": ("▁", ["query", "value"]),
    "modernbert": ("Ġ", None),  # no peft default either
}
WORDS = [["John", "Smith", "saw", "unbelievable", "dogs", "in", "Zürich", "."]]


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_alignment_scores_each_word_once_at_its_first_subtoken(arch):
    tok = load_tokenizer(synthetic_model_path(f"synthetic:{arch}"))
    marker, _ = FAMILIES[arch]
    f = build_features(
        WORDS,
        [["B-PER", "I-PER", "O", "O", "O", "O", "B-LOC", "O"]],
        tok,
        {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3},
    )
    ids, word_ids, labels = f.input_ids[0], f.word_ids[0], f.labels[0]
    scored = [i for i, w in enumerate(word_ids) if w >= 0]
    assert [word_ids[i] for i in scored] == list(range(len(WORDS[0])))  # each word exactly once, in order
    assert [labels[i] for i in scored] == [1, 2, 0, 0, 0, 0, 3, 0]
    assert sum(lab != -100 for lab in labels) == len(WORDS[0])  # the other sub-tokens are not trained on
    pieces = tok.convert_ids_to_tokens(ids)
    assert len(ids) > len(WORDS[0]) + 2  # "unbelievable" and "Zürich" split into several pieces
    if marker:  # byte-level BPE / sentencepiece: each word starts as it would mid-sentence (prefix space)
        assert all(pieces[i].startswith(marker) for i in scored), pieces
    assert tok.convert_ids_to_tokens(ids[:1])[0] in ("[CLS]", "<s>")


@pytest.mark.parametrize("arch", ["distilbert", "modernbert"])
def test_no_peft_default_targets_names_the_linear_layers(arch):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(synthetic_model_path(f"synthetic:{arch}"), num_labels=3)
    cfg = TrainConfig(dataset_name="synthetic:ner", model_name_or_path=f"synthetic:{arch}", method="lora")
    with pytest.raises(ConfigError) as err:
        model_from_config(config, AdapterSpec.from_config(cfg))
    msg = str(err.value)
    assert "lora_target_modules" in msg and "all-linear" in msg
    expected = {"distilbert": ["q_lin", "v_lin", "lin1"], "modernbert": ["Wqkv", "Wo", "Wi"]}[arch]
    assert all(name in msg for name in expected), msg
    assert "classifier" not in msg.split("e.g.")[1]


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_family_trains_saves_reloads_and_predicts_like_training(tmp_path, arch):
    _, default_targets = FAMILIES[arch]
    targets = [] if default_targets else ["--lora_target_modules", "all-linear"]
    out = train_smoke(
        tmp_path / arch,
        "--model_name_or_path", f"synthetic:{arch}",
        "--dataset_name", "synthetic:ner",
        "--method", "lora",
        *targets,
        "--max_train_samples", "96",
        "--max_eval_samples", "40",
        "--num_train_epochs", "1",
        "--checkpoint_epoch_end", "false",
    )  # fmt: skip
    res = read_json(out / "results.json")
    assert res["final"]["tagging_scheme"] == "IOB2" and res["final"]["primary_metric"] == "entity_f1"
    assert res["final"]["num_words"] == res["eval_words"]
    adapter = read_json(out / "model" / "adapter_config.json")
    got = adapter["target_modules"]
    if default_targets:
        assert sorted(got) == sorted(default_targets)
    else:  # all-linear: every linear layer of the encoder (2 layers here), never the classifier (trained in full)
        assert not any(t.endswith("classifier") for t in got), got
        assert len(got) >= 2 * {"distilbert": 6, "modernbert": 4}[arch], got
    assert "classifier" in (adapter.get("modules_to_save") or [])
    rows = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    tagger = Tagger.load(out, device="cpu")
    assert tagger.is_adapter
    assert tagger.tag([r["words"] for r in rows]) == [r["tags"] for r in rows]
