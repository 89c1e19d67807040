"""Config: precedence defaults < recipe < file < CLI, validation naming the field, --help, recipes."""

import dataclasses
import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tagtune import ConfigError, TrainConfig, parse

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.py"))


def load_recipe(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    classes = [
        v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, TrainConfig) and v is not TrainConfig
    ]
    assert len(classes) == 1, f"{path.name} should declare exactly one config class"
    return classes[0]


@dataclass
class Recipe(TrainConfig):
    recipe: str = "r"
    dataset_name: str = "synthetic:pos"
    learning_rate: float = 1e-3
    lora_r: int = 4


def test_precedence_defaults_recipe_file_cli(tmp_path):
    f = tmp_path / "over.yaml"
    f.write_text("lora_r: 12\nweight_decay: 0.5\n")
    cfg = parse(Recipe, ["--config", str(f), "--weight_decay", "0.25"])
    assert cfg.learning_rate == 1e-3  # recipe beats default 5e-5
    assert cfg.lora_r == 12  # file beats recipe
    assert cfg.weight_decay == 0.25  # CLI beats file
    assert cfg.per_device_train_batch_size == 16  # untouched default
    j = tmp_path / "over.json"
    j.write_text(json.dumps({"method": "lora", "num_train_epochs": 1}))
    cfg = parse(Recipe, ["--config", str(j)])
    assert (cfg.method, cfg.num_train_epochs) == ("lora", 1)


@pytest.mark.parametrize(
    "args, field",
    [
        (["--lora_r", "0"], "lora_r"),
        (["--learning_rate", "-1"], "learning_rate"),
        (["--warmup_ratio", "1.5"], "warmup_ratio"),
        (["--max_length", "4"], "max_length"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size"),
        (["--length_group_batches", "-1"], "length_group_batches"),
        (["--length_run_batches", "0"], "length_run_batches"),
    ],
)
def test_invalid_values_name_the_field(args, field):
    with pytest.raises(ConfigError) as err:
        parse(Recipe, args)
    assert f"'{field}'" in str(err.value)


def test_recipe_redeclared_literal_still_validated():
    @dataclass
    class Bad(TrainConfig):
        dataset_name: str = "synthetic:pos"
        method: str = "qlora"

    with pytest.raises(ConfigError, match="'method'.*full.*lora"):
        parse(Bad, [])


def test_file_errors(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("lora_rank: 3\n")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['lora_rank'\]"):
        parse(Recipe, ["--config", str(f)])
    with pytest.raises(ConfigError, match="config file not found"):
        parse(Recipe, ["--config", str(tmp_path / "missing.yaml")])
    f.write_text("learning_rate: [1, 2]\n")
    with pytest.raises(ConfigError):
        parse(Recipe, ["--config", str(f)])


def test_data_source_required_and_exclusive():
    with pytest.raises(ConfigError, match="no training data"):
        parse(TrainConfig, [])
    with pytest.raises(ConfigError, match="both dataset_name and train_file"):
        parse(Recipe, ["--train_file", "a.conllu"])


def test_every_field_has_help():
    missing = [f.name for f in dataclasses.fields(TrainConfig) if not f.metadata.get("help")]
    assert missing == []


def test_help_explains_every_field_of_a_recipe():
    out = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "roberta_lora.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    flat = " ".join(out.split())
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name}" in out
    # re-declared fields keep the base help text and choices
    assert "'full' fine-tunes every weight" in flat
    assert "{full,lora,peft}" in out


def test_cli_error_is_one_line_not_a_traceback():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "bert_lora.py"), "--lora_r", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "tagtune: error: config field 'lora_r'" in proc.stderr
    assert "Traceback" not in proc.stderr


STUDY = {
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 16,
    "num_train_epochs": 3.0,
    "weight_decay": 0.01,
    "dataset_name": "batterydata/pos_tagging",
    "lora_r": 8,
    "lora_target_modules": None,
}
EXPECTED = {
    "bert_full": ("bert-base-cased", "full"),
    "bert_lora": ("bert-base-cased", "lora"),
    "roberta_full": ("roberta-base", "full"),
    "roberta_lora": ("roberta-base", "lora"),
}


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_parses_with_its_launch_command(path):
    cls = load_recipe(path)
    cfg = parse(cls, [])
    assert cfg.recipe == path.stem
    assert f"accelerate launch recipes/{path.name}" in path.read_text().split('"""')[1]
    if path.stem in EXPECTED:
        assert (cfg.model_name_or_path, cfg.method) == EXPECTED[path.stem]
        for k, v in STUDY.items():
            assert getattr(cfg, k) == v, (path.stem, k)
    # any field is overridable on the command line
    assert parse(cls, ["--seed", "7", "--lora_alpha", "32"]).lora_alpha == 32


# ---- run_ner.py names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--fp16"], {"mixed_precision": "fp16"}),
        (["--bf16", "true"], {"mixed_precision": "bf16"}),
        (["--mixed_precision", "bf16", "--fp16", "false"], {"mixed_precision": "bf16"}),  # false: no change
        (["--label_all_tokens"], {"label_all_subtokens": True}),
        (["--label_all_tokens", "false"], {"label_all_subtokens": False}),
        (["--max_seq_length", "128"], {"max_length": 128}),
        (["--text_column_name", "tokens", "--label_column_name", "ner_tags"], {"words_field": "tokens"}),
        (["--label_column_name=ner_tags"], {"labels_field": "ner_tags"}),
    ],
)
def test_run_ner_aliases_set_their_fields(args, expected):
    cfg = parse(Recipe, args)
    for name, value in expected.items():
        assert getattr(cfg, name) == value, name


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fp16", "--bf16"], "conflicting precision flags: --fp16, --bf16"),
        (["--fp16", "--mixed_precision", "bf16"], "conflicting precision flags: --fp16 and --mixed_precision"),
        (["--max_seq_length", "64", "--max_length", "128"], "--max_seq_length and --max_length are the same setting"),
    ],
)
def test_run_ner_aliases_conflicts_are_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        parse(Recipe, args)


def test_run_ner_aliases_are_listed_in_help_and_validated_like_their_fields():
    out = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "smoke.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for alias, name in (
        ("fp16", "mixed_precision fp16"),
        ("bf16", "mixed_precision bf16"),
        ("label_all_tokens", "label_all_subtokens"),
        ("max_seq_length", "max_length"),
        ("text_column_name", "words_field"),
        ("label_column_name", "labels_field"),
    ):
        assert f"--{alias}" in out and f"same as --{name}" in out, alias
    with pytest.raises(ConfigError, match="max_length"):
        parse(Recipe, ["--max_seq_length", "4"])  # the field's own validation (>= 8)
