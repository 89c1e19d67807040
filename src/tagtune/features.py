"""Sentences -> model inputs: sub-word tokenisation of pre-split words, label alignment,
windows for long sentences, length-grouped batching and a dynamic-padding collator.

Alignment rule: the word's label goes on its first sub-token, -100 on the rest (or on every
sub-token with ``label_all_subtokens``). Evaluation always scores exactly one position per
word (its first sub-token in the window that owns the word), recorded in ``word_ids``.

Windows: a sentence longer than ``max_length`` sub-tokens is cut into windows at word
boundaries. Each window repeats up to ``stride`` words of left context from the previous one;
every word is owned (trained on, scored) by exactly one window, so nothing is truncated and
nothing is counted twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

IGNORE = -100


@dataclass
class Features:
    """Parallel lists, one entry per window (most sentences are one window)."""

    input_ids: list[list[int]]
    labels: list[list[int]]  # training targets (-100 = ignored)
    word_ids: list[list[int]]  # per token: index of the word it scores, or -1
    sent_ids: list[int]  # sentence index of each window
    num_words: int  # words in all sentences (each scored exactly once)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """Fast tokenizer; byte-level BPE (RoBERTa, GPT-2 style) is loaded with add_prefix_space=True,
    which pre-split words need so each word is encoded as it would be mid-sentence."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name, use_fast=True, trust_remote_code=trust_remote_code)
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"tokenizer of '{name}' is not a fast tokenizer; word alignment needs one")
    if is_byte_level(tok) and not getattr(tok, "add_prefix_space", False):
        tok = AutoTokenizer.from_pretrained(
            name, use_fast=True, trust_remote_code=trust_remote_code, add_prefix_space=True
        )
    return tok


def is_byte_level(tok: Any) -> bool:
    pre = tok.backend_tokenizer.pre_tokenizer
    return pre is not None and "ByteLevel" in repr(pre)


