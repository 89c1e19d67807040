"""Offline material the project makes itself: tagged sentences from a small grammar (POS tags,
or IOB2 named entities), and tiny random-init encoders with locally trained tokenizers:
BERT, DistilBERT, ELECTRA (WordPiece), RoBERTa, ModernBERT (byte-level BPE), XLM-RoBERTa,
DeBERTa-v2/v3 (sentencepiece-style Unigram with Metaspace, built with the tokenizers library).

Used by ``recipes/smoke.py`` and the tests, so every code path runs with no network. The
grammar has ambiguous words ("can", "run", "books", "light") whose tag depends on context, so
reaching high accuracy is a real learning check, not memorisation of a word->tag table.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from collections import Counter
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


# entities that replace the grammar's proper nouns in synthetic:ner (one or two words each)
ENTITIES: dict[str, list[str]] = {
    "PER": ["John", "Mary", "Alice", "Mary Ann", "John Smith"],
    "LOC": ["London", "Paris", "Zürich", "New York", "Rio de Janeiro"],
    "ORG": ["Acme", "Globex Corp", "United Nations"],
}


def _ner_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """A grammar sentence whose proper nouns are PER/LOC/ORG entities, tagged IOB2; every other word is O."""
    words, pos = _sentence(rng)
    out_w, out_t = [], []
    for w, t in zip(words, pos):
        if t != "NNP":
            out_w.append(w)
            out_t.append("O")
            continue
        typ = rng.choice(sorted(ENTITIES))
        parts = rng.choice(ENTITIES[typ]).split()
        out_w.extend(parts)
        out_t.extend([f"B-{typ}"] + [f"I-{typ}"] * (len(parts) - 1))
    return out_w, out_t


def generate_splits(name: str = "pos", seed: int = 1234) -> dict[str, list[tuple[list[str], list[str]]]]:
    """Deterministic train/validation/test splits of generated (words, tags) pairs: 'pos' or 'ner' (IOB2)."""
    make = {"pos": _sentence, "ner": _ner_sentence}.get(name)
    if make is None:
        raise ValueError(f"unknown synthetic dataset 'synthetic:{name}'; available: synthetic:pos, synthetic:ner")
    rng = random.Random(seed)
    return {split: [make(rng) for _ in range(n)] for split, n in SPLIT_SIZES.items()}


def _corpus_text() -> list[str]:
    sents = generate_splits()["train"]
    return [" ".join(w) for w, _ in sents] + [" ".join(ws) for ws in LEXICON.values()]


ARCHS = ("bert", "roberta", "distilbert", "electra", "deberta-v2", "deberta-v3", "xlm-roberta", "modernbert")
WORDPIECE = ("bert", "distilbert", "electra")
UNIGRAM = ("deberta-v2", "deberta-v3", "xlm-roberta")  # sentencepiece models


def _word_counts(text: list[str], normalizer, pre_tokenizer) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in text:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    return counts


def _merged_pieces(counts: Counter[str], size: int, prefix: str) -> list[str]:
    """Every character, then pieces made by byte-pair merges until there are ``size`` of them.

    The tokenizers library's WordPiece and Unigram trainers break ties between equally frequent
    pairs by hash order, which changes from one process to the next, so each cold cache got a
    different vocabulary and trained a different smoke model. Here ties go to the pair that sorts
    first. ``prefix`` marks a piece inside a word ("##" for WordPiece, "" where words carry a marker).
    """
    splits = {w: [w[0]] + [prefix + c for c in w[1:]] for w in counts}
    pieces = sorted({p for parts in splits.values() for p in parts})
    while len(pieces) < size:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, parts in splits.items():
            for pair in zip(parts, parts[1:]):
                pairs[pair] += counts[word]
        if not pairs:
            break
        a, b = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merged = a + b[len(prefix) :]
        for word, parts in splits.items():
            out, i = [], 0
            while i < len(parts):
                if parts[i : i + 2] == [a, b]:
                    out.append(merged)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            splits[word] = out
        if merged not in pieces:
            pieces.append(merged)
    return pieces


def _wordpiece(text: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=False), pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # a small vocabulary so that longer words split into several sub-tokens
    pieces = specials + _merged_pieces(_word_counts(text, normalizer, pre_tokenizer), 160 - len(specials), "##")
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return tok


def _unigram(text: list[str], specials: list[str], bos: str, eos: str):
    """A sentencepiece-style Unigram model (Metaspace '▁' word marker), as XLM-R and DeBERTa-v3 use.

    Its pieces are scored by the log of how often each occurs inside the corpus's words.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.NFKC()
    pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    counts = _word_counts(text, normalizer, pre_tokenizer)
    pieces = _merged_pieces(counts, 120 - len(specials), "")  # small, so words split
    occurs = {p: 1 + sum(n * w.count(p) for w, n in counts.items()) for p in pieces}
    total = sum(occurs.values())
    vocab = [(s, 0.0) for s in specials] + [(p, math.log(occurs[p] / total)) for p in pieces]
    unk = "<unk>" if "<unk>" in specials else "[UNK]"
    tok = Tokenizer(models.Unigram(vocab, unk_id=specials.index(unk)))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}" if bos == "<s>" else f"{bos} $A {eos} $B {eos}",
        special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))],
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def build_tokenizer(arch: str):
    """A fast tokenizer trained on the synthetic corpus, of the kind the architecture ships with."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    text = _corpus_text()
    if arch in WORDPIECE:
        cls = {
            "bert": tf.BertTokenizerFast,
            "distilbert": tf.DistilBertTokenizerFast,
            "electra": tf.ElectraTokenizerFast,
        }
        return cls[arch](tokenizer_object=_wordpiece(text), do_lower_case=False, model_max_length=128)
    if arch == "xlm-roberta":
        tok = _unigram(text, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s>", "</s>")
        return tf.XLMRobertaTokenizerFast(tokenizer_object=tok, model_max_length=128)
    if arch in ("deberta-v2", "deberta-v3"):
        tok = _unigram(text, ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[CLS]", "[SEP]")
        return tf.DebertaV2TokenizerFast(tokenizer_object=tok, do_lower_case=False, model_max_length=128)
    if arch in ("roberta", "modernbert"):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        specials = (
            ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
            if arch == "roberta"
            else ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]
        )
        tok.train_from_iterator(
            text,
            trainers.BpeTrainer(
                vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
            ),
        )
        tok.decoder = decoders.ByteLevel()
        if arch == "roberta":
            tok.post_processor = processors.RobertaProcessing(
                ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), add_prefix_space=True
            )
            return tf.RobertaTokenizerFast(tokenizer_object=tok, add_prefix_space=True, model_max_length=128)
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
        )
        # ModernBERT ships a generic fast tokenizer (byte-level BPE with BERT-style specials)
        return tf.PreTrainedTokenizerFast(
            tokenizer_object=tok,
            cls_token="[CLS]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            unk_token="[UNK]",
            mask_token="[MASK]",
            add_prefix_space=True,
            model_max_length=128,
        )
    raise ValueError(f"unknown synthetic architecture '{arch}'; choose one of {', '.join(ARCHS)}")


def build_model_config(arch: str, vocab_size: int, pad_token_id: int, tok=None):
    import transformers as tf

    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    drop = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    common = dict(vocab_size=vocab_size, pad_token_id=pad_token_id)
    if arch == "bert":
        return tf.BertConfig(max_position_embeddings=128, **size, **drop, **common)
    if arch in ("roberta", "xlm-roberta"):
        cls = tf.RobertaConfig if arch == "roberta" else tf.XLMRobertaConfig
        return cls(max_position_embeddings=130, type_vocab_size=1, **size, **drop, **common)
    if arch == "distilbert":
        return tf.DistilBertConfig(
            dim=64,
            n_layers=2,
            n_heads=2,
            hidden_dim=128,
            max_position_embeddings=128,
            dropout=0.0,
            attention_dropout=0.0,
            **common,
        )
    if arch == "electra":
        return tf.ElectraConfig(embedding_size=32, max_position_embeddings=128, **size, **drop, **common)
    if arch in ("deberta-v2", "deberta-v3"):
        # v3 = the v2 architecture with shared attention keys, log buckets and no convolution layer
        extra = (
            dict(conv_kernel_size=3, position_buckets=-1, share_att_key=False)
            if arch == "deberta-v2"
            else dict(position_buckets=32, share_att_key=True, norm_rel_ebd="layer_norm")
        )
        return tf.DebertaV2Config(
            max_position_embeddings=128,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            type_vocab_size=0,
            max_relative_positions=-1,
            **extra,
            **size,
            **drop,
            **common,
        )
    if arch == "modernbert":
        return tf.ModernBertConfig(
            max_position_embeddings=128,
            global_attn_every_n_layers=2,
            local_attention=16,
            embedding_dropout=0.0,
            mlp_dropout=0.0,
            attention_dropout=0.0,
            cls_token_id=tok.cls_token_id,
            sep_token_id=tok.sep_token_id,
            bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id,
            **size,
            **common,
        )
    raise ValueError(f"unknown synthetic architecture '{arch}'")


def cache_root() -> Path:
    return Path(os.environ.get("TAGTUNE_CACHE", Path.home() / ".cache" / "tagtune"))


def synthetic_model_path(name: str) -> str:
    """Folder of the tiny random-init model 'synthetic:<arch>', built once and cached.

    Built in a temporary folder and renamed into place, so concurrent processes (DDP ranks)
    never see a half-written model; the build is seeded and its vocabulary deterministic, so every
    copy is identical.
    """
    import torch
    from transformers import AutoModelForMaskedLM

    from .modeling import quiet_transformers  # here, as torch: only a build needs them

    arch = name.split(":", 1)[1]
    if arch not in ARCHS:
        raise ValueError(
            f"unknown synthetic model '{name}'; choose one of {', '.join('synthetic:' + a for a in ARCHS)}"
        )
    target = cache_root() / f"synthetic-{arch}-v2"  # v2: vocabularies no longer depend on hash order
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tok = build_tokenizer(arch)
        config = build_model_config(arch, len(tok), tok.pad_token_id, tok)
        torch.manual_seed(0)
        with quiet_transformers():  # a first-use build: nothing on stderr before the run's own first line
            AutoModelForMaskedLM.from_config(config).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
