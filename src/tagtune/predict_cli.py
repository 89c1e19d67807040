"""The `tagtune predict`, `evaluate` and `export` subcommands.

tagtune predict  --model RUN_OR_MODEL_DIR --input FILE|- [--output FILE|-] [--scores]
    streamed in chunks (bounded memory, output as it goes); several processes shard the chunks:
    accelerate launch --num_processes N -m tagtune.cli predict ... --output FILE
tagtune evaluate --model RUN_OR_MODEL_DIR --dataset FILE|HUB_ID [--split NAME] [--out DIR]
tagtune export   --model RUN_OR_MODEL_DIR --merge --out DIR
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

from . import runtime
from .cpu_malloc import keep_freed_memory
from .errors import CheckpointError, ConfigError, DataError
from .onednn_cache import bound_kernel_caches
from .predict_io import CHUNK_LINES, INPUT_FORMATS, format_output, no_words, open_input, predictions_jsonl
from .predict_stream import ChunkSink, Shard, process_group, total
from .readers import SUFFIXES, ReadOptions, read_sentences
from .tagger import CONFIG_FILE, DTYPES, Tagger, evaluate_sentences, find_model_dir, read_model_json, resolve_device

logger = logging.getLogger("tagtune.predict")
PREDICTIONS_FILE = "eval_predictions.jsonl"  # words, gold labels and predicted tags per sentence


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run directory (outputs/<recipe>) or its model/ folder")
    p.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=list(DTYPES),
        help="weights/activations dtype (float16: GPU; bfloat16: GPU or a CPU with native bf16)",
    )
    p.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="windows per forward pass where batches are not sized by --batch_tokens (default: the run's eval batch size)",
    )
    p.add_argument(
        "--batch_tokens",
        type=int,
        default=None,
        help="padded sub-tokens per forward pass, whatever the window count; 0 = --batch_size windows per pass "
        "(default: the run's per_device_eval_batch_tokens, 2048 on CPU; 0 when --batch_size is given)",
    )
    p.add_argument("--max_length", type=int, default=None, help="sub-tokens per window (default: the run's)")
    p.add_argument("--stride", type=int, default=None, help="words of left context per window (default: the run's)")
    p.add_argument("--base_model", default=None, help="base model of a LoRA adapter, if it moved since training")
    p.add_argument(
        "--cpu_malloc_reuse",
        default="true",
        choices=("true", "false"),
        help="on CPU under glibc, keep freed memory for the next batch instead of faulting in fresh pages "
        "(as training does: cpu_malloc_reuse); `tagtune predict --dtype bfloat16` of EWT dev 1.19x as fast "
        "(README, Performance). false = glibc's defaults",
    )
    p.add_argument(
        "--cpu_packed_linear",
        default="auto",
        choices=("auto", "true", "false"),
        help="on CPU, run the Linear layers on weights packed once for oneDNN instead of MKL's or oneDNN's "
        "per-call packing: `tagtune predict` of EWT dev 1.11x as fast in float32 and 1.06x in bfloat16, the same "
        "tags (README, Performance). auto = as the run evaluated (cpu_packed_linear; on for a plain model folder)",
    )


def _load_from_args(a: argparse.Namespace) -> Tagger:
    if a.batch_size is not None and a.batch_size < 1:
        raise ConfigError(f"invalid value {a.batch_size}: must be >= 1", where="--batch_size")
    if a.batch_tokens is not None and a.batch_tokens < 0:
        raise ConfigError(f"invalid value {a.batch_tokens}: must be >= 0", where="--batch_tokens")
    if a.max_length is not None and a.max_length < 8:
        raise ConfigError(f"invalid value {a.max_length}: must be >= 8", where="--max_length")
    if a.stride is not None and a.stride < 0:
        raise ConfigError(f"invalid value {a.stride}: must be >= 0", where="--stride")
    if resolve_device(a.device).type == "cpu":  # before the first forward: each new batch shape's kernels would stay
        logger.info("oneDNN kernel caches: %s", bound_kernel_caches())
        if a.cpu_malloc_reuse == "true":  # one pass: without it each batch's large blocks are faulted in afresh
            logger.info("CPU memory allocator: %s", keep_freed_memory())
    return Tagger.load(
        a.model,
        device=a.device,
        dtype=a.dtype,
        batch_size=a.batch_size,
        batch_tokens=a.batch_tokens,
        max_length=a.max_length,
        stride=a.stride,
        base_model=a.base_model,
        packed_linear=None if a.cpu_packed_linear == "auto" else a.cpu_packed_linear == "true",
    )


def _predict_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """`tagtune predict`'s options, checked."""
    p = argparse.ArgumentParser(
        prog="tagtune predict", description="Tag raw text, JSONL of pre-split words, or CoNLL(-U)."
    )
    _model_args(p)
    p.add_argument("--input", required=True, help="file, or - for stdin")
    p.add_argument(
        "--input_format",
        default="auto",
        choices=INPUT_FORMATS,
        help="auto: by extension (.jsonl/.json, .conllu, .conll/.tsv/...); a .txt file or stdin by content: "
        "JSON lines if it starts with { or [, CoNLL columns if its lines look like columns, else raw text",
    )
    p.add_argument("--output", default="-", help="file (written atomically), or - for stdout")
    p.add_argument(
        "--output_format",
        default="auto",
        choices=("auto", "jsonl", "conll"),
        help="auto: by --output extension (.jsonl/.json or .conll/.tsv/.txt), else conll for CoNLL input, jsonl otherwise",
    )
    p.add_argument("--scores", action="store_true", help="add each word's confidence (probability of its tag)")
    p.add_argument("--words_field", default="words", help="JSONL field holding the words")
    p.add_argument("--conll_word_column", type=int, default=0, help="0-based word column of whitespace CoNLL input")
    p.add_argument(
        "--chunk_lines",
        type=int,
        default=CHUNK_LINES,
        help="input lines read, tagged and written at a time (memory is bounded by this, not by the input); "
        "chunks are the unit shared out among processes",
    )
    a = p.parse_args(argv)
    if a.chunk_lines < 1:
        raise ConfigError(f"invalid value {a.chunk_lines}: must be >= 1", where="--chunk_lines")
    return a


