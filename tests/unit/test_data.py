"""Data readers and validation: each format, each error with its location."""

import json
from types import SimpleNamespace

import pytest
from conftest import EWT

from tagtune import DataError
from tagtune.data import build_corpus, load_corpus
from tagtune.readers import detect_format, read_conll, read_conllu, read_json


def cfg(**kw):
    base = dict(
        data_format="auto",
        words_field="words",
        labels_field="labels",
        conllu_tag_column="xpos",
        conll_word_column=0,
        conll_tag_column=-1,
        eval_split="auto",
        max_train_samples=None,
        max_eval_samples=None,
        eval_every_epoch=True,
        unseen_eval_labels="error",
        dataset_name=None,
        dataset_config_name=None,
        train_file=None,
        validation_file=None,
        test_file=None,
    )
    base.update(kw)
    return SimpleNamespace(**base)


CONLLU = """# sent_id = 1
# text = Don't stop.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tstop\tstop\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t3:conj\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = 2
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_conllu_skips_ranges_and_empty_nodes_and_picks_column(tmp_path):
    p = tmp_path / "a.conllu"
    p.write_text(CONLLU)
    sents = read_conllu(str(p), "xpos")
    assert [s.words for s in sents] == [["Do", "n't", "stop", "."], ["Hi"]]
    assert [s.tags for s in sents] == [["VBP", "RB", "VB", "."], ["UH"]]
    assert sents[0].where == f"{p}:1" and sents[1].where == f"{p}:10"
    assert read_conllu(str(p), "upos")[0].tags == ["AUX", "PART", "VERB", "PUNCT"]


def test_conll_columns(tmp_path):
    p = tmp_path / "a.conll"
    p.write_text("-DOCSTART- -X- O O\n\nThe DT B-NP O\ncat NN I-NP O\n\nRuns VBZ B-VP O\n")
    sents = read_conll(str(p), 0, 1)
    assert [(s.words, s.tags) for s in sents] == [(["The", "cat"], ["DT", "NN"]), (["Runs"], ["VBZ"])]
    assert sents[1].where.endswith(":6")
    assert read_conll(str(p), 0, -1)[0].tags == ["O", "O"]


def test_json_array_object_and_jsonl(tmp_path):
    recs = [{"words": ["a", "b"], "labels": ["DT", "NN"]}, {"words": ["c"], "labels": ["NN"]}]
    (tmp_path / "a.json").write_text(json.dumps(recs))
    (tmp_path / "b.json").write_text(json.dumps({"data": recs}))
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    for name in ("a.json", "b.json", "c.jsonl"):
        sents = read_json(str(tmp_path / name))
        assert [s.words for s in sents] == [["a", "b"], ["c"]], name
    assert read_json(str(tmp_path / "c.jsonl"))[1].where.endswith("c.jsonl:2")
    (tmp_path / "d.jsonl").write_text(json.dumps({"toks": ["a"], "tags": ["DT"]}) + "\n")
    assert read_json(str(tmp_path / "d.jsonl"), "toks", "tags")[0].tags == ["DT"]


def test_length_mismatch_names_split_line_and_lengths(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text(
        json.dumps({"words": ["a"], "labels": ["DT"]})
        + "\n"
        + json.dumps({"words": ["a", "b", "c"], "labels": ["DT"]})
        + "\n"
    )
    with pytest.raises(DataError) as err:
        load_corpus(cfg(train_file=str(p), eval_every_epoch=False))
    msg = str(err.value)
    assert f"{p}:2" in msg and "3 words but 1 labels" in msg and "split 'train'" in msg


def test_hub_style_mismatch_names_sentence_index():
    from tagtune.data import Sentence

    splits = {
        "train": [
            Sentence(["a"], ["X"], "split 'train', sentence 0"),
            Sentence(["a", "b"], ["X"], "split 'train', sentence 1"),
        ]
    }
    with pytest.raises(DataError, match=r"split 'train', sentence 1: 2 words but 1 labels"):
        build_corpus(splits, cfg(eval_every_epoch=False))


def test_unseen_eval_label_is_named_with_count(tmp_path):
    tr, dv = tmp_path / "tr.conll", tmp_path / "dv.conll"
    tr.write_text("a DT\nb NN\n")
    dv.write_text("a DT\nb ZZ\n\nc ZZ\nd YY\n")
    with pytest.raises(DataError) as err:
        load_corpus(cfg(train_file=str(tr), validation_file=str(dv)))
    assert "'ZZ' x2" in str(err.value) and "'YY' x1" in str(err.value) and "validation" in str(err.value)


def test_empty_sentences_skipped_and_counted(tmp_path, caplog):
    p = tmp_path / "tr.jsonl"
    rows = [{"words": ["a"], "labels": ["DT"]}, {"words": [], "labels": []}, {"words": [], "labels": []}]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    corpus = load_corpus(cfg(train_file=str(p), eval_every_epoch=False))
    assert len(corpus.train) == 1 and corpus.skipped_empty["train"] == 2
    assert "skipped 2 empty sentence(s) in split 'train'" in caplog.text


def test_labels_sorted_from_train_and_eval_split_choice(tmp_path):
    tr, dv, te = (tmp_path / n for n in ("tr.conll", "dv.conll", "te.conll"))
    tr.write_text("x VB\ny DT\n\nz NN\n")
    dv.write_text("x VB\n")
    te.write_text("y DT\n\nz NN\n")
    c = load_corpus(cfg(train_file=str(tr), validation_file=str(dv), test_file=str(te)))
    assert c.labels == ["DT", "NN", "VB"] and c.eval_split == "validation" and len(c.eval) == 1
    c = load_corpus(cfg(train_file=str(tr), test_file=str(te)))
    assert c.eval_split == "test" and len(c.eval) == 2  # the study: test serves as validation
    c = load_corpus(cfg(train_file=str(tr), validation_file=str(dv), test_file=str(te), eval_split="test"))
    assert c.eval_split == "test"
    with pytest.raises(DataError, match="no validation, dev or test split"):
        load_corpus(cfg(train_file=str(tr)))


def test_hub_dataset_with_class_label_ids(monkeypatch):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features(
        {
            "words": datasets.Sequence(datasets.Value("string")),
            "labels": datasets.Sequence(datasets.ClassLabel(names=["DT", "NN", "VB"])),
        }
    )
    dsd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"words": [["the", "dog"], ["run"]], "labels": [[0, 1], [2]]}, features=feats
            ),
            "test": datasets.Dataset.from_dict({"words": [["a", "cat"]], "labels": [[0, 1]]}, features=feats),
        }
    )
    seen = {}

    def fake_load(name, config=None):
        seen["args"] = (name, config)
        return dsd

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    c = load_corpus(cfg(dataset_name="batterydata/pos_tagging"))
    assert seen["args"] == ("batterydata/pos_tagging", None)
    assert c.train[0].tags == ["DT", "NN"] and c.eval_split == "test" and c.labels == ["DT", "NN", "VB"]


def test_hub_failure_is_a_clear_error(monkeypatch):
    import datasets

    def boom(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(DataError, match="cannot load hub dataset 'org/x'.*ConnectionError"):
        load_corpus(cfg(dataset_name="org/x"))


def test_format_detection_and_unknown_extension():
    assert detect_format("a.jsonl") == "json" and detect_format("a.conllu") == "conllu"
    assert detect_format("a.tsv") == "conll" and detect_format("a.txt", "conll") == "conll"
    with pytest.raises(DataError, match="unknown data format"):
        detect_format("a.parquet")


@pytest.mark.parametrize(
    "text, fmt",
    [
        ("The\tDT\ncat\tNN\n", "conll"),  # a tab: columns
        ("-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\n", "conll"),
        ("The DT\ncat NN\nsat VBD\n\nHi UH\n", "conll"),  # same width (2) on every line
        ("The cat sat.\nA dog barked at me.\nHe paid $5.\n", "text"),  # widths vary
        ("Hello there\n", "text"),  # too short to call columns
        ('{"words": ["a"]}\n', "json"),
    ],
)
def test_txt_is_sniffed_by_content_and_training_refuses_raw_text(tmp_path, text, fmt):
    p = tmp_path / "a.txt"
    p.write_text(text)
    assert detect_format(str(p)) == fmt
    if fmt == "text":
        with pytest.raises(DataError, match=r"a\.txt: read as 'text', which has no tags") as err:
            load_corpus(cfg(train_file=str(p), eval_every_epoch=False))
        assert "--data_format conll" in str(err.value)


def test_missing_file_and_bad_utf8(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_conll(str(tmp_path / "nope.conll"))
    p = tmp_path / "bad.conll"
    p.write_bytes(b"a DT\nb NN\n\ncaf\xe9 NN\n")
    with pytest.raises(DataError) as err:
        read_conll(str(p))
    assert f"{p}:4" in str(err.value) and "byte offset 14" in str(err.value)


@pytest.mark.skipif(not EWT.is_dir(), reason="needs ../shared/data/ud_english_ewt")
def test_real_ewt_counts_match_provenance():
    c = load_corpus(
        cfg(train_file=str(EWT / "en_ewt-ud-train.conllu"), validation_file=str(EWT / "en_ewt-ud-dev.conllu"))
    )
    assert len(c.train) == 12544 and sum(len(s.words) for s in c.train) == 204577 and len(c.labels) == 49
    assert len(c.eval) == 2001 and sum(len(s.words) for s in c.eval) == 25147
