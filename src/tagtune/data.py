"""Training corpus: hub datasets and local files (read by ``readers``) -> validated tagged sentences.

Every sentence keeps ``where`` (file:line, or split and index) so that any later error can
point at it. Nothing is dropped silently: empty sentences are skipped and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from .errors import DataError
from .readers import ReadOptions, Sentence, check_record, read_sentences

if TYPE_CHECKING:
    from .config import TrainConfig

logger = logging.getLogger(__name__)

EVAL_SPLIT_PREFERENCE = ("validation", "dev", "valid", "test")


@dataclass
class Corpus:
    """Training and evaluation sentences with the label list taken from training."""

    train: list[Sentence]
    eval: list[Sentence]
    eval_split: Optional[str]
    labels: list[str]
    skipped_empty: dict[str, int] = field(default_factory=dict)
    # the evaluation split's own tags when some are unseen in training (``eval`` then holds the
    # tags the model can be given: see check_eval_labels); None when eval's tags are its own
    eval_gold: Optional[list[list[str]]] = None
    unseen_eval_words: int = 0

    @property
    def eval_gold_tags(self) -> list[list[str]]:
        """The tags to score evaluation against: the split's own, unseen ones included."""
        return self.eval_gold if self.eval_gold is not None else [s.tags for s in self.eval]

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}


def read_options(cfg: TrainConfig) -> ReadOptions:
    """The training config's reading fields (`tagtune evaluate` takes the same fields from a run's saved config)."""
    return ReadOptions(**{k: getattr(cfg, k) for k in ReadOptions.__dataclass_fields__})


def read_file(path: str, options: ReadOptions) -> list[Sentence]:
    """A tagged file's sentences, each keeping where it came from."""
    return read_sentences(path, options, tagged=True)


# ----------------------------------------------------------------------------------------
# hub datasets
# ----------------------------------------------------------------------------------------


def _hub_split_to_sentences(ds: Any, split: str, words_field: str, labels_field: str) -> list[Sentence]:
    for name in (words_field, labels_field):
        if name not in ds.column_names:
            raise DataError(
                f"missing field '{name}'; columns: {ds.column_names}",
                where=f"hub split '{split}'",
                fix="set --words_field/--labels_field",
            )
    names = None
    feat = ds.features[labels_field]
    inner = getattr(feat, "feature", None)
    if inner is not None and hasattr(inner, "names"):
        names = inner.names  # ClassLabel ids -> tag strings
    out = []
    for i, rec in enumerate(ds):
        where = f"split '{split}', sentence {i}"
        if names is not None:
            rec = {words_field: rec[words_field], labels_field: [names[t] for t in rec[labels_field]]}
        out.append(check_record(rec, words_field, labels_field, where))
    return out


def load_hub(name: str, config_name: Optional[str], words_field: str, labels_field: str) -> dict[str, list[Sentence]]:
    if name.startswith("synthetic:"):
        from .synthetic import generate_splits

        return {
            split: [Sentence(w, t, f"split '{split}', sentence {i}") for i, (w, t) in enumerate(sents)]
            for split, sents in generate_splits(name.split(":", 1)[1]).items()
        }
    import datasets

    try:
        dsd = datasets.load_dataset(name, config_name)
    except Exception as err:  # offline, typo, private: all surface as one clear message
        raise DataError(
            f"cannot load hub dataset '{name}': {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            where="config field 'dataset_name'",
            fix="check the id and your network (HF_DATASETS_OFFLINE=1 blocks downloads), or use --train_file/--validation_file with local files",
        ) from None
    return {split: _hub_split_to_sentences(ds, split, words_field, labels_field) for split, ds in dsd.items()}


# ----------------------------------------------------------------------------------------
# validation and assembly
# ----------------------------------------------------------------------------------------


def validate_split(split: str, sents: Iterable[Sentence]) -> tuple[list[Sentence], int]:
    """Length check with location; empty sentences skipped and counted."""
    kept, empty = [], 0
    for s in sents:
        if len(s.words) != len(s.tags):
            raise DataError(
                f"{len(s.words)} words but {len(s.tags)} labels in split '{split}'",
                where=s.where,
                fix="every word needs exactly one tag; fix or remove this sentence",
            )
        if not s.words:
            empty += 1
            continue
        for i, w in enumerate(s.words):
            if not w.strip():
                raise DataError(
                    f"word {i} is empty or whitespace in split '{split}'",
                    where=s.where,
                    fix="remove empty tokens or replace them with a placeholder",
                )
        kept.append(s)
    return kept, empty


def pick_eval_split(available: Iterable[str], eval_split: str) -> Optional[str]:
    available = list(available)
    if eval_split != "auto":
        if eval_split not in available:
            raise DataError(
                f"evaluation split '{eval_split}' not found; available: {available}", where="config field 'eval_split'"
            )
        return eval_split
    for name in EVAL_SPLIT_PREFERENCE:
        if name in available:
            return name
    return None


