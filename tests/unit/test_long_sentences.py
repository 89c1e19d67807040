"""Sentences longer than max_length: split into overlapping windows for training, evaluation and
prediction features; every word gets exactly one prediction and is counted once in evaluation.
Checked on a 2,000-word sentence with max_length 16, in features and in a real train + eval run."""

from __future__ import annotations

import itertools
import json

import pytest

from tagtune.features import IGNORE, build_features, load_tokenizer, special_tokens
from tagtune.synthetic import LEXICON

N_LONG = 2000
MAX_LEN = 16
STRIDE = 4


def long_sentence(n: int = N_LONG, offset: int = 0) -> tuple[list[str], list[str]]:
    """Every lexicon word in turn (multi-piece words like 'unbelievable' and 'Zürich' included)."""
    pairs = [(w, t) for t, ws in sorted(LEXICON.items()) for w in ws]
    cyc = itertools.islice(itertools.cycle(pairs), offset, offset + n)
    words, tags = zip(*cyc)
    return list(words), list(tags)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("tagged", [True, False])  # False: prediction features (no labels)
def test_each_word_owned_by_exactly_one_window(arch, tagged, synthetic_bert, synthetic_roberta):
    tok = load_tokenizer(synthetic_bert if arch == "bert" else synthetic_roberta)
    words, tags = long_sentence()
    l2i = {t: i for i, t in enumerate(sorted(LEXICON))}
    short = (["the", "cat", "."], ["DT", "NN", "."])
    f = build_features(
        [short[0], words, short[0]],
        [short[1], tags, short[1]] if tagged else None,
        tok,
        l2i if tagged else None,
        max_length=MAX_LEN,
        stride=STRIDE,
    )
    assert f.num_words == N_LONG + 6
    windows = [i for i, s in enumerate(f.sent_ids) if s == 1]
    assert len(windows) > N_LONG // (MAX_LEN - 2)  # really split, many times
    pre, suf = special_tokens(tok)
    owned: list[int] = []
    for i in windows:
        ids, w_ids = f.input_ids[i], f.word_ids[i]
        assert len(ids) <= MAX_LEN, "a window exceeds max_length"
        assert ids[: len(pre)] == pre and ids[len(ids) - len(suf) :] == suf  # every window is a well-formed input
        owned += [w for w in w_ids if w >= 0]
        for pos, w in enumerate(w_ids):
            if w >= 0:
                assert f.labels[i][pos] == (l2i[tags[w]] if tagged else IGNORE)
    assert owned == list(range(N_LONG)), "each word scored exactly once, in order"
    # later windows start with left context (repeated words, not scored, not trained on)
    second = f.word_ids[windows[1]]
    first_scored = next(p for p, w in enumerate(second) if w >= 0)
    assert first_scored > len(pre), "no left context in the second window"
    assert all(lab == IGNORE for lab in f.labels[windows[1]][:first_scored])


def test_two_thousand_word_sentence_train_and_eval_counts_every_word(tmp_path):
    """Real training + evaluation (in-process): the evaluation word count equals the input word count."""
    from tagtune.config import TrainConfig
    from tagtune.synthetic import generate_splits
    from tagtune.train import main

    sp = generate_splits()
    train = [long_sentence(N_LONG)] + sp["train"][:40]
    dev = [long_sentence(N_LONG, offset=7)] + sp["validation"][:10]
    for name, sents in (("train", train), ("dev", dev)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"words": w, "labels": t}) + "\n" for w, t in sents)
        )
    dev_words = sum(len(w) for w, _ in dev)
    out = tmp_path / "run"
    results = main(
        TrainConfig,
        [
            "--dataset_name",
            "",
            "--model_name_or_path",
            "synthetic:bert",
            "--train_file",
            str(tmp_path / "train.jsonl"),
            "--validation_file",
            str(tmp_path / "dev.jsonl"),
            "--max_length",
            str(MAX_LEN),
            "--stride",
            str(STRIDE),
            "--per_device_train_batch_size",
            "32",
            "--num_train_epochs",
            "1",
            "--learning_rate",
            "3e-3",
            "--report_to",
            "none",
            "--output_dir",
            str(out),
            "--checkpoint_epoch_end",
            "false",
        ],
    )
    assert results["eval_words"] == dev_words == N_LONG + sum(len(w) for w, _ in dev[1:])
    assert results["final"]["num_words"] == dev_words
    assert results["final"]["num_sentences"] == len(dev)
    assert sum(map(sum, results["confusion_matrix"]["matrix"])) == dev_words
    assert results["train_windows"] > len(train) + N_LONG // MAX_LEN  # the long sentence became windows
    assert results["train_words"] == sum(len(w) for w, _ in train)  # every training word trained on once
    preds = [json.loads(x) for x in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert [len(p["tags"]) for p in preds] == [len(w) for w, _ in dev]


def test_a_word_longer_than_a_window_is_kept_once_and_reported(synthetic_bert, caplog):
    tok = load_tokenizer(synthetic_bert)
    word = "unbelievable" * 3  # 36 sub-tokens here: far more sub-tokens than max_length 8 leaves room for
    f = build_features(
        [["the", word, "."]], [["DT", "NN", "."]], tok, {"DT": 0, "NN": 1, ".": 2}, max_length=8, stride=1
    )
    assert sorted(w for ws in f.word_ids for w in ws if w >= 0) == [0, 1, 2]
    assert all(len(ids) <= 8 for ids in f.input_ids)
    assert "1 word(s) have more than 6 sub-tokens" in caplog.text
