"""The trainer: one recipe object for single-process, DDP (GPU or CPU/gloo) and DeepSpeed launches.

``TrainingRecipe`` has named phases, as torchtune's recipes do, and keeps its state on the object:

    setup()    threads, first-use artefacts, Accelerator, data, features, model, optimizer, resume, tracker
    train()    the epochs; checkpoints; preemption (exit 75) and divergence (exit 2) stop here
    finish()   final model, results.json and the other run files, the tracker's summary
    cleanup()  always, in a ``finally``: tracker closed and process group torn down, exactly once

``run(cfg)`` drives the phases; ``main(cls)`` is what recipes call.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch

from . import checkpoint as ckpt
from . import cpu_linear, gc_freeze, optim, runtime, tracking
from .config import TrainConfig
from .cpu_attention import HALF_MATMUL_MAX_LENGTH, use_half_matmul_attention
from .cpu_dropout import use_bulk_attention_dropout, use_bulk_dropout
from .cpu_malloc import keep_freed_memory, release_freed_memory
from .data import Corpus, load_corpus
from .errors import TagtuneError
from .evaluation import EvalResult, Scoring, constrains, gather_positions, score
from .features import (
    Collator,
    FeatureDataset,
    Features,
    LengthGroupedBatchSampler,
    cached_features,
    eval_batches,
    load_tokenizer,
    resolve_eval_batch_tokens,
    shard_batches,
)
from .metrics import confusion, label_distribution, load_libraries, primary_metric
from .microbatch import forward_backward, resolve_micro_batch_tokens
from .modeling import ParamCounts, build_model, count_parameters, resolve_model_path
from .onednn_cache import bound_kernel_caches
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
from .rank_report import write_rank_report
from .saving import save_model
from .schemes import resolve_scheme
from .sparse_embedding import SparseEmbeddingGrad
from .synthetic import cache_root

logger = logging.getLogger("tagtune")


@dataclass
class RunState:
    """Where training is: what a checkpoint records and a resume restores."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)
    last_checkpoint: Optional[Path] = None
    last_eval: Optional[EvalResult] = None