def special_tokens(tok: Any) -> tuple[list[int], list[int]]:
    """The (prefix, suffix) special-token ids the tokenizer wraps a single sequence with."""
    with_special = tok(["x"], is_split_into_words=True)["input_ids"]
    without = tok(["x"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    n = len(without)
    for i in range(len(with_special) - n + 1):
        if with_special[i : i + n] == without:
            return with_special[:i], with_special[i + n :]
    return [], []


def window_spans(word_lens: Sequence[int], budget: int, stride: int) -> list[tuple[int, int, int]]:
    """Split words into windows (start, own_start, end) whose sub-token total fits ``budget``.

    Words [own_start, end) are owned by the window; [start, own_start) is left context.
    ``word_lens`` must already be clipped to ``budget``.
    """
    n = len(word_lens)
    if sum(word_lens) <= budget:
        return [(0, 0, n)]
    prefix = np.concatenate([[0], np.cumsum(word_lens)])
    spans, own = [], 0
    while own < n:
        start = max(0, own - stride)
        while start < own and prefix[own + 1] - prefix[start] > budget:
            start += 1
        end = own
        while end < n and prefix[end + 1] - prefix[start] <= budget:
            end += 1
        spans.append((start, own, end))
        own = end
    return spans


def build_features(
    sentences: Sequence[Sequence[str]],
    tags: Optional[Sequence[Sequence[str]]],
    tokenizer: Any,
    label2id: Optional[dict[str, int]] = None,
    max_length: Optional[int] = None,
    stride: int = 32,
    label_all_subtokens: bool = False,
    batch_size: int = 1000,
) -> Features:
    """Tokenise every sentence once; ``tags=None`` for prediction (labels all -100)."""
    limit = max_length or min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
    prefix, suffix = special_tokens(tokenizer)
    budget = limit - len(prefix) - len(suffix)
    if budget < 1:
        raise ValueError(
            f"max_length {limit} leaves no room for words after {len(prefix) + len(suffix)} special tokens"
        )
    # long sentences are windowed below, so the "sequence longer than maximum" warning is noise
    getattr(tokenizer, "deprecation_warnings", {})["sequence-length-is-longer-than-the-specified-maximum"] = True
    unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    out = Features([], [], [], [], 0)
    clipped = 0  # words with more sub-tokens than a window holds
    for lo in range(0, len(sentences), batch_size):
        chunk = [list(s) for s in sentences[lo : lo + batch_size]]
        enc = tokenizer(chunk, is_split_into_words=True, add_special_tokens=False)
        for j, words in enumerate(chunk):
            sid = lo + j
            per_word = _word_pieces(enc["input_ids"][j], enc.word_ids(j), len(words))
            clipped += sum(len(p) > budget for p in per_word)
            per_word = [(p or [unk])[:budget] for p in per_word]
            y = [label2id[t] for t in tags[sid]] if tags is not None and label2id is not None else None
            out.num_words += len(words)
            for start, own, end in window_spans([len(p) for p in per_word], budget, stride):
                input_ids, labels, word_ids = _window(per_word, y, start, own, end, label_all_subtokens)
                out.input_ids.append(prefix + input_ids + suffix)
                out.labels.append([IGNORE] * len(prefix) + labels + [IGNORE] * len(suffix))
                out.word_ids.append([-1] * len(prefix) + word_ids + [-1] * len(suffix))
                out.sent_ids.append(sid)
    if clipped:  # still one prediction per word (its first sub-token), but say what was cut
        logging.getLogger("tagtune").warning(
            "%d word(s) have more than %d sub-tokens (max_length %d minus special tokens); each keeps its first %d "
            "and is still predicted once: raise --max_length to keep them whole",
            clipped,
            budget,
            limit,
            budget,
        )
    return out


def _word_pieces(ids: Sequence[int], word_ids: Sequence[Optional[int]], n_words: int) -> list[list[int]]:
    """A sentence's sub-token ids grouped per word (empty for a word the tokenizer drops entirely)."""
    per_word: list[list[int]] = [[] for _ in range(n_words)]
    for tok_id, w in zip(ids, word_ids):
        if w is not None:
            per_word[w].append(tok_id)
    return per_word


def _window(
    per_word: list[list[int]], y: Optional[list[int]], start: int, own: int, end: int, label_all_subtokens: bool
) -> tuple[list[int], list[int], list[int]]:
    """One window's sub-tokens (words ``start:end``), labels and word ids, without the special tokens. Only the
    words it owns (``own:end``; the rest are context shared with the previous window) are labelled and scored,
    each at its first sub-token (at every one with ``label_all_subtokens``, scored still once)."""
    input_ids: list[int] = []
    labels: list[int] = []
    word_ids: list[int] = []
    for w in range(start, end):
        pieces = per_word[w]
        owned = w >= own
        input_ids.extend(pieces)
        lab = y[w] if (y is not None and owned) else IGNORE
        labels.append(lab)
        labels.extend([lab if label_all_subtokens else IGNORE] * (len(pieces) - 1))
        word_ids.append(w if owned else -1)
        word_ids.extend([-1] * (len(pieces) - 1))
    return input_ids, labels, word_ids


class FeatureDataset(torch.utils.data.Dataset):
    def __init__(self, features: Features):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> int:
        return i  # the collator reads the parallel lists directly: no per-item dict building


MODEL_INPUTS = ("input_ids", "attention_mask")  # the collated keys the encoder takes; the rest are ours


class Collator:
    """Pads a list of window indices to the longest in the batch (to a multiple of 8 under fp16/bf16)."""

    def __init__(self, features: Features, pad_token_id: int, pad_to_multiple_of: Optional[int] = None):
        self.f = features
        self.pad_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        f = self.f
        width = max(len(f.input_ids[i]) for i in idx)
        if self.multiple:
            width = int(math.ceil(width / self.multiple) * self.multiple)
        n = len(idx)
        input_ids = np.full((n, width), self.pad_id, dtype=np.int64)
        attention = np.zeros((n, width), dtype=np.int64)
        labels = np.full((n, width), IGNORE, dtype=np.int64)
        word_ids = np.full((n, width), -1, dtype=np.int64)
        for r, i in enumerate(idx):
            k = len(f.input_ids[i])
            input_ids[r, :k] = f.input_ids[i]
            attention[r, :k] = 1
            labels[r, :k] = f.labels[i]
            word_ids[r, :k] = f.word_ids[i]
        sent = np.asarray([f.sent_ids[i] for i in idx], dtype=np.int64)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "labels": torch.from_numpy(labels),
            "word_ids": torch.from_numpy(word_ids),
            "sent_ids": torch.from_numpy(sent),
        }


class LengthGroupedBatchSampler(torch.utils.data.BatchSampler):
    """Training batches: shuffled batches of similar-length windows, reproducible per (seed, epoch): the
    shuffled windows are sorted by length in pools of ``mega`` batches (the Trainer's mega-batches; 0: one
    pool, the whole epoch), cut into batches, and the full batches shuffled in runs of ``run`` neighbours
    of that sorted order (1: each batch on its own).

    Yields *global* batches (per-device size x processes); Accelerate splits each across
    processes, so the data seen at each step is the same whatever the world size.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        group_by_length: bool = True,
        mega: int = 0,
        run: int = 1,
    ):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.drop_last = False
        self.seed, self.group, self.mega, self.run = seed, group_by_length, mega, run
        self.epoch = 0
        self.sampler = range(len(lengths))  # Accelerate inspects .sampler

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(n)
        if not self.group:
            batches = [perm[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        else:
            size = self.batch_size * self.mega if self.mega else n
            batches = []
            for i in range(0, n, size):
                mb = perm[i : i + size]
                mb = mb[np.argsort(-self.lengths[mb], kind="stable")]
                batches.extend(mb[j : j + self.batch_size] for j in range(0, len(mb), self.batch_size))
            # keep the one short last batch last, shuffle the full ones in runs of sorted neighbours
            full = [b for b in batches if len(b) == self.batch_size]
            rest = [b for b in batches if len(b) != self.batch_size]
            runs = [full[i : i + self.run] for i in range(0, len(full), self.run)]
            order = rng.permutation(len(runs))
            batches = [b for k in order for b in runs[k]] + rest
        for b in batches:
            yield b.tolist()


# Padded sub-tokens per evaluation batch on CPU when the config leaves it to the trainer. MiniLM on EWT dev,
# fp32, 2 threads: 2,048 scores 1.10x the words/s of 32-sentence batches (1,024: 1.05x, 4,096: 1.05x): short
# sentences no longer make matmuls of a few hundred rows, which run at ~85% of the large ones' rate.
CPU_EVAL_BATCH_TOKENS = 2048

# What one more batch costs, in padded sub-tokens, when the sorted windows are cut under a token budget: a
# forward's fixed cost (per-layer calls, per-batch bookkeeping). MiniLM on EWT dev, 2 CPU threads, Tagger
# passes alternated with the cut that only fills each batch (19 batches, 8.0% padding): 100 gives 26 batches,
# 2.9% padding, 1.04-1.07x in fp32 and 1.01-1.03x in bf16; 40-60 cut padding to 1-2% at 30-35 batches but
# gained less (bf16 0.97-1.01x), and 200-400 kept 4.5-5% padding and gained nothing.
EVAL_BATCH_COST_TOKENS = 100


def resolve_eval_batch_tokens(requested: Optional[int], device_type: str) -> int:
    """The evaluation budget in padded sub-tokens per batch; 0 = batches of a fixed sentence count.

    ``None`` (the default) sizes by tokens on CPU only: a GPU's evaluation batch is sized by its memory.
    """
    if requested is None:
        return CPU_EVAL_BATCH_TOKENS if device_type == "cpu" else 0
    return requested


def eval_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int = 0, sort: bool = True, cut: bool = True
) -> list[list[int]]:
    """Evaluation and prediction batches: the windows longest first (``sort``; else in order), cut into
    batches of ``batch_size`` windows, or with ``max_tokens`` into batches of at most that many padded
    sub-tokens (windows x the batch's longest; a longer window alone), whatever their count. Sorted with
    ``cut``, the cuts fall where the fewest positions are computed (``cut_sorted``); else each batch is
    filled up to the budget."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable") if sort else np.arange(len(lengths))
    if not max_tokens:
        return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if sort and cut:
        return [order[a:b].tolist() for a, b in cut_sorted(lengths[order], max_tokens, EVAL_BATCH_COST_TOKENS)]
    batches, start, width = [], 0, 0
    for k, i in enumerate(order):
        width = max(width, int(lengths[i]))
        if k > start and (k - start + 1) * width > max_tokens:
            batches.append(order[start:k].tolist())
            start, width = k, int(lengths[i])
    if start < len(order):
        batches.append(order[start:].tolist())
    return batches


def cut_sorted(widths: np.ndarray, max_tokens: int, batch_cost: int) -> list[tuple[int, int]]:
    """Batches ``[a, b)`` of non-increasing ``widths`` that minimise the padded positions computed plus
    ``batch_cost`` per batch, each within ``max_tokens`` (a wider window alone).

    Filling every batch up to the budget leaves the padding where lengths fall inside a batch (a batch of
    292 windows of 7 holding ones of 4); an exact dynamic programme over the cut points: a batch starting
    at ``a`` is ``widths[a]`` wide, so best[b] = min over a of best[a] + (b - a) x widths[a] + batch_cost.
    """
    n = len(widths)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    for a in range(n):
        w = max(int(widths[a]), 1)
        ends = np.arange(a + 1, min(n, a + max(1, max_tokens // w)) + 1)
        cost = best[a] + (ends - a) * w + batch_cost
        better = cost < best[ends]
        best[ends[better]], start[ends[better]] = cost[better], a
    cuts, b = [], n
    while b > 0:
        cuts.append((int(start[b]), b))
        b = int(start[b])
    return cuts[::-1]


def shard_batches(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's batches: every ``world``-th from ``rank``, topped up with the first ones again so that
    every process runs the same number of forwards (ZeRO-3 gathers weights in each; repeated windows are
    scored twice and counted once)."""
    per_rank = -(-len(batches) // world) if batches else 0
    mine = batches[rank::world]
    return mine + batches[: per_rank - len(mine)]


# ----------------------------------------------------------------------------------------
# on-disk feature cache
# ----------------------------------------------------------------------------------------

CACHE_VERSION = "features-v1"  # bump when build_features' output for the same input changes
_ARRAYS = ("input_ids", "labels", "word_ids")


def feature_cache_key(
    sentences: Sequence[Sequence[str]],
    tags: Optional[Sequence[Sequence[str]]],
    tokenizer: Any,
    label2id: Optional[dict[str, int]],
    settings: dict[str, Any],
) -> str:
    """Hash of everything the features depend on: the words and tags, the whole tokenizer (its
    serialised vocabulary, normaliser and rules, and the special-token wrapping) and the settings."""
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(CACHE_VERSION.encode())
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    for state in ("truncation", "padding"):  # set on the backend by whatever call came last: not identity
        backend.pop(state, None)
    h.update(json.dumps(backend, sort_keys=True).encode())
    h.update(json.dumps([special_tokens(tokenizer), settings, label2id], sort_keys=True, default=str).encode())
    for i, words in enumerate(sentences):  # streamed: no second copy of the corpus
        h.update("\x1f".join(words).encode())
        h.update(b"\x1e")
        if tags is not None:
            h.update("\x1f".join(tags[i]).encode())
        h.update(b"\x1d")
    return h.hexdigest()[:32]


def save_features(features: Features, folder: Any) -> None:
    """Write features as flat int32 arrays + offsets into ``folder`` atomically: built in a temporary
    sibling folder and renamed into place, so a reader sees the whole cache entry or none of it."""
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        lengths = np.fromiter((len(x) for x in features.input_ids), dtype=np.int64, count=len(features))
        np.save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]))
        np.save(tmp / "sent_ids.npy", np.asarray(features.sent_ids, dtype=np.int64))
        for name in _ARRAYS:
            rows = getattr(features, name)
            flat = np.fromiter((v for row in rows for v in row), dtype=np.int32, count=int(lengths.sum()))
            np.save(tmp / f"{name}.npy", flat)
        (tmp / "meta.json").write_text(json.dumps({"num_words": features.num_words, "version": CACHE_VERSION}))
        try:
            os.rename(tmp, target)
        except OSError:  # another process renamed the same entry first: same key, same content
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_features(folder: Any) -> Features:
    import json
    from pathlib import Path

    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    offsets = np.load(folder / "offsets.npy")
    rows = {}
    for name in _ARRAYS:
        flat = np.load(folder / f"{name}.npy", mmap_mode="r")
        rows[name] = [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    return Features(
        rows["input_ids"],
        rows["labels"],
        rows["word_ids"],
        np.load(folder / "sent_ids.npy").tolist(),
        meta["num_words"],
    )


def cached_features(
    cache_dir: Optional[Any],
    sentences: Sequence[Sequence[str]],
    tags: Optional[Sequence[Sequence[str]]],
    tokenizer: Any,
    label2id: Optional[dict[str, int]] = None,
    max_length: Optional[int] = None,
    stride: int = 32,
    label_all_subtokens: bool = False,
) -> tuple[Features, str]:
    """``build_features`` through a cache under ``cache_dir`` (None: no cache). Returns (features, what
    happened: 'hit', 'built' or 'uncached'). A rerun, a resume and every rank of a launch whose main
    process built the entry first (``main_process_first``: a barrier, no other collective) tokenise once."""
    from pathlib import Path

    settings = {"max_length": max_length, "stride": stride, "label_all_subtokens": label_all_subtokens}
    if cache_dir is None:
        return build_features(sentences, tags, tokenizer, label2id, **settings), "uncached"
    folder = Path(cache_dir) / feature_cache_key(sentences, tags, tokenizer, label2id, settings)
    if (folder / "meta.json").is_file():
        return load_features(folder), "hit"
    features = build_features(sentences, tags, tokenizer, label2id, **settings)
    save_features(features, folder)
    return features, "built"
