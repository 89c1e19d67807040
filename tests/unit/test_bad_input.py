"""Bad input, end to end through the trainer's entry point: each case exits with code 2 and one
`tagtune: error:` message saying what, where (file:line, record, field) and how to fix it; no
traceback; no output directory created (or an existing run's files untouched). Then a
property-based test: generated malformed JSON/JSONL/CoNLL/CoNLL-U files either load (and
tokenise) or raise the project's DataError naming the file - never another exception type."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tagtune.checkpoint import check_compatible
from tagtune.config import TrainConfig
from tagtune.data import load_corpus
from tagtune.errors import CheckpointError, DataError
from tagtune.features import build_features, load_tokenizer
from tagtune.train import main

GOOD = [
    {"words": ["the", "cat", "sees", "a", "dog", "."], "labels": ["DT", "NN", "VBZ", "DT", "NN", "."]},
    {"words": ["he", "can", "run", "."], "labels": ["PRP", "MD", "VB", "."]},
]


def jsonl(recs) -> str:
    return "".join(json.dumps(r) + "\n" for r in recs)


def fail(
    tmp_path: Path,
    capsys,
    train: str | bytes | None,
    name: str = "train.jsonl",
    dev: str | None = None,
    extra: tuple[str, ...] = (),
) -> str:
    """Run the trainer on the given files; assert a clean project error and nothing written; return it."""
    tp, dp = tmp_path / name, tmp_path / "dev.jsonl"
    if train is not None:
        tp.write_bytes(train if isinstance(train, bytes) else train.encode())
    dp.write_text(dev if dev is not None else jsonl(GOOD))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(
            TrainConfig,
            [
                "--dataset_name",
                "",
                "--model_name_or_path",
                "synthetic:bert",
                "--train_file",
                str(tp),
                "--validation_file",
                str(dp),
                "--report_to",
                "none",
                "--output_dir",
                str(out),
                *extra,
            ],
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tagtune: error: ") and "Traceback" not in err
    assert not out.exists(), "an output directory was created for a run that never started"
    return err


def test_missing_file(tmp_path, capsys):
    err = fail(tmp_path, capsys, None)
    assert "file not found" in err and str(tmp_path / "train.jsonl") in err and "Fix:" in err


def test_missing_file_with_a_cold_cache(tmp_path, capsys, monkeypatch):
    """The synthetic model is built before the data is read; building it writes nothing to stderr, so the
    error is still all there is, whichever test of the suite first builds the model."""
    monkeypatch.setenv("TAGTUNE_CACHE", str(tmp_path / "cold-cache"))
    err = fail(tmp_path, capsys, None)
    assert "file not found" in err and str(tmp_path / "train.jsonl") in err
    assert (tmp_path / "cold-cache" / "synthetic-bert-v2" / "config.json").is_file()  # it was built here


def test_unknown_format(tmp_path, capsys):
    err = fail(tmp_path, capsys, "x", name="train.xlsx")
    assert "unknown data format for extension '.xlsx'" in err and "--data_format" in err


def test_missing_fields(tmp_path, capsys):
    err = fail(tmp_path, capsys, jsonl([GOOD[0], {"tokens": ["a"], "labels": ["DT"]}]))
    assert f"{tmp_path / 'train.jsonl'}:2" in err and "missing field(s) ['words']" in err and "--words_field" in err


def test_length_mismatch(tmp_path, capsys):
    err = fail(tmp_path, capsys, jsonl([GOOD[0], {"words": ["a", "b"], "labels": ["DT"]}]))
    assert f"{tmp_path / 'train.jsonl'}:2" in err and "2 words but 1 labels" in err and "Fix:" in err


def test_non_string_tokens(tmp_path, capsys):
    err = fail(tmp_path, capsys, jsonl([{"words": ["a", 7], "labels": ["DT", "CD"]}]))
    assert f"{tmp_path / 'train.jsonl'}:1" in err and "field 'words' item 1 is int 7, expected a string" in err


def test_invalid_utf8_names_file_and_byte_offset(tmp_path, capsys):
    raw = jsonl(GOOD).encode() + b'{"words": ["caf\xe9"], "labels": ["NN"]}\n'
    err = fail(tmp_path, capsys, raw)
    offset = raw.index(b"\xe9")
    assert f"{tmp_path / 'train.jsonl'}:3" in err and f"byte offset {offset}" in err and "iconv" in err


def test_dataset_empty_after_skipping_empty_sentences(tmp_path, capsys):
    err = fail(tmp_path, capsys, jsonl([{"words": [], "labels": []}] * 3))
    assert "training split is empty after skipping empty sentences" in err and str(tmp_path / "train.jsonl") in err


def test_unknown_evaluation_labels(tmp_path, capsys):
    dev = jsonl(GOOD + [{"words": ["wow", "!"], "labels": ["UH", "."]}])
    err = fail(tmp_path, capsys, jsonl(GOOD), dev=dev)
    assert "never seen in training: 'UH' x1" in err and f"{tmp_path / 'dev.jsonl'}:3" in err


def test_lone_surrogate_in_json_is_a_data_error(tmp_path, capsys):
    # valid JSON, invalid Unicode: the tokenizer would fail deep inside Rust
    err = fail(tmp_path, capsys, jsonl(GOOD) + '{"words": ["a", "\\ud800"], "labels": ["DT", "NN"]}\n')
    assert f"{tmp_path / 'train.jsonl'}:3" in err and "field 'words' item 1 is not valid Unicode" in err


def test_output_dir_holding_another_run_is_refused_and_untouched(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text(jsonl(GOOD))
    out = tmp_path / "out"
    out.mkdir()
    (out / "run_config.json").write_text('{"recipe": "earlier"}\n')
    (out / "results.json").write_text('{"accuracy": 0.9}\n')
    with pytest.raises(SystemExit):
        main(
            TrainConfig,
            [
                "--dataset_name",
                "",
                "--model_name_or_path",
                "synthetic:bert",
                "--train_file",
                str(tmp_path / "train.jsonl"),
                "--eval_every_epoch",
                "false",
                "--report_to",
                "none",
                "--output_dir",
                str(out),
            ],
        )
    err = capsys.readouterr().err
    assert "already holds another run" in err and "--overwrite_output_dir" in err and "--resume_from_checkpoint" in err
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "run_config.json"]
    assert (out / "results.json").read_text() == '{"accuracy": 0.9}\n'


def _meta(**kw):
    base = {
        "format_version": 1,
        "labels": ["DT", "NN"],
        "model_name_or_path": "bert-base-cased",
        "method": "full",
        "lora": None,
        "world_size": 2,
        "zero_stage": 0,
        "global_batch_size": 32,
        "gradient_accumulation_steps": 1,
        "total_steps": 100,
        "seed": 42,
        "group_by_length": True,
        "length_group_batches": 0,
        "length_run_batches": 4,
        "data_fingerprint": "abc",
    }
    base.update(kw)
    return base


def test_a_checkpoint_from_before_length_pools_resumes_only_with_the_trainers_pools(tmp_path):
    old = _meta()
    del old["length_group_batches"]  # written before the setting existed: pools of 50 batches
    check_compatible(old, _meta(length_group_batches=50), tmp_path)
    with pytest.raises(CheckpointError, match="length_group_batches differs from the checkpoint's: 50 there, 0 now"):
        check_compatible(old, _meta(), tmp_path)


def test_a_checkpoint_from_before_length_runs_resumes_only_with_batches_shuffled_one_by_one(tmp_path):
    old = _meta()
    del old["length_run_batches"]  # written before the setting existed: every batch shuffled on its own
    check_compatible(old, _meta(length_run_batches=1), tmp_path)
    with pytest.raises(CheckpointError, match="length_run_batches differs from the checkpoint's: 1 there, 4 now"):
        check_compatible(old, _meta(), tmp_path)


@pytest.mark.parametrize(
    "changed, expect",
    [
        (
            {"labels": ["DT", "NN", "VB"]},
            "label set differs from the checkpoint's (2 labels there, 3 now; new: ['VB']",
        ),
        (
            {"model_name_or_path": "roberta-base"},
            "model_name_or_path differs from the checkpoint's: 'bert-base-cased' there, 'roberta-base' now",
        ),
        ({"world_size": 1, "zero_stage": 3}, "zero_to_fp32.py"),
        ({"data_fingerprint": "def"}, "training data (after tokenisation) differs"),
        ({"seed": 7}, "seed differs from the checkpoint's: 42 there, 7 now"),
        ({"length_group_batches": 50}, "length_group_batches differs from the checkpoint's: 0 there, 50 now"),
        ({"length_run_batches": 8}, "length_run_batches differs from the checkpoint's: 4 there, 8 now"),
    ],
)
def test_resume_mismatch_messages(tmp_path, changed, expect):
    meta = _meta(**({"zero_stage": 3} if "zero_stage" in changed else {}))
    with pytest.raises(CheckpointError) as err:
        check_compatible(meta, _meta(**changed), tmp_path)
    assert expect in str(err.value) and "Fix:" in str(err.value) and str(tmp_path) in str(err.value)


# ----------------------------------------------------------------------------------------
# property-based: malformed files of every format
# ----------------------------------------------------------------------------------------

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(" \t\r\u00a0\u200b\ufeff"), max_size=8
)
word = st.one_of(st.sampled_from(["the", "cat", "Zürich", "42", ".", "", " ", "\u200b", "a b"]), text)
tag = st.sampled_from(["DT", "NN", "_", "", "VB"]) | text
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text)
value = st.one_of(json_scalar, st.lists(word, max_size=4), st.lists(json_scalar, max_size=3))
record = st.one_of(
    st.builds(lambda w, t: {"words": w, "labels": t}, st.lists(word, max_size=5), st.lists(tag, max_size=5)),
    st.dictionaries(st.sampled_from(["words", "labels", "tokens", "tags"]), value, max_size=3),
    json_scalar,
    st.lists(value, max_size=2),
)
json_line = st.one_of(
    record.map(json.dumps),
    text,
    st.just(""),
    st.just('{"words": ["a"], "labels": ["DT"]'),
    st.just('{"words": ["\\ud800"], "labels": ["NN"]}'),
)
raw_bytes = st.binary(max_size=6)  # often invalid UTF-8
conll_line = st.one_of(
    st.lists(st.one_of(word, tag), max_size=4).map(" ".join),
    st.just(""),
    st.just("-DOCSTART- O"),
    st.just("the DT"),
    st.just("cat\tNN"),
)
ids = st.sampled_from(["1", "2", "1-2", "3.1", "x", "", "0"])
conllu_line = st.one_of(
    st.builds(
        lambda i, f, u, x, n: "\t".join([i, f, "_", u, x, "_", "0", "root", "_", "_"][:n]),
        ids,
        word,
        tag,
        tag,
        st.sampled_from([10, 10, 10, 9, 11, 1]),
    ),
    st.just(""),
    st.just("# sent_id = 1"),
    text,
)


@st.composite
def malformed_file(draw):
    fmt = draw(st.sampled_from(["jsonl", "json", "conll", "conllu"]))
    if fmt == "json":
        body = json.dumps(
            draw(
                st.one_of(
                    st.lists(record, max_size=4),
                    record,
                    st.builds(lambda r: {"data": r}, st.lists(record, max_size=3)),
                )
            )
        )
        if draw(st.booleans()):
            body = body[: draw(st.integers(0, len(body)))]  # truncated
        data = body.encode("utf-8", "surrogatepass")
    else:
        line = {"jsonl": json_line, "conll": conll_line, "conllu": conllu_line}[fmt]
        lines = draw(st.lists(line, min_size=0, max_size=8))
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 5)) == 0:  # splice in raw bytes somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(raw_bytes) + data[at:]
    if draw(st.integers(0, 7)) == 0:
        data = b"\xef\xbb\xbf" + data  # a UTF-8 byte-order mark, as some editors write
    columns = draw(st.sampled_from([(0, -1), (0, 1), (-2, -1), (-3, -1), (1, 0), (2, 5)]))
    tag_col = draw(st.sampled_from(["xpos", "upos"]))
    return fmt, data, columns, tag_col


@pytest.fixture(scope="module")
def tokenizer(synthetic_bert):
    return load_tokenizer(synthetic_bert)


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(case=malformed_file())
def test_malformed_files_load_or_raise_data_error(tmp_path_factory, tokenizer, case):
    fmt, data, (wcol, tcol), tag_col = case
    path = tmp_path_factory.mktemp("bad") / f"train.{fmt}"
    path.write_bytes(data)
    cfg = SimpleNamespace(
        data_format="auto",
        words_field="words",
        labels_field="labels",
        conllu_tag_column=tag_col,
        conll_word_column=wcol,
        conll_tag_column=tcol,
        eval_split="auto",
        max_train_samples=None,
        max_eval_samples=None,
        eval_every_epoch=False,
        dataset_name=None,
        dataset_config_name=None,
        train_file=str(path),
        validation_file=None,
        test_file=None,
    )
    try:
        corpus = load_corpus(cfg)
    except DataError as err:
        event(f"{fmt}: DataError")
        assert err.what and err.where and str(path) in err.where, f"error does not name the file: {err}"
        return
    event(f"{fmt}: loaded")
    # success: well-formed sentences that tokenise and align, one scored position per word
    assert corpus.train
    for s in corpus.train:
        assert len(s.words) == len(s.tags) > 0 and all(isinstance(w, str) and w.strip() for w in s.words)
    f = build_features(
        [s.words for s in corpus.train],
        [s.tags for s in corpus.train],
        tokenizer,
        corpus.label2id,
        max_length=16,
        stride=2,
    )
    assert f.num_words == sum(len(s.words) for s in corpus.train)
    assert sum(w >= 0 for ws in f.word_ids for w in ws) == f.num_words
