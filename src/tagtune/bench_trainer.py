"""`tagtune bench`'s peer: transformers' token-classification example (examples/pytorch/token-classification/
run_ner.py), reduced to what this data needs, run as a plain ``python`` process, one per run:

    python -m tagtune.bench_trainer grouped|baseline SPEC.json RESULT.json

``datasets.map`` tokenisation with first-sub-token labels, ``Trainer`` + ``DataCollatorForTokenClassification``,
seqeval in ``compute_metrics``; ``grouped`` with ``train_sampling_strategy="group_by_length"`` (the Trainer at
its best), ``baseline`` with the Trainer's defaults. It reads the very same sentences through tagtune's readers
and writes its counts, times, accuracy and peak memory to RESULT.json.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .bench_spec import BenchSpec, train_config


def tokenize_and_align(tokenizer: Any, max_length: int) -> Callable[[dict], dict]:
    """run_ner's ``tokenize_and_align_labels`` (label_all_tokens False): the first sub-token of a word carries
    its label, the others and the special tokens -100."""

    def tokenize_and_align_labels(examples: dict) -> dict:
        tokenized_inputs = tokenizer(
            examples["tokens"], truncation=True, max_length=max_length, is_split_into_words=True
        )
        labels = []
        for i, label in enumerate(examples["ner_tags"]):
            previous_word_idx = None
            label_ids = []
            for word_idx in tokenized_inputs.word_ids(batch_index=i):
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

    return tokenize_and_align_labels


def seqeval_metrics(label_list: list[str]) -> Callable[[Any], dict[str, float]]:
    """run_ner's ``compute_metrics``: what evaluate.load("seqeval") computes (its script lives on the hub;
    offline this calls seqeval directly)."""

    def compute_metrics(p: Any) -> dict[str, float]:
        import numpy as np
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
        report = classification_report(true_labels, true_predictions, output_dict=True, zero_division=0)
        return {
            "precision": report["micro avg"]["precision"],
            "recall": report["micro avg"]["recall"],
            "f1": report["micro avg"]["f1-score"],
            "accuracy": accuracy_score(true_labels, true_predictions),
        }

    return compute_metrics


def training_arguments(spec: BenchSpec, workdir: Path, group_by_length: bool, cuda: bool) -> Any:
    """The spec's hyperparameters as run_ner's users pass them; no checkpoints, no evaluation while training."""
    from transformers import TrainingArguments

    return TrainingArguments(
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


def counting_trainer(seen: dict[str, Any]) -> type:
    """The Trainer, counting what each training batch holds into ``seen``: summed on the device as tagtune
    does (no host sync per step); counted here, not in the collator, which may run in loader worker processes."""
    import torch
    from transformers import Trainer

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            m = inputs["attention_mask"]
            step = torch.stack([m.sum(), (inputs["labels"] != -100).sum()])
            seen["real_words"] = step if seen["real_words"] is None else seen["real_words"] + step
            seen["padded"] += m.numel()
            return super().training_step(model, inputs, num_items_in_batch)

    return CountingTrainer


def train_clock(cuda: bool) -> Any:
    """A callback timing the training loop alone (on_train_begin to on_train_end), as tagtune times its own."""
    import torch
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t1 = time.perf_counter()

    return Clock()


def run_baseline(spec: BenchSpec, workdir: Path, group_by_length: bool) -> dict[str, Any]:
    """One run of the peer: train, then evaluate once; its counts and times."""
    import datasets
    import torch
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, set_seed

    from .data import load_corpus
    from .features import load_tokenizer
    from .modeling import resolve_model_path

    corpus = load_corpus(train_config(spec, workdir))  # the very same sentences, through tagtune's readers
    label_list = corpus.labels
    label_to_id = {t: i for i, t in enumerate(label_list)}
    model_path = resolve_model_path(spec.model)
    tokenizer = load_tokenizer(model_path)  # run_ner also sets add_prefix_space=True for RoBERTa
    align = tokenize_and_align(tokenizer, min(int(tokenizer.model_max_length or 512), 512))

    def dataset(sents):
        raw = datasets.Dataset.from_dict(
            {"tokens": [s.words for s in sents], "ner_tags": [[label_to_id[t] for t in s.tags] for s in sents]}
        )
        return raw.map(align, batched=True, remove_columns=raw.column_names)

    train_dataset, eval_dataset = dataset(corpus.train), dataset(corpus.eval)
    set_seed(spec.seed)
    model = AutoModelForTokenClassification.from_pretrained(
        model_path, num_labels=len(label_list), id2label=dict(enumerate(label_list)), label2id=label_to_id
    )
    cuda = torch.cuda.is_available()
    # run_ner pads half-precision batches to multiples of 8 for GPU tensor cores; on CPU that is only
    # more padding (19.8% vs 6.8% of bf16 batches), so the peer at its best does not (as tagtune does not)
    collator = DataCollatorForTokenClassification(
        tokenizer, pad_to_multiple_of=8 if cuda and spec.precision in ("fp16", "bf16") else None
    )
    seen: dict[str, Any] = {"real_words": None, "padded": 0}
    args, clock = training_arguments(spec, workdir, group_by_length, cuda), train_clock(cuda)
    trainer = counting_trainer(seen)(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=seqeval_metrics(label_list),
        callbacks=[clock],
    )
    out = trainer.train()
    train_tokens, train_words = (int(v) for v in seen["real_words"].tolist())
    t = time.perf_counter()
    metrics = trainer.evaluate()
    eval_time = time.perf_counter() - t
    return {
        "steps": out.global_step,
        "train_time_s": clock.t1 - clock.t0,
        "train_tokens": train_tokens,
        "train_words": train_words,
        "train_padded_tokens": seen["padded"],
        "eval_time_s": eval_time,
        "eval_words": sum(sum(1 for v in row if v != -100) for row in eval_dataset["labels"]),
        "accuracy": metrics["eval_accuracy"],
        "params": sum(p.numel() for p in model.parameters()),
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "no",
        "train_sampling_strategy": args.train_sampling_strategy,
    }


def main(path: str, spec_file: str, result_file: str) -> None:
    """One worker process: run the peer, add its peak memory, write RESULT.json."""
    import torch

    spec = BenchSpec(**json.loads(Path(spec_file).read_text()))
    if spec.threads:
        torch.set_num_threads(spec.threads)
    # both paths' metric libraries load before any clock starts (run_ner loads seqeval at set-up too)
    import seqeval.metrics  # noqa: F401
    import sklearn.metrics  # noqa: F401

    raw = run_baseline(spec, Path(result_file).parent, group_by_length=path == "grouped")
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


if __name__ == "__main__":
    main(*sys.argv[1:4])
