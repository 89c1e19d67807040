"""Offline material the project makes itself: tagged sentences from a small grammar, and tiny
random-init BERT/RoBERTa models with locally trained tokenizers.

Used by ``recipes/smoke.py`` and the tests, so every code path runs with no network. The
grammar has ambiguous words ("can", "run", "books", "light") whose tag depends on context, so
reaching high accuracy is a real learning check, not memorisation of a word->tag table.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

LEXICON: dict[str, list[str]] = {
    "DT": ["the", "a", "this", "that", "every", "some"],
    "JJ": ["big", "small", "red", "old", "quick", "happy", "light", "bright", "unbelievable"],
    "NN": ["cat", "dog", "man", "park", "house", "run", "light", "book", "can", "teacher", "river"],
    "NNS": ["cats", "dogs", "books", "runs", "houses", "cans", "teachers"],
    "NNP": ["John", "Mary", "London", "Paris", "Alice", "Zürich"],
    "VBZ": ["sees", "likes", "runs", "books", "walks", "cans", "lights"],
    "VBD": ["saw", "liked", "ran", "walked", "booked", "lit"],
    "VB": ["see", "like", "run", "book", "walk", "light"],
    "MD": ["can", "will", "should", "must"],
    "IN": ["in", "on", "with", "near", "under"],
    "PRP": ["he", "she", "it", "they"],
    "CC": ["and", "but"],
    "RB": ["quickly", "slowly", "often", "never"],
    "TO": ["to"],
    "CD": ["two", "three", "5", "42", "1,000"],
    ".": [".", "!", "?"],
    ",": [","],
    "POS": ["'s"],
}

# "?" marks an optional slot.
TEMPLATES: list[list[str]] = [
    ["DT", "JJ?", "NN", "VBZ", "DT", "JJ?", "NN", "."],
    ["DT", "NN", "VBD", "IN", "DT", "NN", "."],
    ["PRP", "MD", "VB", "DT", "NN", "RB?", "."],
    ["NNP", "VBD", "TO", "VB", "CD", "NNS", "."],
    ["DT", "NN", "CC", "DT", "NN", "VBD", "RB", "."],
    ["NNP", "POS", "NN", "MD", "VB", "IN", "NNP", "."],
    ["CD", "NNS", "VBD", ",", "CC", "PRP", "VBD", "RB", "."],
    ["PRP", "VBZ", "DT", "JJ", "NNS", "IN", "DT", "NN", "."],
]

SPLIT_SIZES = {"train": 2000, "validation": 300, "test": 300}


def _sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    words, tags = [], []
    for slot in rng.choice(TEMPLATES):
        if slot.endswith("?"):
            if rng.random() < 0.5:
                continue
            slot = slot[:-1]
        words.append(rng.choice(LEXICON[slot]))
        tags.append(slot)
    if rng.random() < 0.3:  # join two clauses: longer, more varied sentences
        w2, t2 = _sentence(rng)
        words = words[:-1] + [","] + w2
        tags = tags[:-1] + [","] + t2
    return words, tags


def generate_splits(name: str = "pos", seed: int = 1234) -> dict[str, list[tuple[list[str], list[str]]]]:
    """Deterministic train/validation/test splits of generated (words, tags) pairs."""
    if name != "pos":
        raise ValueError(f"unknown synthetic dataset 'synthetic:{name}'; available: synthetic:pos")
    rng = random.Random(seed)
    return {split: [_sentence(rng) for _ in range(n)] for split, n in SPLIT_SIZES.items()}


def _corpus_text() -> list[str]:
    sents = generate_splits()["train"]
    return [" ".join(w) for w, _ in sents] + [" ".join(ws) for ws in LEXICON.values()]


def build_tokenizer(arch: str):
    """A fast tokenizer trained on the synthetic corpus: WordPiece (bert) or byte-level BPE (roberta)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    text = _corpus_text()
    if arch == "bert":
        from transformers import BertTokenizerFast

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        # a small vocabulary so that longer words split into several sub-tokens
        tok.train_from_iterator(text, trainers.WordPieceTrainer(vocab_size=160, special_tokens=specials))
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tok.decoder = decoders.WordPiece()
        return BertTokenizerFast(tokenizer_object=tok, do_lower_case=False, model_max_length=128)
    if arch == "roberta":
        from transformers import RobertaTokenizerFast

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok.train_from_iterator(
            text,
            trainers.BpeTrainer(
                vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
            ),
        )
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), add_prefix_space=True
        )
        tok.decoder = decoders.ByteLevel()
        return RobertaTokenizerFast(tokenizer_object=tok, add_prefix_space=True, model_max_length=128)
    raise ValueError(f"unknown synthetic architecture '{arch}'; use synthetic:bert or synthetic:roberta")


def build_model_config(arch: str, vocab_size: int, pad_token_id: int):
    from transformers import BertConfig, RobertaConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=pad_token_id,
    )
    if arch == "bert":
        return BertConfig(max_position_embeddings=128, **common)
    return RobertaConfig(max_position_embeddings=130, type_vocab_size=1, **common)


def cache_root() -> Path:
    return Path(os.environ.get("TAGTUNE_CACHE", Path.home() / ".cache" / "tagtune"))


def synthetic_model_path(name: str) -> str:
    """Folder of the tiny random-init model 'synthetic:<arch>', built once and cached.

    Built in a temporary folder and renamed into place, so concurrent processes (DDP ranks)
    never see a half-written model; the build is seeded, so every copy is identical.
    """
    import torch
    from transformers import AutoModelForMaskedLM

    arch = name.split(":", 1)[1]
    if arch not in ("bert", "roberta"):
        raise ValueError(f"unknown synthetic model '{name}'; use synthetic:bert or synthetic:roberta")
    target = cache_root() / f"synthetic-{arch}-v1"
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tok = build_tokenizer(arch)
        config = build_model_config(arch, len(tok), tok.pad_token_id)
        torch.manual_seed(0)
        AutoModelForMaskedLM.from_config(config).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
