"""Resumable checkpoints: atomic save, keep-last-K, resume checks, preemption signals, loss health.

Layout: ``<output_dir>/checkpoints/step-<N>/`` holds what ``accelerator.save_state`` writes
(model in safetensors, optimizer, scheduler, scaler, per-process RNG states; DeepSpeed's own
sharded files under ZeRO) plus ``tagtune_checkpoint.json`` (position in training, the loop's
running totals, the run's identity: labels, model, world size). A checkpoint is written into
``.tmp-step-<N>`` and renamed into place only once complete, so a crash mid-save never leaves a
folder that resume would pick up. Resume loads with Accelerate, which reads weights from
safetensors and everything else with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from .errors import CheckpointError, TagtuneError
from .outputs import atomic_write_json

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger("tagtune")

CHECKPOINTS_DIR = "checkpoints"
META_NAME = "tagtune_checkpoint.json"
FORMAT_VERSION = 1
# EX_TEMPFAIL from sysexits.h: "try again later". A job script can requeue on it.
PREEMPTED_EXIT_CODE = 75
_STEP_DIR = re.compile(r"^step-(\d+)$")


class Preempted(Exception):
    """Raised after a signal-triggered checkpoint was written; entry points exit with PREEMPTED_EXIT_CODE."""

    def __init__(self, signame: str, path: Optional[Path]):
        self.signame, self.path = signame, path
        where = f"checkpoint saved to {path}" if path else "no checkpoint could be saved"
        super().__init__(
            f"stopped by {signame} at a step boundary; {where}. "
            f"Resume with --resume_from_checkpoint latest (same output_dir)."
        )


class TrainingDiverged(TagtuneError):
    """The loss stayed NaN/inf: the run stops rather than train on garbage."""


# ----------------------------------------------------------------------------------------
# finding checkpoints
# ----------------------------------------------------------------------------------------


def checkpoints_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints (renamed into place, metadata present), oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / META_NAME).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def resolve_resume(output_dir: str, value: Optional[str]) -> Optional[Path]:
    """'latest' -> newest complete checkpoint of output_dir (None when there is none yet: a fresh
    start, so one command serves both the first launch and every requeue); a path -> that folder."""
    if not value:
        return None
    if value == "latest":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    p = Path(value)
    if not p.is_dir():
        raise CheckpointError(
            f"checkpoint folder not found: {value}",
            where="config field 'resume_from_checkpoint'",
            fix=f"give a folder such as {checkpoints_root(output_dir)}/step-<N>, or 'latest'",
        )
    if p.name.startswith((".tmp-", ".old-")) or not (p / META_NAME).is_file():
        raise CheckpointError(
            f"{p} is not a complete tagtune checkpoint (no {META_NAME})",
            where="config field 'resume_from_checkpoint'",
            fix="point at a step-<N> folder under <output_dir>/checkpoints; folders named .tmp-* are "
            "interrupted saves and cannot be resumed",
        )
    return p


def read_meta(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read checkpoint metadata: {err}",
            where=str(path / META_NAME),
            fix="resume from another checkpoint folder",
        ) from None


def clear_checkpoints(output_dir: str) -> None:
    """A run that overwrites output_dir must not later 'resume' from the previous run's checkpoints."""
    root = checkpoints_root(output_dir)
    if root.is_dir():
        logger.info("overwrite_output_dir: removing the previous run's checkpoints in %s", root)
        shutil.rmtree(root)


# ----------------------------------------------------------------------------------------
# identity checks on resume
# ----------------------------------------------------------------------------------------


def data_fingerprint(input_ids: list[list[int]]) -> str:
    """Hash of the tokenised training windows: resume skips batches by position, so the data must be the same."""
    h = hashlib.sha256()
    h.update(np.asarray([len(x) for x in input_ids], dtype=np.int64).tobytes())
    if input_ids:
        h.update(np.concatenate([np.asarray(x, dtype=np.int64) for x in input_ids]).tobytes())
    return h.hexdigest()[:16]


_FRESH = "or start a new run in another --output_dir"