def predict_main(argv: Optional[list[str]] = None) -> int:
    """`tagtune predict`: the input read, tagged and written chunk by chunk (memory bounded by a chunk); under
    several processes chunk i goes to process i mod N and the parts are joined in input order."""
    a = _predict_args(argv)
    find_model_dir(a.model)  # a wrong --model fails before reading a large input
    stream = open_input(a.input, a.input_format, a.words_field, a.conll_word_column, a.chunk_lines)
    out_fmt = _output_format(a.output_format, a.output, stream.fmt)
    shard = Shard.from_env()
    if shard.world_size > 1:
        runtime.configure_cpu_threads()  # cores / local processes on CPU, unless the user chose
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tagger = _load_from_args(a)
    words = sentences = chunks = 0
    t0 = time.time()
    with process_group(shard), ChunkSink(a.output, shard).open() as sink:
        for index, (text, first_line) in enumerate(stream.chunks):
            if not shard.owns(index):
                continue
            sents = stream.parse(text, first_line)
            tags, scores = tagger.tag([s.words for s in sents], return_scores=True)
            sink.write(format_output(sents, tags, scores if a.scores else None, out_fmt))
            words += sum(map(len, tags))
            sentences += len(sents)
            chunks += 1
        if shard.world_size > 1:
            print(f"tagtune predict: rank {shard.rank}: {chunks} chunks, {words} words", file=sys.stderr)
        words, sentences = total(words, shard), total(sentences, shard)
        if not words:
            raise no_words(stream)  # before the output is put in place: an existing file stays as it was
    secs = time.time() - t0
    if shard.rank == 0:
        print(
            f"tagtune predict: {words} words in {sentences} sentences ({stream.label} -> {out_fmt}) in {secs:.2f} s "
            f"({words / max(secs, 1e-9):.0f} words/s, {shard.world_size} process(es) on {tagger.device})"
            + ("" if a.output == "-" else f" -> {a.output}"),
            file=sys.stderr,
        )
    return 0