class Totals:
    """Running sums kept on the device between log points: no host sync per step."""

    def __init__(self, device: Any) -> None:
        self.running = torch.zeros(3, device=device)  # loss sum, micro-batches, real tokens (this log window)
        self.seen = torch.zeros(2, dtype=torch.long, device=device)  # real sub-tokens, scored words
        self.epoch_loss = torch.zeros(2, device=device)  # loss sum, micro-batches (this epoch)
        self.padded_slots = 0  # a tensor shape, known on the host

    def add(self, loss: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        one = torch.ones_like(loss)
        real = batch["attention_mask"].sum()
        self.running += torch.stack([loss, one, real.float()])
        self.seen += torch.stack([real, (batch["word_ids"] >= 0).sum()])
        self.epoch_loss += torch.stack([loss, one])
        self.padded_slots += batch["attention_mask"].numel()


def make_loader(
    features: Features,
    batch_size: int,
    *,
    seed: int,
    group_by_length: bool,
    length_group_batches: int,
    length_run_batches: int,
    pad_id: int,
    pad_multiple: Optional[int],
    num_workers: int,
) -> tuple[torch.utils.data.DataLoader, LengthGroupedBatchSampler]:
    """The training loader: global batches (per-device size x processes) that Accelerate splits."""
    sampler = LengthGroupedBatchSampler(
        features.lengths,
        batch_size,
        seed,
        group_by_length=group_by_length,
        mega=length_group_batches,
        run=length_run_batches,
    )
    # Its own generator: starting an epoch's iterator then draws no number from the global torch RNG
    # (dropout's), which a checkpoint restores at a step boundary, so a resumed run stays bitwise exact.
    generator = torch.Generator().manual_seed(seed)
    return _feature_loader(features, sampler, pad_id, pad_multiple, num_workers, generator), sampler


def make_eval_loader(
    features: Features,
    batches: list[list[int]],
    *,
    pad_id: int,
    pad_multiple: Optional[int],
    num_workers: int,
) -> torch.utils.data.DataLoader:
    """This process's evaluation loader, over its own batches (``shard_batches``). Not prepared by Accelerate,
    whose split of a global batch assumes one fixed size: batches sized by tokens vary in sentence count."""
    return _feature_loader(features, batches, pad_id, pad_multiple, num_workers)


def _feature_loader(
    features: Features,
    batch_sampler: Any,
    pad_id: int,
    pad_multiple: Optional[int],
    num_workers: int,
    generator: Optional[torch.Generator] = None,
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        FeatureDataset(features),
        batch_sampler=batch_sampler,
        collate_fn=Collator(features, pad_id, pad_multiple),
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
    )


class TrainingRecipe:
    """One training run. Construct, then ``setup()``, ``train()``, ``finish()``; ``cleanup()`` in a finally."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.t_start = time.time()
        self.state = RunState()
        self.stop = ckpt.StopSignal()
        self.accelerator: Any = None
        self.tracker: Optional[str] = None
        self.bar: Any = None
        self.resume_path: Optional[Path] = None
        self.resume_meta: Optional[dict[str, Any]] = None
        self.sparse_grad: Optional[SparseEmbeddingGrad] = None
        self._cleaned = False

    # ------------------------------------------------------------------------------------
    # setup
    # ------------------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        runtime.enable_hang_diagnostics()
        threads = runtime.configure_cpu_threads()
        self.tracker = tracking.resolve_report_to(cfg.report_to)
        self.resume_path = self._resolve_resume()
        check_output_dir(cfg.output_dir, cfg.overwrite_output_dir, resuming=self.resume_path is not None)
        # First-use artefacts (the synthetic model and tokenizer) are built before any process group
        # exists: under ZeRO-3 building a model is a collective, so no rank may build one while another
        # waits at a barrier. Each process builds into its own temporary folder and renames it into place.
        model_path = resolve_model_path(cfg.model_name_or_path)
        tokenizer_path = resolve_model_path(cfg.tokenizer_name) if cfg.tokenizer_name else model_path
        self.accelerator = runtime.make_accelerator(
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            tracker=self.tracker,
            output_dir=cfg.output_dir,
            timeout_s=cfg.ddp_timeout,
        )
        acc = self.accelerator
        write_rank_report(acc)  # TAGTUNE_RANK_REPORT=<dir>: each process records its ranks (multi-node tests)
        if self.resume_path is None and cfg.overwrite_output_dir and acc.is_main_process:
            ckpt.clear_checkpoints(cfg.output_dir)
        runtime.setup_logging(acc.is_main_process)
        self.topology = runtime.topology(acc)
        logger.info("launch: %s", self.topology)
        logger.info("CPU threads per process: %d (%s)", *threads)
        if cfg.cpu_malloc_reuse and acc.device.type == "cpu":
            logger.info("CPU memory allocator: %s", keep_freed_memory())
        if cfg.cpu_kernel_cache_bound and acc.device.type == "cpu":  # before the model's first forward
            logger.info("oneDNN kernel caches: %s", bound_kernel_caches())
        self._setup_data(tokenizer_path)
        self._setup_model()
        self._setup_optimization()
        self._prepare()
        self._start_tracking()

    def _resolve_resume(self) -> Optional[Path]:
        cfg = self.cfg
        path = ckpt.resolve_resume(cfg.output_dir, cfg.resume_from_checkpoint)
        holds_run = (Path(cfg.output_dir) / RUN_MARKER).exists()
        if cfg.resume_from_checkpoint == "latest" and path is None and not cfg.overwrite_output_dir and holds_run:
            raise ckpt.CheckpointError(
                "--resume_from_checkpoint latest: no complete checkpoint under checkpoints/, "
                "and the folder holds another run",
                where=str(cfg.output_dir),
                fix="pass --overwrite_output_dir true to start that run over, or choose another --output_dir",
            )
        return path

    def _setup_data(self, tokenizer_path: str) -> None:
        from accelerate.utils import set_seed

        cfg, acc = self.cfg, self.accelerator
        set_seed(cfg.seed)
        self.corpus: Corpus = load_corpus(cfg, logger)
        c = self.corpus
        logger.info(
            "data: %d train / %d %s sentences, %d labels", len(c.train), len(c.eval), c.eval_split, len(c.labels)
        )
        self.scheme, why = resolve_scheme(cfg.tagging_scheme, [s.tags for s in c.train])
        logger.info("tagging scheme: %s (%s); primary metric: %s", self.scheme, why, primary_metric(self.scheme))
        if cfg.constrain_decoding and self.scheme == "none":
            logger.warning("--constrain_decoding has no effect on flat tags (tagging scheme none)")
        self.scoring = Scoring(self.scheme, cfg.constrain_decoding, c.eval_gold, cfg.unseen_eval_labels)
        self.tokenizer = load_tokenizer(tokenizer_path, cfg.trust_remote_code)
        kw = dict(max_length=cfg.max_length, stride=cfg.stride, label_all_subtokens=cfg.label_all_subtokens)
        cache = cache_root() / "features" if cfg.cache_features else None
        # The main process tokenises and writes the cache entry (atomically); the others wait at a plain
        # barrier, which needs no other collective, then read it: one tokenisation per launch.
        with acc.main_process_first():
            self.train_f, train_hit = cached_features(
                cache, [s.words for s in c.train], [s.tags for s in c.train], self.tokenizer, c.label2id, **kw
            )
            self.eval_f, eval_hit = cached_features(
                cache, [s.words for s in c.eval], [s.tags for s in c.eval], self.tokenizer, c.label2id, **kw
            )
        self.feature_cache = {"train": train_hit, "eval": eval_hit}
        # What results.json reports of the training split; then its sentences go: the features hold all that
        # training reads, and the words and tags as Python strings held 30-40 MiB of peak RSS on EWT.
        self.train_split = {"sentences": len(c.train), "labels": label_distribution([s.tags for s in c.train])}
        self.corpus = replace(c, train=[])
        logger.info("features: train %s, eval %s (cache %s)", train_hit, eval_hit, cache)
        n = acc.num_processes
        collate_kw = dict(
            pad_id=self.tokenizer.pad_token_id,
            # multiples of 8 feed GPU tensor cores; on CPU they are only more padding (19% vs 8% of bf16 batches)
            pad_multiple=8 if acc.mixed_precision in ("fp16", "bf16") and acc.device.type == "cuda" else None,
            num_workers=cfg.dataloader_num_workers,
        )
        self.train_dl, self.train_sampler = make_loader(
            self.train_f,
            cfg.per_device_train_batch_size * n,
            seed=cfg.seed,
            group_by_length=cfg.group_by_length,
            length_group_batches=cfg.length_group_batches,
            length_run_batches=cfg.length_run_batches,
            **collate_kw,
        )
        # evaluation longest first (in file order without length grouping), each process its own batches
        self.eval_batch_tokens = resolve_eval_batch_tokens(cfg.per_device_eval_batch_tokens, acc.device.type)
        batches = eval_batches(
            self.eval_f.lengths,
            cfg.per_device_eval_batch_size,
            self.eval_batch_tokens,
            sort=cfg.group_by_length,
            cut=cfg.eval_batch_cuts,
        )
        self.eval_dl = make_eval_loader(self.eval_f, shard_batches(batches, acc.process_index, n), **collate_kw)

    def _setup_model(self) -> None:
        from accelerate.utils import set_seed

        cfg = self.cfg
        set_seed(cfg.seed)
        self.model = build_model(cfg, self.corpus.labels)
        self.counts: ParamCounts = count_parameters(self.model)
        logger.info("%s (%s)", self.counts.line(), cfg.method_name)
        if cfg.cpu_bulk_dropout and self.accelerator.device.type == "cpu" and not cfg.torch_compile:
            # numpy inside a compiled graph would break it; torch_compile keeps torch's dropout
            n, attention = use_bulk_dropout(self.model), use_bulk_attention_dropout(self.model)
            logger.info(
                "dropout: masks drawn in bulk (%d dropout layers%s)",
                n,
                ", and the attention probabilities'" if attention else "; attention: the model's own",
            )
        if cfg.cpu_half_matmul_attention and self.accelerator.device.type == "cpu":
            if use_half_matmul_attention(self.model) and self.accelerator.mixed_precision == "bf16":
                logger.info("attention: bf16 matmuls for evaluation batches padded to <= %d", HALF_MATMUL_MAX_LENGTH)
        self.eval_linear_dtype = self._eval_linear_dtype()
        self.sparse_grad = self._sparse_embedding_grad()
        if cfg.torch_compile:
            self.model = torch.compile(self.model)

    def _eval_linear_dtype(self) -> Optional[torch.dtype]:
        """The dtype evaluation packs the Linear weights in (cpu_packed_linear), or None: not packed."""
        from accelerate.utils import DistributedType

        acc, cfg = self.accelerator, self.cfg
        dtype = torch.bfloat16 if acc.mixed_precision == "bf16" else torch.float32  # what autocast multiplies in
        wanted = cfg.cpu_packed_linear and acc.device.type == "cpu" and not cfg.torch_compile
        if not (wanted and acc.distributed_type != DistributedType.DEEPSPEED and cpu_linear.supported(dtype)):
            return None
        logger.info("evaluation: Linear layers on weights packed once per evaluation for oneDNN (%s)", dtype)
        return dtype

    def _sparse_embedding_grad(self) -> Optional[SparseEmbeddingGrad]:
        """The input embedding's gradient kept dense across steps, where only the trainer reads it."""
        from accelerate.utils import DistributedType

        acc, cfg = self.accelerator, self.cfg
        alone = acc.num_processes == 1 and acc.distributed_type == DistributedType.NO
        if not (cfg.cpu_sparse_embedding_grad and acc.device.type == "cpu" and alone and not cfg.torch_compile):
            return None
        sparse = SparseEmbeddingGrad.install(self.model)
        if sparse is not None:
            rows, width = sparse.weight.shape
            logger.info("input embedding: sparse backward into one kept dense gradient (%d x %d)", rows, width)
        return sparse

    def _setup_optimization(self) -> None:
        from transformers import get_scheduler

        cfg, acc = self.cfg, self.accelerator
        self.optimizer = optim.make_optimizer(
            self.model,
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon,
            weight_decay=cfg.weight_decay,
            implementation=cfg.optim,
            loss_scaling=acc.mixed_precision == "fp16",
        )
        self.steps_per_epoch = math.ceil(len(self.train_dl) / cfg.gradient_accumulation_steps)
        self.total_steps = (
            cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * self.steps_per_epoch)
        )
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.identity = self._identity()
        if self.resume_path is not None:
            self.resume_meta = ckpt.read_meta(self.resume_path)
            ckpt.check_compatible(self.resume_meta, self.identity, self.resume_path)
        warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * self.total_steps)
        self.scheduler = get_scheduler(
            cfg.lr_scheduler_type, self.optimizer, num_warmup_steps=warmup, num_training_steps=self.total_steps
        )

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must share with this run to be resumed by it."""
        from accelerate.utils import DistributedType

        cfg, acc = self.cfg, self.accelerator
        deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        n = acc.num_processes
        return {
            "labels": self.corpus.labels,
            "model_name_or_path": cfg.model_name_or_path,
            "method": cfg.method_name,
            "lora": [cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules] if cfg.method == "lora" else None,
            "world_size": n,
            "distributed_type": acc.distributed_type.value,
            "zero_stage": acc.state.deepspeed_plugin.zero_stage if deepspeed else 0,
            "mixed_precision": acc.mixed_precision,
            "seed": cfg.seed,
            "group_by_length": cfg.group_by_length,
            "length_group_batches": cfg.length_group_batches,
            "length_run_batches": cfg.length_run_batches,
            "global_batch_size": cfg.per_device_train_batch_size * n,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "data_fingerprint": ckpt.data_fingerprint(self.train_f.input_ids),
            "total_steps": self.total_steps,
        }

    def _prepare(self) -> None:
        from accelerate.utils import DistributedType

        cfg, acc = self.cfg, self.accelerator
        if acc.distributed_type == DistributedType.DEEPSPEED:
            ds = acc.state.deepspeed_plugin.deepspeed_config
            ds["train_micro_batch_size_per_gpu"] = cfg.per_device_train_batch_size  # our loader has a batch sampler
            if ds.get("gradient_clipping", "auto") == "auto":  # Accelerate would fill 1.0; DeepSpeed clips itself
                ds["gradient_clipping"] = cfg.max_grad_norm
            if self.resume_meta is not None and ckpt.is_universal(self.resume_meta):
                ckpt.request_universal_load(ds)  # `tagtune convert-checkpoint --to universal` output
        self.model, self.optimizer, self.train_dl, self.scheduler = acc.prepare(
            self.model, self.optimizer, self.train_dl, self.scheduler
        )
        self.micro_batch_tokens = resolve_micro_batch_tokens(
            cfg.micro_batch_tokens,
            acc.device.type,
            deepspeed=acc.distributed_type == DistributedType.DEEPSPEED,
            precision=acc.mixed_precision,
        )
        if self.micro_batch_tokens:
            att = self.cfg.micro_batch_attention_length
            logger.info(
                "batches over %d padded sub-tokens run in parts (micro_batch_tokens; %s)",
                self.micro_batch_tokens,
                f"a sentence past {att} counts as length x length / {att}" if att else "padded sub-tokens only",
            )
        self.totals = Totals(acc.device)
        self.health = ckpt.LossHealth(acc.device)
        self.overflow = ckpt.OverflowCounter(acc)  # fp16 steps skipped by loss scaling
        if self.resume_path is not None:  # before anything is written: a checkpoint that fails to load changes nothing
            ckpt.load(acc, self.resume_path)  # weights, optimizer, schedule, scaler, RNG, accumulation counter
            self._restore(self.resume_meta["trainer"])

    def _checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        t = self.totals
        return {
            "running": t.running,
            "seen": t.seen,
            "epoch_loss": t.epoch_loss,
            "loss_health": self.health.counts,
            "overflow": self.overflow.count,
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        s, acc = self.state, self.accelerator
        s.global_step, s.history, s.epochs = saved["global_step"], saved["history"], saved["epochs"]
        s.epoch_times, s.epoch, s.batches_in_epoch = saved["epoch_times"], saved["epoch"], saved["batches_in_epoch"]
        ckpt.totals_from_json(acc, saved["totals"], self._checkpoint_tensors())
        self.totals.padded_slots = saved["padded_slots"] if acc.is_main_process else 0
        s.last_checkpoint = self.resume_path
        logger.info(
            "resumed from %s: step %d, epoch %d, %d batches of it already done",
            self.resume_path,
            s.global_step,
            s.epoch + 1,
            s.batches_in_epoch,
        )

    def _start_tracking(self) -> None:
        cfg, acc, c = self.cfg, self.accelerator, self.corpus
        extra = {"labels": c.labels, "num_labels": len(c.labels), "eval_split_name": c.eval_split}
        self.run_config = redact({**cfg.to_dict(), **self.topology, **self.counts.as_dict(), **extra})
        if acc.is_main_process:
            atomic_write_json(Path(cfg.output_dir) / RUN_MARKER, self.run_config)
        if self.tracker == "wandb" and (self.resume_meta or {}).get("tracker_run_id"):
            ckpt.continue_wandb_run(self.resume_meta["tracker_run_id"])
        tracking.init(acc, cfg, self.tracker, self.run_config)
        tracking.summary(acc, self.tracker, self.counts.as_dict())

    # ------------------------------------------------------------------------------------
    # train
    # ------------------------------------------------------------------------------------

    def train(self) -> None:
        from tqdm.auto import tqdm

        cfg, acc, s = self.cfg, self.accelerator, self.state
        global_batch = cfg.per_device_train_batch_size * acc.num_processes * cfg.gradient_accumulation_steps
        logger.info(
            "training: %d epochs, %d optimizer steps (%d per epoch), global batch %d",
            self.num_epochs,
            self.total_steps,
            self.steps_per_epoch,
            global_batch,
        )
        self.bar = tqdm(
            total=self.total_steps,
            initial=s.global_step,
            disable=not acc.is_local_main_process,
            desc="train",
            dynamic_ncols=True,
        )
        self.window_t = time.time()
        self.model.train()
        with self.stop:
            for epoch in range(s.epoch, self.num_epochs):
                self._train_epoch(epoch)
                self._end_epoch(epoch)
                if s.global_step >= self.total_steps:
                    break
        self.bar.close()

    def _train_epoch(self, epoch: int) -> None:
        s, acc = self.state, self.accelerator
        resumed_mid_epoch = epoch == s.epoch and s.batches_in_epoch > 0
        s.epoch = epoch
        self.train_sampler.set_epoch(epoch)
        self.train_dl.set_epoch(epoch)  # Accelerate's loader re-applies its own epoch counter when iterated
        if resumed_mid_epoch:
            # the batches already trained on are skipped (same order: the sampler is seeded by (seed, epoch))
            loader = acc.skip_first_batches(self.train_dl, s.batches_in_epoch)
        else:
            self.totals.epoch_loss.zero_()
            s.batches_in_epoch = 0
            loader = self.train_dl
        self.epoch_t = time.time()
        for batch in loader:
            grad_norm = self._step(batch)
            s.batches_in_epoch += 1
            if not acc.sync_gradients:
                continue
            s.global_step += 1
            self.bar.update(1)
            done = s.global_step >= self.total_steps
            if s.global_step % self.cfg.logging_steps == 0 or done:
                self._log_step(epoch, grad_norm)
            self._after_optimizer_step(done)
            if done:
                break

    def _step(self, batch: dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """Forward, backward and (at accumulation boundaries) clip and step; returns the gradient norm."""
        acc, cfg = self.accelerator, self.cfg
        grad_norm = None
        with acc.accumulate(self.model):
            loss = forward_backward(
                self.model, batch, self.micro_batch_tokens, acc, self.cfg.micro_batch_attention_length
            )
            if acc.sync_gradients and self.sparse_grad is not None:
                self.sparse_grad.densify()  # before clipping and the optimizer, which want it dense
            if acc.sync_gradients and cfg.max_grad_norm > 0:
                if self.sparse_grad is not None:  # one CPU process: no loss scaler, nothing for Accelerate to do
                    grad_norm = self.sparse_grad.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                else:
                    grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            if acc.sync_gradients:
                self.overflow.before_step()
            self.optimizer.step()
            if acc.sync_gradients:
                self.overflow.after_step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.health.update(loss)
        self.totals.add(loss, batch)
        return grad_norm

    def _log_step(self, epoch: int, grad_norm: Optional[torch.Tensor]) -> None:
        acc, s = self.accelerator, self.state
        tot = acc.reduce(self.totals.running, reduction="sum")
        now = time.time()
        row = {
            "step": s.global_step,
            "epoch": epoch + 1,
            "train_loss": (tot[0] / tot[1]).item(),
            "learning_rate": self.scheduler.get_last_lr()[0],
            "tokens_per_second": tot[2].item() / max(now - self.window_t, 1e-9),
        }
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        if acc.mixed_precision == "fp16" or acc.scaler is not None:
            row["overflow_steps"] = self.overflow.total()
        s.history.append(row)
        tracking.log(acc, self.tracker, {f"train/{k}": v for k, v in row.items() if k != "step"}, s.global_step)
        self.bar.set_postfix(
            loss=f"{row['train_loss']:.4f}", lr=f"{row['learning_rate']:.2e}", tok_s=f"{row['tokens_per_second']:.0f}"
        )
        self.totals.running.zero_()
        self.window_t = now
        self.health.check(acc, self.cfg.nonfinite_loss_patience, s.global_step, s.last_checkpoint)

    def _after_optimizer_step(self, done: bool) -> None:
        cfg, s = self.cfg, self.state
        stopping = self.stop.requested(self.accelerator)  # every step on every process: a collective when distributed
        periodic = cfg.checkpointing_steps and s.global_step % cfg.checkpointing_steps == 0 and not done
        if stopping or periodic:
            self._save_checkpoint(s.epoch, s.batches_in_epoch)
        if stopping:
            self._preempt()

    def _end_epoch(self, epoch: int) -> None:
        cfg, acc, s = self.cfg, self.accelerator, self.state
        s.epoch_times.append(time.time() - self.epoch_t)
        tot = acc.reduce(self.totals.epoch_loss, reduction="sum")
        row = {
            "epoch": epoch + 1,
            "step": s.global_step,
            "train_loss": (tot[0] / tot[1]).item(),
            "epoch_time_s": s.epoch_times[-1],
        }
        if cfg.eval_every_epoch and self.corpus.eval:
            row.update(self._evaluate())
            logger.info(
                "epoch %d: train loss %.4f, eval loss %.4f, %s %.4f (primary), accuracy %.4f, macro F1 %.4f, "
                "seqeval F1 (report-compatible) %.4f",
                epoch + 1,
                row["train_loss"],
                row["eval_loss"],
                row["primary_metric"],
                row["primary"],
                row["accuracy"],
                row["macro_f1"],
                row["seqeval_f1"],
            )
            skip = ("per_tag", "per_entity", "step", "epoch")
            logged = {f"eval/{k}": v for k, v in row.items() if k not in skip}
            tracking.log(acc, self.tracker, logged, s.global_step)
        s.epochs.append(row)
        if acc.is_main_process:
            write_epoch_outputs(cfg.output_dir, s.epochs)
        stopping = self.stop.requested(acc)
        if cfg.checkpoint_epoch_end or stopping:
            self._save_checkpoint(epoch + 1, 0)
        if stopping:
            self._preempt()

    def _evaluate(self) -> dict[str, Any]:
        # The heap kept for training steps goes back to the kernel before the forward passes and again after
        # them, and the metric libraries load (~1.2 s and ~130 MiB, the first time only: seqeval imports
        # scikit-learn, which imports SciPy, pandas and pyarrow) only then, not at set-up, so training never
        # holds them: neither the passes' pages nor the libraries stack on training's, whose peak stays the
        # run's (MiniLM in fp32: the passes' pages 1,069 MiB, the libraries' 870, training's 1,075). The
        # library import and the trims are outside the clock, as users would want an evaluation timed.
        release_freed_memory()
        t = time.time()
        with cpu_linear.packed(self.model, self.eval_linear_dtype):  # the weights stay put until it ends
            positions = gather_positions(
                self.accelerator, self.model, self.eval_dl, log_probs=constrains(self.scoring)
            )
        forward_s = time.time() - t
        release_freed_memory()
        load_libraries()
        t = time.time()
        self.state.last_eval = score(positions, self.eval_f, self.corpus.labels, self.scoring)
        return {**self.state.last_eval.metrics, "eval_time_s": forward_s + time.time() - t}

    def _save_checkpoint(self, epoch: int, batches: int) -> None:
        """A resumable checkpoint of this step boundary; none while the loss is NaN/inf (keep the last good one)."""
        acc, s, cfg = self.accelerator, self.state, self.cfg
        streak = self.health.check(acc, cfg.nonfinite_loss_patience, s.global_step, s.last_checkpoint)
        if streak > 0 or not ckpt.weights_finite(acc, self.model):
            logger.warning(
                "step %d: loss or weights NaN/inf, not saving a checkpoint over the last good one", s.global_step
            )
            return
        slots = acc.reduce(torch.tensor([self.totals.padded_slots], device=acc.device), reduction="sum")
        trainer = {
            "global_step": s.global_step,
            "epoch": epoch,
            "batches_in_epoch": batches,
            "history": s.history,
            "epochs": s.epochs,
            "epoch_times": s.epoch_times,
            "padded_slots": int(slots.item()),
            "totals": ckpt.totals_to_json(acc, self._checkpoint_tensors()),
        }
        meta = {
            **self.identity,
            "step": s.global_step,
            "tracker_run_id": ckpt.tracker_run_id(acc, self.tracker),
            "config": redact(cfg.to_dict()),
            "trainer": trainer,
        }
        s.last_checkpoint = ckpt.save(acc, cfg.output_dir, s.global_step, meta, cfg.save_total_limit)

    def _preempt(self) -> None:
        self.bar.close()
        self._write_history()
        raise ckpt.Preempted(self.stop.received or "signal", self.state.last_checkpoint)

    def _write_history(self) -> None:
        if self.accelerator.is_main_process:
            write_history(self.cfg.output_dir, self.state.history)

    # ------------------------------------------------------------------------------------
    # finish
    # ------------------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Save the model, write results.json and the run's files, log the summary. Returns the results."""
        cfg, acc, s = self.cfg, self.accelerator, self.state
        model_dir = Path(cfg.output_dir) / "model"
        if cfg.save_model:
            # the resolved scheme, so `tagtune evaluate` and predict score and decode as training did
            saved_cfg = {**cfg.to_dict(), "tagging_scheme": self.scheme}
            save_model(acc, self.model, self.tokenizer, model_dir, saved_cfg, self.corpus.labels)
        acc.wait_for_everyone()
        results = self._results()
        if s.epochs and "accuracy" in s.epochs[-1]:
            if s.last_eval is None:  # resumed from the final checkpoint: the last epoch's predictions again
                self._evaluate()
            results["final"] = {k: v for k, v in s.epochs[-1].items() if k != "per_tag"}
            gold = [t for sent in s.last_eval.gold for t in sent]
            pred = [t for sent in s.last_eval.pred for t in sent]
            results["confusion_matrix"] = {
                "labels": self.corpus.labels,
                "matrix": confusion(gold, pred, self.corpus.labels).tolist(),
            }
        if cfg.save_model and acc.is_main_process:
            results["model_size_bytes"] = dir_size(model_dir)
        if acc.is_main_process:
            self._write_results(results)
        tracking.log_final(acc, self.tracker, results, s.epochs)
        return results

    def _results(self) -> dict[str, Any]:
        from accelerate.utils import gather_object

        cfg, acc, s, c = self.cfg, self.accelerator, self.state, self.corpus
        t = self.totals
        # per process, in rank order: 'built' on the main process and 'hit' on the others = one tokenisation
        feature_cache = gather_object([self.feature_cache]) if acc.num_processes > 1 else [self.feature_cache]
        seen = acc.reduce(torch.cat([t.seen, t.seen.new_tensor([t.padded_slots])]), reduction="sum").tolist()
        return {
            "recipe": cfg.recipe,
            "model": cfg.model_name_or_path,
            "method": cfg.method_name,
            "tagging_scheme": self.scheme,
            "primary_metric": primary_metric(self.scheme),
            "unseen_eval_words": c.unseen_eval_words,
            **self.topology,
            **self.counts.as_dict(),
            **runtime.peak_memory_bytes(),
            "cpu_threads": torch.get_num_threads(),
            "feature_cache": feature_cache,
            "wall_time_s": time.time() - self.t_start,
            "epoch_times_s": s.epoch_times,
            "train_sentences": self.train_split["sentences"],
            "eval_sentences": len(c.eval),
            "eval_split": c.eval_split,
            "train_windows": len(self.train_f),
            "eval_words": self.eval_f.num_words,
            "global_steps": s.global_step,
            # what the optimizer steps really consumed (tagtune bench reads these)
            "train_time_s": sum(s.epoch_times),
            "train_tokens": seen[0],
            "train_words": seen[1],
            "train_padded_tokens": seen[2],
            "labels": c.labels,
            "label_distribution": {
                "train": self.train_split["labels"],
                "eval": label_distribution([x.tags for x in c.eval]),
            },
            "skipped_empty_sentences": c.skipped_empty,
            "resumed_from": str(self.resume_path) if self.resume_path is not None else None,
            "last_checkpoint": str(s.last_checkpoint) if s.last_checkpoint is not None else None,
            "overflow_steps": self.overflow.total(),
            "nonfinite_loss_steps": self.health.read(acc)[1],
            "epochs": [{k: v for k, v in e.items() if k != "per_tag"} for e in s.epochs],
        }

    def _write_results(self, results: dict[str, Any]) -> None:
        out, s = Path(self.cfg.output_dir), self.state
        self._write_history()
        atomic_write_json(out / "results.json", results)
        if "confusion_matrix" in results:  # last evaluation word for word; `tagtune evaluate` writes the same format
            lines = (
                json.dumps({"words": x.words, "labels": g, "tags": p}, ensure_ascii=False) + "\n"
                for x, g, p in zip(self.corpus.eval, s.last_eval.gold, s.last_eval.pred)
            )
            atomic_write_text(out / "eval_predictions.jsonl", "".join(lines))
        print("\n" + epoch_table_text(s.epochs))
        print(self.counts.line())

    # ------------------------------------------------------------------------------------
    # cleanup
    # ------------------------------------------------------------------------------------

    def cleanup(self, error: Optional[BaseException] = None) -> None:
        """Every exit comes here once: normal end, preemption, divergence, any exception."""
        if self._cleaned:
            return
        self._cleaned = True
        if self.bar is not None:
            self.bar.close()
        self.stop.restore()
        runtime.disable_hang_diagnostics()
        if self.accelerator is None:  # stopped before the Accelerator existed: nothing to close
            return
        if error is not None and not isinstance(error, ckpt.Preempted) and self.state.history:
            self._write_history()  # the loss curve up to the failure, beside the last good checkpoint
        tracking.finish(self.accelerator, self.tracker, exit_code=exit_code(error))
        # the prepared objects reference the process group (DDP's reducer, ZeRO-3 parameters): drop them so
        # that shutdown really destroys the group and joins its threads before the interpreter exits
        self.model = self.optimizer = self.scheduler = self.train_dl = self.eval_dl = None
        runtime.shutdown(self.accelerator)