def check_compatible(meta: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse a resume that would silently train a different model or on different data."""
    where = str(path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {meta.get('format_version')} is not {FORMAT_VERSION}",
            where=where,
            fix=f"resume with the tagtune version that wrote it, {_FRESH}",
        )
    if meta["labels"] != current["labels"]:
        added = sorted(set(current["labels"]) - set(meta["labels"]))
        missing = sorted(set(meta["labels"]) - set(current["labels"]))
        raise CheckpointError(
            f"label set differs from the checkpoint's ({len(meta['labels'])} labels there, {len(current['labels'])} now; "
            f"new: {added or 'none'}, absent now: {missing or 'none'})",
            where=where,
            fix=f"resume with the training data the checkpoint was trained on, {_FRESH}",
        )
    for key, flag in (
        ("model_name_or_path", "--model_name_or_path"),
        ("method", "--method"),
        ("lora", "--lora_r/--lora_alpha/--lora_target_modules"),
    ):
        if meta[key] != current[key]:
            raise CheckpointError(
                f"{key} differs from the checkpoint's: {meta[key]!r} there, {current[key]!r} now",
                where=where,
                fix=f"pass {flag} as in the checkpoint's run, {_FRESH}",
            )
    _check_zero(meta, current, where)
    _check_schedule_and_data(meta, current, where)
    if meta["world_size"] != current["world_size"]:
        logger.warning(
            "resuming a %d-process checkpoint with %d processes: the data order is the same, "
            "but dropout RNG streams differ, so results will not be bitwise equal",
            meta["world_size"],
            current["world_size"],
        )


def _check_zero(meta: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """A ZeRO checkpoint's shards are per process and per stage (a universal one is not)."""
    if meta["zero_stage"] and meta["world_size"] != current["world_size"] and not is_universal(meta):
        raise CheckpointError(
            f"DeepSpeed ZeRO-{meta['zero_stage']} checkpoint was written by {meta['world_size']} processes, "
            f"this launch has {current['world_size']}: its optimizer and parameter shards are split per process",
            where=where,
            fix=f"relaunch with --num_processes {meta['world_size']}; or convert it, optimizer state kept, with "
            f"`tagtune convert-checkpoint --to universal {where} OUT` and resume from OUT at any process count; "
            "or keep the weights only with DeepSpeed's zero_to_fp32.py (see README 'Scaling out') and start a new run",
        )
    if meta["zero_stage"] != current["zero_stage"]:
        raise CheckpointError(
            f"checkpoint has ZeRO stage {meta['zero_stage']}, this launch {current['zero_stage']}",
            where=where,
            fix=f"launch with the checkpoint's DeepSpeed configuration, {_FRESH}",
        )


def _check_schedule_and_data(meta: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """The batch order, the position in the epoch and the learning-rate schedule depend on these, and on
    the tokenised training data."""
    # what checkpoints from before each setting existed ran: pools of 50 batches, every batch shuffled alone
    older = {"length_group_batches": 50, "length_run_batches": 1}
    for key in (
        "global_batch_size",
        "gradient_accumulation_steps",
        "total_steps",
        "seed",
        "group_by_length",
        "length_group_batches",
        "length_run_batches",
    ):
        then = meta.get(key, older.get(key))
        if then != current.get(key):
            raise CheckpointError(
                f"{key} differs from the checkpoint's: {then} there, {current.get(key)} now; "
                "the batch order, the position in the epoch or the learning-rate schedule would no "
                "longer match",
                where=where,
                fix=f"resume with the same batch size, accumulation, epochs/max_steps, seed, "
                f"group_by_length, length_group_batches and length_run_batches, {_FRESH}",
            )
    if meta["data_fingerprint"] != current["data_fingerprint"]:
        raise CheckpointError(
            "training data (after tokenisation) differs from the checkpoint's",
            where=where,
            fix=f"resume with the same training files, tokenizer, max_length and stride, {_FRESH}",
        )


def is_universal(meta: dict[str, Any]) -> bool:
    """Written by `tagtune convert-checkpoint --to universal`: loadable at any world size."""
    return bool(meta.get("universal"))


def request_universal_load(ds_config: dict[str, Any]) -> None:
    """DeepSpeed reads a universal checkpoint only with "checkpoint": {"load_universal": true}; the trainer
    sets it (before accelerator.prepare) when it resumes from a converted checkpoint, so the user's
    DeepSpeed JSON stays the one the run was started with."""
    ds_config["checkpoint"] = {**ds_config.get("checkpoint", {}), "load_universal": True}


# ----------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------


def save(accelerator: Accelerator, output_dir: str, step: int, meta: dict[str, Any], keep: int) -> Path:
    """Atomic save of the full training state; then delete all but the newest ``keep`` (0 = keep all).

    Every process writes into the same temporary folder (DeepSpeed shards, RNG states); the
    main process writes the metadata last and renames. Multi-node runs need a shared filesystem,
    as Accelerate's own ``save_state`` does.
    """
    root = checkpoints_root(output_dir)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step-*"):  # interrupted saves of an earlier process
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    with _quiet_accelerate():
        accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / META_NAME, {"format_version": FORMAT_VERSION, **meta})
        _fsync_dir(tmp)
        if final.exists():  # the same step from an abandoned timeline (resumed from an older checkpoint)
            old = root / f".old-step-{step}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        if keep > 0:
            for _, p in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()
    logger.info("checkpoint saved: %s", final)
    return final


@contextlib.contextmanager
def _quiet_accelerate() -> Iterator[None]:
    """Accelerate logs every file it saves or loads at INFO; one line of ours says it."""
    loggers = [logging.getLogger(n) for n in ("accelerate.checkpointing", "accelerate.accelerator")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(accelerator: Accelerator, path: Path) -> None:
    """accelerator.load_state, with any failure (corrupt file, unsafe pickle, shape mismatch) as a CheckpointError."""
    try:
        with _quiet_accelerate():
            accelerator.load_state(str(path))
    except TagtuneError:
        raise
    except Exception as err:  # noqa: BLE001 - torch/safetensors/DeepSpeed raise many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"cannot load checkpoint: {type(err).__name__}: {first[:300]}",
            where=str(path),
            fix="resume from another checkpoint (or start a new run); only safetensors weights and "
            "weights-only pickles are accepted",
        ) from None


def tracker_run_id(accelerator: Accelerator, tracker: Optional[str]) -> Optional[str]:
    """The W&B run id, kept in the checkpoint so that a resume continues the same W&B run."""
    if tracker != "wandb" or not accelerator.is_main_process:
        return None
    return getattr(accelerator.get_tracker("wandb", unwrap=True), "id", None)


def continue_wandb_run(run_id: str) -> None:
    """wandb.init reads these: the resumed training logs into the interrupted run, its steps going
    on from the checkpoint's global step (the tracker step is the optimizer step)."""
    os.environ.setdefault("WANDB_RUN_ID", run_id)
    os.environ.setdefault("WANDB_RESUME", "allow")


# ----------------------------------------------------------------------------------------
# running totals carried across a resume
# ----------------------------------------------------------------------------------------


def totals_to_json(accelerator: Accelerator, tensors: dict[str, torch.Tensor]) -> dict[str, list]:
    """Per-process accumulators summed over processes (a collective: call on every process)."""
    return {k: accelerator.reduce(t.clone(), reduction="sum").cpu().tolist() for k, t in tensors.items()}


def totals_from_json(accelerator: Accelerator, saved: dict[str, list], tensors: dict[str, torch.Tensor]) -> None:
    """The summed totals go to the main process, zeros elsewhere, so the next reduction gives the same sum."""
    for k, t in tensors.items():
        if accelerator.is_main_process:
            t.copy_(torch.as_tensor(saved[k], dtype=t.dtype))
        else:
            t.zero_()


# ----------------------------------------------------------------------------------------
# preemption
# ----------------------------------------------------------------------------------------


class StopSignal:
    """SIGTERM/SIGINT set a flag that the loop reads at the next optimizer-step boundary.

    A second SIGINT (Ctrl-C twice) interrupts at once. The previous handlers come back on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals to the host program
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the previous handlers back (idempotent: the trainer's cleanup calls it on every exit)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = name
        logger.warning(
            "%s received: saving a checkpoint at the next step boundary, then exiting (code %d)",
            name,
            PREEMPTED_EXIT_CODE,
        )

    def requested(self, accelerator: Accelerator) -> bool:
        """Do all processes stop now? Under several processes the flag is all-reduced, so every rank
        stops at the same step even if the signal reached them at different times."""
        if accelerator.num_processes == 1:
            return self.received is not None
        flag = torch.tensor([1.0 if self.received else 0.0], device=accelerator.device)
        hit = accelerator.reduce(flag, reduction="sum").item() > 0
        if hit and not self.received:
            self.received = "SIGTERM (another process)"
        return hit


# ----------------------------------------------------------------------------------------
# numerics
# ----------------------------------------------------------------------------------------


class LossHealth:
    """Counts non-finite losses on the device (no host sync per step): [current streak, total]."""

    def __init__(self, device: Any) -> None:
        self.counts = torch.zeros(2, dtype=torch.long, device=device)

    def update(self, loss: torch.Tensor) -> None:
        bad = (~torch.isfinite(loss.detach())).long()
        self.counts[0] = (self.counts[0] + 1) * bad
        self.counts[1] += bad

    def read(self, accelerator: Accelerator) -> tuple[int, int]:
        """(longest current streak over processes, total over processes)."""
        allc = accelerator.gather(self.counts[None])
        return int(allc[:, 0].max()), int(allc[:, 1].sum())

    def check(self, accelerator: Accelerator, patience: int, step: int, last_good: Optional[Path]) -> int:
        """Raise TrainingDiverged once the streak reaches ``patience``; else return the current streak."""
        streak, total = self.read(accelerator)
        if streak >= patience:
            kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint had been saved"
            raise TrainingDiverged(
                f"training loss was NaN/inf for {streak} consecutive steps (up to step {step}; {total} in all); "
                f"the run stopped and {kept}",
                where="training loop",
                fix="lower --learning_rate, add warmup (--warmup_ratio), keep --max_grad_norm > 0, or use bf16/fp32 "
                "instead of fp16; then resume from the last good checkpoint with --resume_from_checkpoint PATH",
            )
        return streak


def weights_finite(accelerator: Accelerator, model: torch.nn.Module) -> bool:
    """All trainable weights finite on every process (ZeRO: each process checks its own shards).
    One host sync per checkpoint, which is cheap beside writing it."""
    local = [getattr(p, "ds_tensor", p).detach() for p in model.parameters() if p.requires_grad]
    ok = torch.stack([torch.isfinite(t).all() for t in local]).all() if local else torch.tensor(True)
    flag = torch.tensor([0.0 if bool(ok) else 1.0], device=accelerator.device)
    return accelerator.reduce(flag, reduction="sum").item() == 0


class OverflowCounter:
    """fp16 optimizer steps skipped by loss scaling, as Accelerate reports them.

    ``accelerator.optimizer_step_was_skipped``: outside DeepSpeed Accelerate's optimizer wrapper
    sees the GradScaler not call the optimizer's step (found inf/NaN gradients); under DeepSpeed it
    is the engine's overflow flag. A fused AdamW would take the step itself and hide the skip, which
    is why fp16 training builds a foreach AdamW (``train.make_optimizer``). The count stays a device
    tensor so that it is saved with checkpoints and summed over processes in ``total()``.
    """

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.count = torch.zeros(1, dtype=torch.long, device=accelerator.device)

    def before_step(self) -> None:
        """Nothing to record before the step (kept so the trainer's call sites stay as they are)."""

    def after_step(self) -> None:
        """Call after ``optimizer.step()`` on a gradient-sync step."""
        if self.accelerator.optimizer_step_was_skipped:
            self.count += 1

    def total(self) -> int:
        """Every process sees the same overflows (gradients are all-reduced before the check), and a
        resumed count sits on the main process only: the sum over processes / their number."""
        acc = self.accelerator
        return int(acc.reduce(self.count.clone(), reduction="sum").item()) // acc.num_processes