def _output_format(requested: str, output: str, in_fmt: str) -> str:
    if requested != "auto":
        return requested
    suffix = Path(output).suffix.lower() if output != "-" else ""
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in [k for k, v in SUFFIXES.items() if v != "json"] or in_fmt in ("conll", "conllu"):
        return "conll"
    return "jsonl"


def _load_labelled(a: argparse.Namespace, tt_cfg: dict[str, Any]) -> tuple[list[Any], str, str]:
    """--dataset (file of any supported format, or hub id) -> validated sentences, split name, slug."""
    from .data import load_hub, pick_eval_split, validate_split

    # the training run's reading settings, overridden by flags
    opts = ReadOptions(
        **{
            k: getattr(a, k) if getattr(a, k) is not None else tt_cfg.get(k, f.default)
            for k, f in ReadOptions.__dataclass_fields__.items()
        }
    )
    ds = a.dataset
    is_file = Path(ds).exists() or Path(ds).suffix.lower() in SUFFIXES
    if is_file:
        sents, split = read_sentences(ds, opts), a.split if a.split != "auto" else "file"
        slug = Path(ds).stem
    else:
        splits = load_hub(ds, a.dataset_config_name, opts.words_field, opts.labels_field)
        split = (
            pick_eval_split([s for s in splits if s != "train"], a.split)
            if a.split == "auto"
            else pick_eval_split(list(splits), a.split)
        )
        if split is None:
            raise DataError(
                f"no validation, dev or test split; available: {list(splits)}",
                where=f"--dataset {ds}",
                fix="choose one with --split, e.g. --split train",
            )
        sents = splits[split]
        slug = f"{ds.replace(':', '-').replace('/', '_')}-{split}"
    kept, empty = validate_split(split, sents)
    if empty:
        logger.warning("skipped %d empty sentence(s) in split '%s'", empty, split)
    if a.max_samples:
        kept = kept[: a.max_samples]
    if not kept:
        raise DataError(
            f"no labelled sentences in split '{split}'", where=ds, fix="check the file and its format flags"
        )
    return kept, split, slug


def _evaluate_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """`tagtune evaluate`'s options: the labelled set, where results go, and the reading options as in training."""
    p = argparse.ArgumentParser(
        prog="tagtune evaluate",
        description="Score a trained model on a labelled set: the training evaluation's metrics and files.",
    )
    _model_args(p)
    p.add_argument(
        "--dataset", required=True, help="labelled file (.json/.jsonl, .conllu, .conll/.txt/.tsv) or hub dataset id"
    )
    p.add_argument("--dataset_config_name", default=None, help="hub dataset configuration name")
    p.add_argument(
        "--split", default="auto", help="hub split: auto = validation/dev/valid/test, or a name such as train"
    )
    p.add_argument(
        "--out", default=None, help="folder for the result files (default: <run dir>/eval/<dataset>-<split>)"
    )
    p.add_argument("--max_samples", type=int, default=None, help="score only the first N sentences")
    for name, f in ReadOptions.__dataclass_fields__.items():
        kind = int if f.type in ("int", int) else str
        p.add_argument(f"--{name}", type=kind, default=None, help="as in training (default: the run's setting)")
    return p.parse_args(argv)


