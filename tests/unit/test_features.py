"""Label alignment (first sub-token, all sub-tokens), RoBERTa's prefix space, padding, batching."""

import numpy as np
import pytest

from tagtune.features import (
    EVAL_BATCH_COST_TOKENS,
    IGNORE,
    Collator,
    LengthGroupedBatchSampler,
    build_features,
    cut_sorted,
    eval_batches,
    is_byte_level,
    load_tokenizer,
    resolve_eval_batch_tokens,
    shard_batches,
    special_tokens,
    window_spans,
)

L2I = {"DT": 0, "JJ": 1, "NN": 2, "VBZ": 3, ".": 4}
WORDS = ["the", "unbelievable", "teacher", "books", "."]
TAGS = ["DT", "JJ", "NN", "VBZ", "."]


@pytest.fixture(scope="module")
def bert_tok(synthetic_bert):
    return load_tokenizer(synthetic_bert)


@pytest.fixture(scope="module")
def roberta_tok(synthetic_roberta):
    return load_tokenizer(synthetic_roberta)


def expected_first_subtoken(tok, words, tags, all_sub=False):
    """Reference built word by word, independent of build_features' batching."""
    pre, suf = special_tokens(tok)
    ids, labels = list(pre), [IGNORE] * len(pre)
    for w, t in zip(words, tags):
        pieces = tok([w], is_split_into_words=True, add_special_tokens=False)["input_ids"]
        ids += pieces
        labels += [L2I[t]] + [L2I[t] if all_sub else IGNORE] * (len(pieces) - 1)
    return ids + suf, labels + [IGNORE] * len(suf)


@pytest.mark.parametrize("all_sub", [False, True])
def test_first_subtoken_alignment(bert_tok, all_sub):
    f = build_features([WORDS], [TAGS], bert_tok, L2I, label_all_subtokens=all_sub)
    ids, labels = expected_first_subtoken(bert_tok, WORDS, TAGS, all_sub)
    assert f.input_ids[0] == ids and f.labels[0] == labels
    assert len(ids) > len(WORDS) + 2, "the test needs words split into several sub-tokens"
    # evaluation scores one position per word, on its first sub-token, whatever the training rule
    scored = [i for i, w in enumerate(f.word_ids[0]) if w >= 0]
    assert [f.word_ids[0][i] for i in scored] == list(range(len(WORDS)))
    assert [f.labels[0][i] for i in scored] == [L2I[t] for t in TAGS]
    assert f.num_words == len(WORDS)


def test_roberta_gets_prefix_space(roberta_tok):
    assert is_byte_level(roberta_tok) and roberta_tok.add_prefix_space
    # each word is encoded as it would be mid-sentence: with the leading-space marker
    f = build_features([WORDS], [TAGS], roberta_tok, L2I)
    toks = roberta_tok.convert_ids_to_tokens(f.input_ids[0])
    firsts = [toks[i] for i, w in enumerate(f.word_ids[0]) if w >= 0]
    assert all(t.startswith("\u0120") for t in firsts), firsts
    mid_sentence = roberta_tok(" " + " ".join(WORDS), add_special_tokens=True)["input_ids"]
    assert f.input_ids[0] == mid_sentence


def test_bert_tokenizer_not_byte_level(bert_tok):
    assert not is_byte_level(bert_tok)


def test_collator_pads_dynamically_and_to_multiple_of_8(bert_tok):
    f = build_features([WORDS, WORDS[:2]], [TAGS, TAGS[:2]], bert_tok, L2I)
    longest = max(f.lengths)
    b = Collator(f, bert_tok.pad_token_id)([0, 1])
    assert b["input_ids"].shape == (2, longest)
    assert b["attention_mask"].sum().item() == sum(f.lengths)
    assert (b["labels"][1, f.lengths[1] :] == IGNORE).all() and (
        b["input_ids"][1, f.lengths[1] :] == bert_tok.pad_token_id
    ).all()
    b8 = Collator(f, bert_tok.pad_token_id, pad_to_multiple_of=8)([1])
    assert b8["input_ids"].shape[1] % 8 == 0 and b8["input_ids"].shape[1] >= f.lengths[1]


def test_window_spans_own_each_word_once():
    lens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    spans = window_spans(lens, budget=10, stride=2)
    owned = [w for _, own, end in spans for w in range(own, end)]
    assert owned == list(range(len(lens)))
    for start, own, end in spans:
        assert sum(lens[start:end]) <= 10 and start <= own < end and own - start <= 2