def check_eval_labels(labels: list[str], split: str, sents: list[Sentence], policy: str = "error") -> int:
    """Words whose tag the training split lacks; ``policy`` 'error' stops on them, naming each tag and count.

    Under 'ignore'/'as_o' the sentences are returned unchanged here; ``map_unseen`` gives the
    model-side copy (an unseen tag cannot be a class id) and the metrics score the real tags.
    """
    known = set(labels)
    unseen = Counter(t for s in sents for t in s.tags if t not in known)
    if unseen and policy == "error":
        first = next(s for s in sents if any(t in unseen for t in s.tags))
        detail = ", ".join(f"'{t}' x{n}" for t, n in unseen.most_common())
        raise DataError(
            f"evaluation split '{split}' has label(s) never seen in training: {detail}",
            where=f"first at {first.where}",
            fix="add training examples with these tags, map them to training tags, or pass "
            "--unseen_eval_labels ignore|as_o",
        )
    if unseen:
        logger.warning(
            "evaluation split '%s': %d word(s) carry tags unseen in training (%s), scored under --unseen_eval_labels %s",
            split,
            sum(unseen.values()),
            ", ".join(f"'{t}' x{n}" for t, n in unseen.most_common()),
            policy,
        )
    return sum(unseen.values())


def map_unseen(labels: list[str], sents: list[Sentence]) -> list[Sentence]:
    """Copies whose unseen tags become 'O' (the model's target for them, e.g. for the evaluation loss)."""
    known = set(labels)
    if "O" not in known:
        raise DataError(
            "--unseen_eval_labels ignore/as_o maps unseen tags to 'O', but the training tags have no 'O'",
            where="training split",
            fix="use --unseen_eval_labels error and fix the evaluation tags",
        )
    return [Sentence(s.words, [t if t in known else "O" for t in s.tags], s.where) for s in sents]


def build_corpus(splits: dict[str, list[Sentence]], cfg: TrainConfig, log: Optional[logging.Logger] = None) -> Corpus:
    log = log or logger
    if "train" not in splits:
        raise DataError(f"no 'train' split; available: {list(splits)}", where=cfg.dataset_name or "data files")
    eval_name = pick_eval_split([s for s in splits if s != "train"], cfg.eval_split)
    if eval_name is None and cfg.eval_every_epoch:
        raise DataError(
            "no validation, dev or test split to evaluate on",
            where=cfg.dataset_name or "data files",
            fix="pass --validation_file, or --eval_every_epoch false",
        )
    skipped: dict[str, int] = {}
    train, skipped["train"] = validate_split("train", splits["train"])
    evals: list[Sentence] = []
    if eval_name is not None:
        evals, skipped[eval_name] = validate_split(eval_name, splits[eval_name])
    if cfg.max_train_samples:
        train = train[: cfg.max_train_samples]
    if cfg.max_eval_samples:
        evals = evals[: cfg.max_eval_samples]
    for split, n in skipped.items():
        if n:
            log.warning("skipped %d empty sentence(s) in split '%s'", n, split)
    if not train:
        raise DataError(
            "training split is empty after skipping empty sentences", where=cfg.dataset_name or cfg.train_file
        )
    if eval_name is not None and not evals and cfg.eval_every_epoch:
        raise DataError(
            f"evaluation split '{eval_name}' is empty after skipping empty sentences",
            where=cfg.dataset_name or cfg.validation_file or cfg.test_file,
        )
    labels = sorted({t for s in train for t in s.tags})
    unseen = check_eval_labels(labels, eval_name, evals, cfg.unseen_eval_labels) if evals else 0
    gold = [s.tags for s in evals] if unseen else None
    if unseen:
        evals = map_unseen(labels, evals)
    return Corpus(
        train=train,
        eval=evals,
        eval_split=eval_name,
        labels=labels,
        skipped_empty=skipped,
        eval_gold=gold,
        unseen_eval_words=unseen,
    )


def load_corpus(cfg: TrainConfig, log: Optional[logging.Logger] = None) -> Corpus:
    """Read the configured source and return validated train/eval sentences plus the label list."""
    if cfg.dataset_name:
        splits = load_hub(cfg.dataset_name, cfg.dataset_config_name, cfg.words_field, cfg.labels_field)
    else:
        options = read_options(cfg)
        splits = {"train": read_file(cfg.train_file, options)}
        if cfg.validation_file:
            splits["validation"] = read_file(cfg.validation_file, options)
        if cfg.test_file:
            splits["test"] = read_file(cfg.test_file, options)
    return build_corpus(splits, cfg, log)


def iter_tags(sents: Iterable[Sentence]) -> Iterator[str]:
    for s in sents:
        yield from s.tags