def evaluate_main(argv: Optional[list[str]] = None) -> int:
    """`tagtune evaluate`: a labelled set scored as the training evaluation scores it, with the same files."""
    from .data import check_eval_labels
    from .metrics import confusion, label_distribution
    from .outputs import RUN_MARKER, atomic_write_json, atomic_write_text, epoch_table_text, write_epoch_outputs

    a = _evaluate_args(argv)
    model_dir = find_model_dir(a.model)
    tt_cfg = read_model_json(model_dir / CONFIG_FILE) if (model_dir / CONFIG_FILE).is_file() else {}
    sents, split, slug = _load_labelled(a, tt_cfg)
    labels_known = tt_cfg.get("labels")
    if labels_known:  # fail on unseen labels before the model loads
        check_eval_labels(labels_known, split, sents)
    out = Path(a.out) if a.out else (model_dir.parent if model_dir.name == "model" else model_dir) / "eval" / slug
    if (out / RUN_MARKER).exists():
        raise CheckpointError(
            "this folder holds a training run; its files would be overwritten",
            where=str(out),
            fix="choose another --out (the default is <run dir>/eval/<dataset>-<split>)",
        )
    tagger = _load_from_args(a)
    check_eval_labels(tagger.labels, split, sents)
    t0 = time.time()
    ev = evaluate_sentences(tagger, [s.words for s in sents], [s.tags for s in sents])
    secs = time.time() - t0
    row = {**ev.metrics, "eval_time_s": secs}
    flat_g = [t for s in ev.gold for t in s]
    flat_p = [t for s in ev.pred for t in s]
    write_epoch_outputs(str(out), [row])
    atomic_write_text(out / PREDICTIONS_FILE, predictions_jsonl(ev.words, ev.gold, ev.pred))
    atomic_write_json(
        out / "eval_results.json",
        {
            "model": str(model_dir),
            "dataset": a.dataset,
            "split": split,
            "eval_sentences": len(sents),
            "eval_words": len(flat_g),
            "labels": tagger.labels,
            "device": str(tagger.device),
            "final": {k: v for k, v in row.items() if k != "per_tag"},
            "label_distribution": {"eval": label_distribution(ev.gold)},
            "confusion_matrix": {"labels": tagger.labels, "matrix": confusion(flat_g, flat_p, tagger.labels).tolist()},
        },
    )
    print(epoch_table_text([row]))
    print(
        f"tagtune evaluate: {len(flat_g)} words in {len(sents)} sentences of '{split}': "
        f"{row['primary_metric']} (primary) {row['primary']:.4f}, accuracy {row['accuracy']:.4f}, "
        f"macro F1 {row['macro_f1']:.4f}, eval loss {row['eval_loss']:.4f} -> {out}"
    )
    return 0


def export_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="tagtune export",
        description="Write a plain transformers model (LoRA adapters merged into the base weights).",
    )
    p.add_argument("--model", required=True, help="run directory or its model/ folder")
    p.add_argument(
        "--merge", action="store_true", help="merge a LoRA adapter into its base model (peft merge_and_unload)"
    )
    p.add_argument("--out", required=True, help="new folder for the exported model")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it already holds files")
    p.add_argument("--base_model", default=None, help="base model of a LoRA adapter, if it moved since training")
    a = p.parse_args(argv)

    out = Path(a.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not a.overwrite:
        raise CheckpointError(
            "output folder is not empty", where=str(out), fix="choose a new --out, or pass --overwrite"
        )
    src = find_model_dir(a.model)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise CheckpointError(
            "--out is the model folder itself (or inside it)", where=str(out), fix="choose a new folder"
        )
    tagger = Tagger.load(src, device="cpu", base_model=a.base_model)
    if tagger.is_adapter and not a.merge:
        raise ConfigError(
            "the model is a LoRA adapter; exporting a plain transformers model needs --merge",
            where="--merge",
            fix=f"tagtune export --model {a.model} --merge --out {a.out}",
        )
    if not tagger.is_adapter and a.merge:
        print("tagtune export: the model is already a full model; nothing to merge, writing a copy", file=sys.stderr)
    merged = tagger.merged()
    # written beside the target and renamed into place: an interrupted export leaves no half model
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the model folder should not be
    try:
        merged.save(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = sum(p.numel() for p in merged.model.parameters())
    print(
        f"tagtune export: {'merged adapter + base' if tagger.is_adapter else 'full model'} ({n:,} parameters, "
        f"{len(tagger.labels)} labels) -> {out}",
        file=sys.stderr,
    )
    return 0