def test_length_grouped_sampler_shuffles_reproducibly():
    lengths = list(np.random.default_rng(0).integers(5, 60, size=200))
    s = LengthGroupedBatchSampler(lengths, 8, seed=3)
    e0 = list(s)
    assert sorted(i for b in e0 for i in b) == list(range(200))
    assert e0 == list(LengthGroupedBatchSampler(lengths, 8, seed=3))
    s.set_epoch(1)
    assert list(s) != e0

    # grouping cuts padding versus a plain shuffle
    def pad(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    plain = list(LengthGroupedBatchSampler(lengths, 8, seed=3, group_by_length=False))
    assert pad(e0) < 0.5 * pad(plain)


def test_one_length_pool_sorts_the_whole_epoch_and_pads_least():
    lengths = np.random.default_rng(1).integers(5, 60, size=1000)
    whole = list(LengthGroupedBatchSampler(lengths, 8, seed=3, mega=0))
    assert sorted(i for b in whole for i in b) == list(range(1000))
    assert whole == list(LengthGroupedBatchSampler(lengths, 8, seed=3, mega=0))
    # one pool: the batches are consecutive runs of the epoch sorted by length, so no two overlap in length
    spans = sorted((min(lengths[b]), max(lengths[b])) for b in whole)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))
    # ... and still shuffled: not in length order
    firsts = [max(lengths[b]) for b in whole]
    assert firsts != sorted(firsts, reverse=True) and firsts != sorted(firsts)

    def pad(batches):
        return sum(max(lengths[b]) * len(b) - sum(lengths[b]) for b in batches)

    pools = {m: pad(list(LengthGroupedBatchSampler(lengths, 8, seed=3, mega=m))) for m in (5, 50, 0)}
    assert pools[0] < pools[50] < pools[5]


def test_length_runs_keep_sorted_neighbours_together_and_change_width_less():
    lengths = np.random.default_rng(2).integers(5, 40, size=4000)  # ~14 batches of each width
    alone = list(LengthGroupedBatchSampler(lengths, 8, seed=3, run=1))
    runs = list(LengthGroupedBatchSampler(lengths, 8, seed=3, run=4))
    assert runs == list(LengthGroupedBatchSampler(lengths, 8, seed=3, run=4))
    # the same batches, each sentence once, in another order
    assert sorted(map(sorted, runs)) == sorted(map(sorted, alone))

    def pairs(batches):  # the widths of each two consecutive steps
        w = [max(lengths[b]) for b in batches]
        return list(zip(w, w[1:]))

    # a run holds neighbours of the epoch sorted longest first, so the width rises only where a run begins:
    # at most once per run (500 batches: 125 runs), against about every other step with runs of 1
    rises_runs, rises_alone = (sum(b > a for a, b in pairs(x)) for x in (runs, alone))
    assert 5 < rises_runs <= 124 < rises_alone  # ... and the runs are shuffled: not in length order
    changes_runs, changes_alone = (sum(a != b for a, b in pairs(x)) for x in (runs, alone))
    assert changes_runs < 0.5 * changes_alone


def test_evaluation_batches_by_tokens_hold_the_budget_longest_first():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=500).tolist() + [300]  # one window longer than the budget
    by_tokens = eval_batches(lengths, 32, max_tokens=512)
    assert sorted(i for b in by_tokens for i in b) == list(range(len(lengths)))  # every window once
    widths = [max(lengths[i] for i in b) for b in by_tokens]
    assert widths == sorted(widths, reverse=True)  # longest first, as the sentence batches
    assert by_tokens[0] == [500]  # the 300-sub-token window alone
    for b, w in zip(by_tokens[1:], widths[1:]):
        assert len(b) * w <= 512
    counts = [len(b) for b in by_tokens]
    assert max(counts) > 32 and min(counts[1:]) < 32  # the count follows the length, not batch_size
    # the cuts compute fewer positions than filling each batch to the budget, at the cost of some batches
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    filled = eval_batches([lengths[i] for i in order], 32, 512, sort=False)  # sorted, each batch filled
    padded = sum(len(b) * w for b, w in zip(by_tokens, widths))
    padded_filled = sum(len(b) * max(lengths[order[i]] for i in b) for b in filled)
    assert padded < padded_filled
    assert padded + EVAL_BATCH_COST_TOKENS * len(by_tokens) < padded_filled + EVAL_BATCH_COST_TOKENS * len(filled)
    by_count = eval_batches(lengths, 32)
    assert [len(b) for b in by_count[:-1]] == [32] * (len(by_count) - 1)
    assert [i for b in by_count for i in b] == [i for b in by_tokens for i in b]  # the same order
    assert [i for b in eval_batches(lengths, 32, 512, sort=False) for i in b] == list(range(len(lengths)))
    assert resolve_eval_batch_tokens(None, "cpu") == 2048 and resolve_eval_batch_tokens(None, "cuda") == 0
    assert resolve_eval_batch_tokens(0, "cpu") == 0 and resolve_eval_batch_tokens(96, "cuda") == 96


