"""The one training loop, for single-process, DDP (GPU or CPU/gloo) and DeepSpeed launches.

Only this module talks to the Accelerator. It decides precision and the process-group
backend in one place each (``resolve_precision``, ``make_accelerator``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from . import checkpoint as ckpt
from . import tracking
from .config import TrainConfig
from .data import Corpus, load_corpus
from .errors import ConfigError, TagtuneError
from .features import Collator, FeatureDataset, Features, LengthGroupedBatchSampler, build_features, load_tokenizer
from .metrics import compute_metrics, confusion, label_distribution
from .modeling import build_model, count_parameters, resolve_model_path
from .outputs import (
    RUN_MARKER,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    dir_size,
    epoch_table_text,
    redact,
    write_epoch_outputs,
    write_history,
)

logger = logging.getLogger("tagtune")


# ----------------------------------------------------------------------------------------
# set-up: precision, accelerator
# ----------------------------------------------------------------------------------------


def resolve_precision(requested: Optional[str]) -> str:
    """fp16 on a GPU (loss scaling); bf16 only on compute capability >= 8.0; fp32 on CPU for fp16."""
    mp = requested or os.environ.get("ACCELERATE_MIXED_PRECISION", "no") or "no"
    if mp not in ("no", "fp16", "bf16"):
        raise ConfigError(f"unsupported mixed precision '{mp}'", where="mixed_precision", fix="use no, fp16 or bf16")
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        if mp == "bf16" and major < 8:
            raise ConfigError(
                f"bf16 requested but {torch.cuda.get_device_name()} (compute capability {major}.{minor}) has no bf16 "
                "hardware; torch may emulate it about 4x slower",
                where="mixed_precision",
                fix="use fp16 on this GPU (e.g. --mixed_precision fp16 or accelerate_configs/single_t4_fp16.yaml)",
            )
    elif mp == "fp16":
        # Accelerate would keep saying fp16 while running fp32; say so and run fp32 explicitly.
        logger.warning("fp16 needs a GPU; running in fp32 on CPU")
        mp = "no"
    return mp


def _launched() -> bool:
    return "LOCAL_RANK" in os.environ


def make_accelerator(cfg: TrainConfig, tracker: Optional[str]):
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedType
    from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

    handlers = []
    if not torch.cuda.is_available() and _launched():
        # No NCCL on CPU: without gloo, DeepSpeed silently sees one process (see README, CPU).
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    accelerator = Accelerator(
        mixed_precision=resolve_precision(cfg.mixed_precision),
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=tracker,
        project_config=ProjectConfiguration(
            project_dir=cfg.output_dir, logging_dir=os.path.join(cfg.output_dir, "tb")
        ),
        # each global batch is split across processes: same data per step at any world size
        # non_blocking: batches come from pinned memory on CUDA, so the copy overlaps the previous step
        dataloader_config=DataLoaderConfiguration(split_batches=True, non_blocking=torch.cuda.is_available()),
        kwargs_handlers=handlers,
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # both happen on CPU: Accelerate sees 1 process, or 2 with distributed type NO (no gradient sync)
    if world > 1 and (accelerator.num_processes != world or accelerator.distributed_type == DistributedType.NO):
        raise ConfigError(
            f"launched {world} processes but Accelerate sees {accelerator.num_processes} "
            f"with distributed type {accelerator.distributed_type.value}: each would train alone",
            where="launch command",
            fix="on CPU set ACCELERATE_USE_CPU=1 for DDP (not with DeepSpeed); see README 'Scaling out'",
        )
    if (
        os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        and accelerator.distributed_type != DistributedType.DEEPSPEED
    ):
        raise ConfigError(
            "DeepSpeed was requested but Accelerate did not enable it (ACCELERATE_USE_CPU=1 drops it)",
            where="launch environment",
            fix="unset ACCELERATE_USE_CPU when launching with DeepSpeed",
        )
    return accelerator


def peak_memory_bytes() -> dict[str, Any]:
    if torch.cuda.is_available():
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated()), "peak_memory_kind": "cuda_max_allocated"}
    return {
        "peak_memory_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
        "peak_memory_kind": "cpu_peak_rss",
    }


def setup_logging(main: bool) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        level=logging.INFO if main else logging.WARNING,
        stream=sys.stdout,
        force=False,
    )
    logger.setLevel(logging.INFO if main else logging.WARNING)
    for name in ("tagtune", "tagtune.data", "tagtune.tracking"):
        logging.getLogger(name).setLevel(logging.INFO if main else logging.WARNING)


# ----------------------------------------------------------------------------------------
# optimisation
# ----------------------------------------------------------------------------------------


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation weights (any 1-D parameter)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        ndim = len(getattr(p, "ds_shape", p.shape))  # ZeRO-3 init leaves every weight an empty 1-D shard
        (
            no_decay if ndim < 2 or name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name else decay
        ).append(p)
    # DeepSpeed drops empty groups, which would leave the LR schedule with one group too many
    return [
        g
        for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
        if g["params"]
    ]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, loss_scaling: bool = False) -> torch.optim.Optimizer:
    kwargs: dict[str, Any] = dict(lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
    # fused: one pass over each parameter (CUDA and, since torch 2.4, CPU); on 2 CPU cores it is ~4x
    # faster than foreach for MiniLM (see README "Performance"). Under fp16 loss scaling a fused
    # AdamW takes the inf check inside its own step, so Accelerate never sees a skipped step and
    # its scheduler would still advance the learning rate: use foreach there.
    kwargs["foreach" if loss_scaling else "fused"] = True
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), **kwargs)


# ----------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    gold: list[list[str]]
    pred: list[list[str]]


MODEL_INPUTS = ("input_ids", "attention_mask")


def evaluate(
    accelerator: Any, model: torch.nn.Module, loader: Any, features: Features, labels: list[str]
) -> EvalResult:
    """One pass over the evaluation split; every word is scored exactly once across processes."""
    from accelerate.utils import DistributedType

    model.eval()
    # Every position stays on the device, flattened, until the split is done: no host sync, no
    # collective per batch (one gather at the end). inference_mode, except under DeepSpeed, whose
    # ZeRO-3 hooks would re-gather weights as inference tensors that training cannot use.
    rows, losses = [], []
    off = torch.no_grad() if accelerator.distributed_type == DistributedType.DEEPSPEED else torch.inference_mode()
    with off:
        for batch in loader:
            logits = model(**{k: batch[k] for k in MODEL_INPUTS}).logits
            word_ids = batch["word_ids"]
            gold = torch.where(word_ids >= 0, batch["labels"], -100)
            tok_loss = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), gold, ignore_index=-100, reduction="none"
            )
            sent = batch["sent_ids"][:, None].expand_as(word_ids)
            rows.append(torch.stack([sent, word_ids, gold, logits.argmax(-1)], dim=-1).flatten(0, 1))
            losses.append(tok_loss.flatten())
        ints = torch.cat(rows) if rows else torch.zeros((0, 4), dtype=torch.long, device=accelerator.device)
        tok_loss = torch.cat(losses) if losses else torch.zeros(0, device=accelerator.device)
        if accelerator.num_processes > 1:
            ints = accelerator.pad_across_processes(ints, dim=0, pad_index=-1)
            tok_loss = accelerator.pad_across_processes(tok_loss, dim=0, pad_index=0.0)
            ints, tok_loss = accelerator.gather((ints, tok_loss))
        keep = ints[:, 1] >= 0
        sel, loss_all = ints[keep].cpu().numpy(), tok_loss[keep].float().cpu().numpy()
    model.train()
    keys_a = sel[:, :2]
    # (sentence, word) keys are unique; a window repeated to even out the last batch across processes is dropped here
    _, first = np.unique(keys_a, axis=0, return_index=True)
    order = first[np.lexsort((keys_a[first, 1], keys_a[first, 0]))]
    keys_a = keys_a[order]
    gold_a, pred_a = sel[order, 2], sel[order, 3]
    loss_a = loss_all[order]
    if len(keys_a) != features.num_words:
        raise RuntimeError(f"evaluation scored {len(keys_a)} words but the split has {features.num_words}")
    gold_s: list[list[str]] = []
    pred_s: list[list[str]] = []
    last = -1
    for (sid, _), g, p in zip(keys_a, gold_a, pred_a):
        if sid != last:
            gold_s.append([])
            pred_s.append([])
            last = sid
        gold_s[-1].append(labels[g])
        pred_s[-1].append(labels[p])
    metrics = compute_metrics(gold_s, pred_s)
    metrics["eval_loss"] = float(loss_a.mean()) if len(loss_a) else float("nan")
    return EvalResult(metrics, gold_s, pred_s)


# ----------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------


@dataclass
class RunState:
    global_step: int = 0
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    overflow_steps: int = 0  # fp16 steps skipped by loss scaling (gradient overflow)


def _loader(
    features: Features, batch_size: int, cfg: TrainConfig, pad_id: int, pad_multiple: Optional[int], shuffle: bool
):
    sampler = LengthGroupedBatchSampler(
        features.lengths, batch_size, cfg.seed, shuffle=shuffle, group_by_length=cfg.group_by_length
    )
    # Its own generator: starting an epoch's iterator then draws no number from the global torch RNG
    # (dropout's), which a checkpoint restores at a step boundary, so a resumed run stays bitwise exact.
    loader = torch.utils.data.DataLoader(
        FeatureDataset(features),
        batch_sampler=sampler,
        collate_fn=Collator(features, pad_id, pad_multiple),
        num_workers=cfg.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    return loader, sampler


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train, evaluate each epoch, save the model and the run's files. Returns the results dict."""
    from accelerate.utils import DistributedType, set_seed
    from transformers import get_scheduler

    t_start = time.time()
    tracker = tracking.resolve_report_to(cfg.report_to)
    resume_path = ckpt.resolve_resume(cfg.output_dir, cfg.resume_from_checkpoint)
    if (
        cfg.resume_from_checkpoint == "latest"
        and resume_path is None
        and not cfg.overwrite_output_dir
        and (Path(cfg.output_dir) / RUN_MARKER).exists()
    ):
        raise ckpt.CheckpointError(
            "--resume_from_checkpoint latest: no complete checkpoint under checkpoints/, "
            "and the folder holds another run",
            where=str(cfg.output_dir),
            fix="pass --overwrite_output_dir true to start that run over, or choose another --output_dir",
        )
    check_output_dir(cfg.output_dir, cfg.overwrite_output_dir, resuming=resume_path is not None)
    accelerator = make_accelerator(cfg, tracker)
    if resume_path is None and cfg.overwrite_output_dir and accelerator.is_main_process:
        ckpt.clear_checkpoints(cfg.output_dir)
    setup_logging(accelerator.is_main_process)
    topology = {
        "num_processes": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "mixed_precision": accelerator.mixed_precision,
        "device": str(accelerator.device),
    }
    logger.info("launch: %s", topology)
    set_seed(cfg.seed)

    # ---- data and features --------------------------------------------------------------
    corpus: Corpus = load_corpus(cfg, logger)
    logger.info(
        "data: %d train / %d %s sentences, %d labels",
        len(corpus.train),
        len(corpus.eval),
        corpus.eval_split,
        len(corpus.labels),
    )
    with accelerator.main_process_first():  # a synthetic model is built once, by rank 0
        model_path = resolve_model_path(cfg.model_name_or_path)
        tokenizer = load_tokenizer(
            resolve_model_path(cfg.tokenizer_name) if cfg.tokenizer_name else model_path, cfg.trust_remote_code
        )
    label2id = corpus.label2id
    feat_kw = dict(max_length=cfg.max_length, stride=cfg.stride, label_all_subtokens=cfg.label_all_subtokens)
    train_f = build_features(
        [s.words for s in corpus.train], [s.tags for s in corpus.train], tokenizer, label2id, **feat_kw
    )
    eval_f = build_features(
        [s.words for s in corpus.eval], [s.tags for s in corpus.eval], tokenizer, label2id, **feat_kw
    )
    pad_multiple = 8 if accelerator.mixed_precision in ("fp16", "bf16") else None
    n = accelerator.num_processes
    train_dl, train_sampler = _loader(
        train_f, cfg.per_device_train_batch_size * n, cfg, tokenizer.pad_token_id, pad_multiple, True
    )
    eval_dl, _ = _loader(eval_f, cfg.per_device_eval_batch_size * n, cfg, tokenizer.pad_token_id, pad_multiple, False)

    # what a checkpoint must share with this run to be resumed by it
    zero_stage = (
        accelerator.state.deepspeed_plugin.zero_stage
        if accelerator.distributed_type == DistributedType.DEEPSPEED
        else 0
    )
    identity = {
        "labels": corpus.labels,
        "model_name_or_path": cfg.model_name_or_path,
        "method": cfg.method,
        "lora": [cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules] if cfg.method == "lora" else None,
        "world_size": n,
        "distributed_type": accelerator.distributed_type.value,
        "zero_stage": zero_stage,
        "mixed_precision": accelerator.mixed_precision,
        "seed": cfg.seed,
        "group_by_length": cfg.group_by_length,
        "global_batch_size": cfg.per_device_train_batch_size * n,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "data_fingerprint": ckpt.data_fingerprint(train_f.input_ids),
    }
    resume_meta = ckpt.read_meta(resume_path) if resume_path is not None else None

    # ---- model, optimiser, schedule -----------------------------------------------------
    set_seed(cfg.seed)
    model = build_model(cfg, corpus.labels)
    counts = count_parameters(model)
    logger.info("%s (%s)", counts.line(), cfg.method)
    if cfg.torch_compile:
        model = torch.compile(model)
    optimizer = make_optimizer(model, cfg, loss_scaling=accelerator.mixed_precision == "fp16")
    steps_per_epoch = math.ceil(len(train_dl) / cfg.gradient_accumulation_steps)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    identity["total_steps"] = total_steps
    if resume_meta is not None:
        ckpt.check_compatible(resume_meta, identity, resume_path)
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(
        cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
    )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = cfg.per_device_train_batch_size  # our loader has a batch sampler
        if (
            ds.get("gradient_clipping", "auto") == "auto"
        ):  # Accelerate would fill 1.0; DeepSpeed clips, not clip_grad_norm_
            ds["gradient_clipping"] = cfg.max_grad_norm
    model, optimizer, train_dl, eval_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, eval_dl, scheduler
    )
    if resume_path is not None:  # before anything is written: a checkpoint that fails to load changes nothing
        ckpt.load(accelerator, resume_path)  # weights, optimizer, schedule, scaler, RNG, accumulation counter

    run_config = redact(
        {
            **cfg.to_dict(),
            **topology,
            **counts.as_dict(),
            "labels": corpus.labels,
            "num_labels": len(corpus.labels),
            "eval_split_name": corpus.eval_split,
        }
    )
    if accelerator.is_main_process:
        atomic_write_json(Path(cfg.output_dir) / RUN_MARKER, run_config)
    if tracker == "wandb" and (resume_meta or {}).get("tracker_run_id"):
        ckpt.continue_wandb_run(resume_meta["tracker_run_id"])
    tracking.init(accelerator, cfg, tracker, run_config)
    tracking.summary(accelerator, tracker, counts.as_dict())

    # ---- loop ---------------------------------------------------------------------------
    state = RunState()
    logger.info(
        "training: %d epochs, %d optimizer steps (%d per epoch), global batch %d",
        num_epochs,
        total_steps,
        steps_per_epoch,
        cfg.per_device_train_batch_size * n * cfg.gradient_accumulation_steps,
    )
    from tqdm.auto import tqdm

    # summed on device between log points: no host sync per step
    running = torch.zeros(3, device=accelerator.device)  # loss sum, micro-batches, real tokens
    seen, padded_slots = (
        torch.zeros(2, dtype=torch.long, device=accelerator.device),
        0,
    )  # real sub-tokens, scored words; padded
    epoch_loss = torch.zeros(2, device=accelerator.device)
    health = ckpt.LossHealth(accelerator.device)
    overflow = ckpt.OverflowCounter(accelerator)  # fp16 steps skipped by loss scaling
    totals = {
        "running": running,
        "seen": seen,
        "epoch_loss": epoch_loss,
        "loss_health": health.counts,
        "overflow": overflow.count,
    }
    epoch_times: list[float] = []
    start_epoch, skip, result, last_ckpt = 0, 0, None, None
    if resume_path is not None:
        t = resume_meta["trainer"]
        state.global_step, state.history, state.epochs = t["global_step"], t["history"], t["epochs"]
        epoch_times, start_epoch, skip = t["epoch_times"], t["epoch"], t["batches_in_epoch"]
        ckpt.totals_from_json(accelerator, t["totals"], totals)
        padded_slots = t["padded_slots"] if accelerator.is_main_process else 0
        last_ckpt = resume_path
        logger.info(
            "resumed from %s: step %d, epoch %d, %d batches of it already done",
            resume_path,
            state.global_step,
            start_epoch + 1,
            skip,
        )

    def save_checkpoint(epoch: int, batches: int) -> Optional[Path]:
        """A resumable checkpoint of this step boundary; none while the loss is NaN/inf (keep the last good one)."""
        if health.check(
            accelerator, cfg.nonfinite_loss_patience, state.global_step, last_ckpt
        ) > 0 or not ckpt.weights_finite(accelerator, model):
            logger.warning(
                "step %d: loss or weights NaN/inf, not saving a checkpoint over the last good one", state.global_step
            )
            return last_ckpt
        slots = int(
            accelerator.reduce(torch.tensor([padded_slots], device=accelerator.device), reduction="sum").item()
        )
        meta = {
            **identity,
            "step": state.global_step,
            "tracker_run_id": ckpt.tracker_run_id(accelerator, tracker),
            "config": redact(cfg.to_dict()),
            "trainer": {
                "global_step": state.global_step,
                "epoch": epoch,
                "batches_in_epoch": batches,
                "history": state.history,
                "epochs": state.epochs,
                "epoch_times": epoch_times,
                "padded_slots": slots,
                "totals": ckpt.totals_to_json(accelerator, totals),
            },
        }
        return ckpt.save(accelerator, cfg.output_dir, state.global_step, meta, cfg.save_total_limit)

    def preempted(path: Optional[Path]) -> ckpt.Preempted:
        bar.close()
        if accelerator.is_main_process:
            write_history(cfg.output_dir, state.history)
        tracking.finish(accelerator, tracker)
        return ckpt.Preempted(stop.received or "signal", path)

    bar = tqdm(
        total=total_steps,
        initial=state.global_step,
        disable=not accelerator.is_local_main_process,
        desc="train",
        dynamic_ncols=True,
    )
    window_t = time.time()
    model.train()
    with ckpt.StopSignal() as stop:
        for epoch in range(start_epoch, num_epochs):
            state.epoch = epoch
            train_sampler.set_epoch(epoch)
            train_dl.set_epoch(epoch)  # Accelerate's loader re-applies its own epoch counter when iterated
            mid_epoch = epoch == start_epoch and skip > 0
            if not mid_epoch:
                epoch_loss.zero_()
            # a resumed epoch skips the batches it already trained on (same order: sampler seeded by (seed, epoch))
            loader = accelerator.skip_first_batches(train_dl, skip) if mid_epoch else train_dl
            batches = skip if mid_epoch else 0
            epoch_t = time.time()
            for batch in loader:
                with accelerator.accumulate(model):
                    out = model(**{k: batch[k] for k in MODEL_INPUTS}, labels=batch["labels"])
                    loss = out.loss
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    if accelerator.sync_gradients:
                        overflow.before_step()
                    optimizer.step()
                    if accelerator.sync_gradients:
                        overflow.after_step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                batches += 1
                d = loss.detach().float()
                health.update(d)
                running += torch.stack([d, torch.ones_like(d), batch["attention_mask"].sum().float()])
                seen += torch.stack([batch["attention_mask"].sum(), (batch["word_ids"] >= 0).sum()])
                padded_slots += batch["attention_mask"].numel()  # a shape: known on the host, no sync
                epoch_loss += torch.stack([d, torch.ones_like(d)])
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                bar.update(1)
                if state.global_step % cfg.logging_steps == 0 or state.global_step == total_steps:
                    tot = accelerator.reduce(running, reduction="sum")
                    now = time.time()
                    row = {
                        "step": state.global_step,
                        "epoch": epoch + 1,
                        "train_loss": (tot[0] / tot[1]).item(),
                        "learning_rate": scheduler.get_last_lr()[0],
                        "tokens_per_second": tot[2].item() / max(now - window_t, 1e-9),
                    }
                    if grad_norm is not None:
                        row["grad_norm"] = float(grad_norm)
                    if accelerator.mixed_precision == "fp16" or accelerator.scaler is not None:
                        state.overflow_steps = overflow.total()
                        row["overflow_steps"] = state.overflow_steps
                    state.history.append(row)
                    tracking.log(
                        accelerator,
                        tracker,
                        {f"train/{k}": v for k, v in row.items() if k != "step"},
                        state.global_step,
                    )
                    bar.set_postfix(
                        loss=f"{row['train_loss']:.4f}",
                        lr=f"{row['learning_rate']:.2e}",
                        tok_s=f"{row['tokens_per_second']:.0f}",
                    )
                    running.zero_()
                    window_t = now
                    health.check(accelerator, cfg.nonfinite_loss_patience, state.global_step, last_ckpt)
                done = state.global_step >= total_steps
                stopping = stop.requested(accelerator)  # every step on every process: a collective when distributed
                if stopping or (
                    cfg.checkpointing_steps and state.global_step % cfg.checkpointing_steps == 0 and not done
                ):
                    last_ckpt = save_checkpoint(epoch, batches)
                if stopping:
                    raise preempted(last_ckpt)
                if done:
                    break
            epoch_times.append(time.time() - epoch_t)
            tot = accelerator.reduce(epoch_loss, reduction="sum")
            row = {
                "epoch": epoch + 1,
                "step": state.global_step,
                "train_loss": (tot[0] / tot[1]).item(),
                "epoch_time_s": epoch_times[-1],
            }
            if cfg.eval_every_epoch and corpus.eval:
                eval_t = time.time()
                result = evaluate(accelerator, model, eval_dl, eval_f, corpus.labels)
                row.update(result.metrics)
                row["eval_time_s"] = time.time() - eval_t
                logger.info(
                    "epoch %d: train loss %.4f, eval loss %.4f, accuracy %.4f, macro F1 %.4f, seqeval F1 (report-compatible) %.4f",
                    epoch + 1,
                    row["train_loss"],
                    row["eval_loss"],
                    row["accuracy"],
                    row["macro_f1"],
                    row["seqeval_f1"],
                )
                tracking.log(
                    accelerator,
                    tracker,
                    {f"eval/{k}": v for k, v in row.items() if k not in ("per_tag", "step", "epoch")},
                    state.global_step,
                )
            state.epochs.append(row)
            if accelerator.is_main_process:
                write_epoch_outputs(cfg.output_dir, state.epochs)
            stopping = stop.requested(accelerator)
            if cfg.checkpoint_epoch_end or stopping:
                last_ckpt = save_checkpoint(epoch + 1, 0)
            if stopping:
                raise preempted(last_ckpt)
            if state.global_step >= total_steps:
                break
    bar.close()

    # ---- save and report ----------------------------------------------------------------
    model_dir = Path(cfg.output_dir) / "model"
    if cfg.save_model:
        save_model(accelerator, model, tokenizer, model_dir, cfg, corpus.labels)
    accelerator.wait_for_everyone()
    seen_all = accelerator.reduce(torch.cat([seen, seen.new_tensor([padded_slots])]), reduction="sum").tolist()
    results: dict[str, Any] = {
        "recipe": cfg.recipe,
        "model": cfg.model_name_or_path,
        "method": cfg.method,
        **topology,
        **counts.as_dict(),
        **peak_memory_bytes(),
        "wall_time_s": time.time() - t_start,
        "epoch_times_s": epoch_times,
        "train_sentences": len(corpus.train),
        "eval_sentences": len(corpus.eval),
        "eval_split": corpus.eval_split,
        "train_windows": len(train_f),
        "eval_words": eval_f.num_words,
        "global_steps": state.global_step,
        # what the optimizer steps really consumed (tagtune bench reads these)
        "train_time_s": sum(epoch_times),
        "train_tokens": seen_all[0],
        "train_words": seen_all[1],
        "train_padded_tokens": seen_all[2],
        "labels": corpus.labels,
        "label_distribution": {
            "train": label_distribution([s.tags for s in corpus.train]),
            "eval": label_distribution([s.tags for s in corpus.eval]),
        },
        "skipped_empty_sentences": corpus.skipped_empty,
        "resumed_from": str(resume_path) if resume_path is not None else None,
        "last_checkpoint": str(last_ckpt) if last_ckpt is not None else None,
        "overflow_steps": overflow.total(),
        "nonfinite_loss_steps": health.read(accelerator)[1],
        "epochs": [{k: v for k, v in e.items() if k != "per_tag"} for e in state.epochs],
    }
    if state.epochs and "accuracy" in state.epochs[-1]:
        if result is None:  # resumed from the final checkpoint: the last epoch's predictions again (deterministic)
            result = evaluate(accelerator, model, eval_dl, eval_f, corpus.labels)
        results["final"] = {k: v for k, v in state.epochs[-1].items() if k != "per_tag"}
        results["confusion_matrix"] = {
            "labels": corpus.labels,
            "matrix": confusion(
                [t for s in result.gold for t in s], [t for s in result.pred for t in s], corpus.labels
            ).tolist(),
        }
    if cfg.save_model and accelerator.is_main_process:
        results["model_size_bytes"] = dir_size(model_dir)
    if accelerator.is_main_process:
        write_history(cfg.output_dir, state.history)
        atomic_write_json(Path(cfg.output_dir) / "results.json", results)
        if "confusion_matrix" in results:  # last evaluation word for word; `tagtune evaluate` writes the same format
            atomic_write_text(
                Path(cfg.output_dir) / "eval_predictions.jsonl",
                "".join(
                    json.dumps({"words": s.words, "labels": g, "tags": p}, ensure_ascii=False) + "\n"
                    for s, g, p in zip(corpus.eval, result.gold, result.pred)
                ),
            )
        print("\n" + epoch_table_text(state.epochs))
        print(counts.line())
    tracking.log_final(accelerator, tracker, results, state.epochs)
    tracking.finish(accelerator, tracker)
    return results


def save_model(
    accelerator: Any, model: torch.nn.Module, tokenizer: Any, out: Path, cfg: TrainConfig, labels: list[str]
) -> None:
    """save_pretrained in safetensors; under ZeRO-3 the 16-bit weights are gathered first."""
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(
        out,
        state_dict=state_dict,
        is_main_process=accelerator.is_main_process,
        save_function=accelerator.save,
        safe_serialization=True,
    )
    if accelerator.is_main_process:
        tokenizer.save_pretrained(out)
        atomic_write_json(out / "tagtune_config.json", redact({**cfg.to_dict(), "labels": labels}))


def main(cls: type[TrainConfig] = TrainConfig, args: Optional[list[str]] = None) -> dict[str, Any]:
    """Entry point used by recipes: parse the config, run, print project errors without a traceback."""
    from .config import parse

    try:
        cfg = parse(cls, args)
        return run(cfg)
    except TagtuneError as err:
        print(f"tagtune: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except ckpt.Preempted as stop:
        print(f"tagtune: {stop}", file=sys.stderr)
        raise SystemExit(ckpt.PREEMPTED_EXIT_CODE) from None