def exit_code(error: Optional[BaseException]) -> int:
    """0 finished; 75 preempted (resume); 2 a problem to fix (config, data, checkpoint, diverged); 1 a bug."""
    if error is None:
        return 0
    if isinstance(error, ckpt.Preempted):
        return ckpt.PREEMPTED_EXIT_CODE
    if isinstance(error, TagtuneError):
        return 2
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else 1
    return 1


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train, evaluate each epoch, save the model and the run's files. Returns the results dict."""
    recipe = TrainingRecipe(cfg)
    error: Optional[BaseException] = None
    try:
        recipe.setup()
        recipe.train()
        return recipe.finish()
    except BaseException as err:
        error = err
        raise
    finally:
        recipe.cleanup(error)


def main(cls: type[TrainConfig] = TrainConfig, args: Optional[list[str]] = None) -> dict[str, Any]:
    """Entry point used by recipes: parse the config, run, print project errors without a traceback.

    ``args`` None: the process's own command line, so the process is this command (gc_freeze)."""
    from .config import parse

    if args is None:
        gc_freeze.freeze_imports()
    try:
        return run(parse(cls, args))
    except TagtuneError as err:
        print(f"tagtune: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except ckpt.Preempted as stop:
        print(f"tagtune: {stop}", file=sys.stderr)
        raise SystemExit(ckpt.PREEMPTED_EXIT_CODE) from None