def _cuts(n: int):
    """Every way to cut n windows into consecutive batches, as lists of (start, end)."""
    for mask in range(2 ** (n - 1)):
        bounds = [0] + [k for k in range(1, n) if mask >> (k - 1) & 1] + [n]
        yield list(zip(bounds[:-1], bounds[1:]))


@pytest.mark.parametrize("seed", range(40))
def test_sorted_cuts_are_the_cheapest_of_all_cuts_within_the_budget(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 11))
    widths = np.sort(rng.integers(1, 40, size=n))[::-1]
    budget, per_batch = int(rng.integers(20, 120)), int(rng.integers(0, 60))

    def cost(cuts):
        return sum((b - a) * widths[a] + per_batch for a, b in cuts)

    def fits(cuts):  # within the budget, or a single window
        return all(b - a == 1 or (b - a) * widths[a] <= budget for a, b in cuts)

    got = cut_sorted(widths, budget, per_batch)
    assert [a for a, _ in got] == [0] + [b for _, b in got[:-1]] and got[-1][1] == n  # consecutive, all covered
    assert fits(got)
    assert cost(got) == min(cost(c) for c in _cuts(n) if fits(c))  # brute force over all 2^(n-1) cuts


@pytest.mark.parametrize("n_batches,world", [(7, 2), (8, 2), (1, 2), (5, 3), (0, 2), (4, 1)])
def test_evaluation_shards_give_every_process_as_many_batches_and_miss_none(n_batches, world):
    batches = [[i] for i in range(n_batches)]
    shards = [shard_batches(batches, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # the same number of forwards on every process (ZeRO-3)
    assert len(shards[0]) == -(-n_batches // world)
    assert sorted({b[0] for s in shards for b in s}) == list(range(n_batches))
    assert shards[0][0:1] == batches[0:1]  # rank r starts at batch r
    if world == 1:
        assert shards[0] == batches


@pytest.mark.parametrize("recorded", [True, False, None])
def test_the_tagger_cuts_its_batches_as_the_run_evaluated(smoke_run, tmp_path, recorded):
    """`tagtune predict` runs the batches the run's evaluation ran: cut (the default, recorded with the
    model), filled up to the budget, or filled for a run saved before the setting existed."""
    from conftest import model_recording

    from tagtune.tagger import Tagger

    model_dir = tmp_path / "model"
    assert model_recording(smoke_run, model_dir, "eval_batch_cuts", recorded) is True  # recorded with the model
    tagger = Tagger.load(model_dir, device="cpu", batch_tokens=256)
    assert tagger.batch_cuts is (recorded is True)

    words = ["the", "cat", "saw", "a", "dog"]
    sents = [[words[k % 5] for k in range(n)] for n in [22, 11, 11, 11] + [4] * 60]
    shapes = []
    hook = tagger.model.register_forward_hook(
        lambda m, a, k, o: shapes.append(tuple(k["input_ids"].shape)), with_kwargs=True
    )
    try:
        tags = tagger.tag(sents)
    finally:
        hook.remove()
    lengths = build_features(sents, None, tagger.tokenizer).lengths
    expect = {cut: eval_batches(lengths, 32, 256, cut=cut) for cut in (True, False)}
    assert expect[True] != expect[False]  # these sentences tell the two apart
    assert shapes == [(len(b), max(lengths[i] for i in b)) for b in expect[recorded is True]]
    assert [len(t) for t in tags] == [len(s) for s in sents]
