"""Which tracker a run uses, and what it gets: the resolved config (with launch topology),
per-step and per-epoch scalars, a run summary (parameter efficiency, peak memory, time per
epoch, best/final metrics) and, at the end, the confusion matrix (image, and W&B's native
chart), the per-tag and per-epoch tables. Goes through Accelerate's trackers, so only the main
process logs and one training is one tracker run whatever the number of processes."""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlparse

from .errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator

    from .config import TrainConfig

logger = logging.getLogger(__name__)

PACKAGE = {"wandb": "wandb", "tensorboard": "tensorboard"}

# train.py logs each epoch's whole row under eval/; these two are not evaluation metrics
RENAME = {
    "eval/train_loss": "train/epoch_loss",
    "eval/epoch_time_s": "time/epoch_s",
    "eval/eval_time_s": "time/eval_s",
}

CONFUSION_KEY = "eval/confusion_matrix"


def _wandb_logged_in() -> bool:
    """An API key in the environment, or a netrc entry for the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_report_to(report_to: str) -> Optional[str]:
    """'auto' -> wandb (offline unless logged in / WANDB_MODE set), or None when wandb is absent.

    A tracker asked for by name whose package is missing is an error: Accelerate would drop it
    silently.
    """
    if report_to == "none":
        return None
    if report_to == "auto":
        if importlib.util.find_spec("wandb") is None:
            logger.info("report_to=auto: wandb is not installed, so no tracker (pip install wandb to track runs)")
            return None
        report_to = "wandb"
    if report_to == "wandb" and not os.environ.get("WANDB_MODE") and not _wandb_logged_in():
        # wandb.init would stop the run with "No API key configured": log locally, upload later
        logger.info("report_to=%s: no W&B login found, logging offline (WANDB_MODE=offline)", report_to)
        os.environ["WANDB_MODE"] = "offline"
    if report_to not in PACKAGE:
        raise ConfigError(
            f"unknown tracker '{report_to}'",
            where="config field 'report_to'",
            fix=f"use one of {['auto', *PACKAGE, 'none']}",
        )
    if importlib.util.find_spec(PACKAGE[report_to]) is None:
        raise ConfigError(
            f"tracker '{report_to}' requested but the '{PACKAGE[report_to]}' package is not installed",
            where="config field 'report_to'",
            fix=f"pip install {PACKAGE[report_to]}, or pass --report_to none",
        )
    return report_to


def run_name(cfg: TrainConfig) -> str:
    return cfg.run_name or f"{cfg.recipe}-{cfg.model_short_name}-{cfg.method}"


def init(accelerator: Accelerator, cfg: TrainConfig, tracker: Optional[str], config: dict[str, Any]) -> None:
    if tracker is None:
        return
    init_kwargs: dict[str, Any] = {}
    if tracker == "wandb":
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        # group = model, job_type = method: the study's four runs sit side by side, filterable both ways
        name = run_name(cfg)
        if os.environ.get("WANDB_SWEEP_ID") and not cfg.run_name:  # a sweep's trials share one config: tell them apart
            name = f"{name}-{os.environ.get('WANDB_RUN_ID', '')}".rstrip("-")
        init_kwargs["wandb"] = {
            "name": name,
            "group": cfg.run_group or cfg.model_short_name,
            "dir": str(Path(cfg.output_dir).resolve()),  # absolute: a shared wandb-core service has its own cwd
            "job_type": cfg.method,
            "tags": [cfg.recipe, cfg.model_short_name, cfg.method],
        }
    from .outputs import redact  # a token pasted into --run_name/--run_group must not reach the tracker

    accelerator.init_trackers(redact(cfg.project), config=_flat_config(config), init_kwargs=redact(init_kwargs))
    if accelerator.is_main_process and tracker == "wandb":
        run = accelerator.get_tracker("wandb", unwrap=True)
        run_dir = Path(run.dir).parent  # run.dir is <...>/offline-run-<time>-<id>/files
        if getattr(run, "offline", os.environ.get("WANDB_MODE") == "offline"):
            logger.info(
                "wandb offline: run written to %s (view with `wandb leet %s`, upload later with `wandb sync %s`)",
                run_dir,
                run_dir.parent,
                run_dir,
            )
        else:
            logger.info("wandb run: %s (local files in %s)", getattr(run, "url", None), run_dir)
    elif accelerator.is_main_process and tracker == "tensorboard":
        logger.info(
            "tensorboard: events written to %s (view with `tensorboard --logdir %s`)",
            accelerator.get_tracker("tensorboard", unwrap=True).log_dir,
            accelerator.logging_dir,
        )


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    # TensorBoard's hparams only take scalars and strings
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}


def log(accelerator: Accelerator, tracker: Optional[str], values: dict[str, Any], step: int) -> None:
    """Numbers only: names (primary_metric, tagging_scheme) and per-type tables go to the summary and files."""
    if tracker is not None:
        accelerator.log(
            {
                RENAME.get(k, k): v
                for k, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            },
            step=step,
        )


def summary(accelerator: Accelerator, tracker: Optional[str], values: dict[str, Any]) -> None:
    """Run-level values (parameter counts, sizes, peak memory): W&B summary; TensorBoard as scalars at step 0."""
    if tracker is None or not accelerator.is_main_process:
        return
    if tracker == "wandb":
        run = accelerator.get_tracker("wandb", unwrap=True)
        run.summary.update(values)
    else:
        accelerator.log(
            {f"summary/{k}": v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            step=0,
        )


SUMMARY_KEYS = (
    "trainable_params",
    "total_params",
    "unique_params",
    "trainable_pct",
    "model_size_bytes",
    "peak_memory_bytes",
    "peak_memory_kind",
    "wall_time_s",
    "train_time_s",
    "epoch_times_s",
    "num_processes",
    "distributed_type",
    "mixed_precision",
    "global_steps",
)
FINAL_METRICS = (
    "primary",  # the task's own metric (accuracy for POS, entity F1 for NER/chunking): named by primary_metric
    "accuracy",
    "macro_f1",
    "weighted_f1",
    "seqeval_f1",
    "entity_f1",
    "entity_precision",
    "entity_recall",
    "eval_loss",
)


def run_summary(results: dict[str, Any], epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's one-line facts: parameter efficiency, memory, time per epoch, best and final metrics."""
    out = {k: results[k] for k in SUMMARY_KEYS if k in results}
    times = results.get("epoch_times_s") or []
    if times:
        out["time_per_epoch_s"] = sum(times) / len(times)
    evaluated = [e for e in epochs if e.get("accuracy") is not None]
    if evaluated and evaluated[-1].get("primary_metric"):
        out["primary_metric"] = evaluated[-1]["primary_metric"]
    for key in FINAL_METRICS:
        vals = [e for e in evaluated if e.get(key) is not None]
        if not vals:
            continue
        out[f"final/{key}"] = vals[-1][key]
        best = min(vals, key=lambda e: e[key]) if key.endswith("loss") else max(vals, key=lambda e: e[key])
        out[f"best/{key}"], out[f"best/{key}_epoch"] = best[key], best["epoch"]
    return out


def log_final(
    accelerator: Accelerator, tracker: Optional[str], results: dict[str, Any], epochs: list[dict[str, Any]]
) -> None:
    """End of run (called on every process; only the main one logs): the summary, the confusion
    matrix, the per-tag and per-epoch tables."""
    if tracker is None or not accelerator.is_main_process:
        return
    summary(accelerator, tracker, run_summary(results, epochs))
    step = int(results.get("global_steps") or 0)
    figure = None
    cm = results.get("confusion_matrix")
    if cm:
        from .report import confusion_figure, figure_rgb

        train_counts = dict(map(tuple, results.get("label_distribution", {}).get("train", [])))
        acc = epochs[-1].get("accuracy") if epochs else None
        title = "confusion matrix, rows normalised" + (f" (accuracy {acc:.4f})" if acc is not None else "")
        figure = figure_rgb(confusion_figure(cm["labels"], cm["matrix"], title, train_counts))
    per_tag = epochs[-1].get("per_tag") if epochs else None
    if tracker == "wandb":
        _wandb_final(accelerator, cm, figure, per_tag, epochs, step)
    elif tracker == "tensorboard":
        _tensorboard_final(accelerator, figure, per_tag, epochs, step)


def _epoch_table_rows(epochs: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    from .outputs import epoch_columns

    columns = epoch_columns(epochs)
    header = [h for h, _ in columns] + ["Time (s)"]
    return header, [[e.get(k) for _, k in columns] + [e.get("epoch_time_s")] for e in epochs]


def _wandb_final(
    accelerator: Accelerator,
    cm: Optional[dict[str, Any]],
    figure: Any,
    per_tag: Optional[dict[str, Any]],
    epochs: list[dict[str, Any]],
    step: int,
) -> None:
    import wandb

    values: dict[str, Any] = {}
    if cm is not None:
        values[CONFUSION_KEY] = wandb.Image(figure, caption="true tag (rows) x predicted tag, rows normalised")
        labels, matrix = cm["labels"], cm["matrix"]
        # the table wandb.plot.confusion_matrix builds, from counts (it would loop over every word)
        data = [[labels[i], labels[j], int(matrix[i][j])] for i in range(len(labels)) for j in range(len(labels))]
        values[f"{CONFUSION_KEY}_chart"] = wandb.plot_table(
            "wandb/confusion_matrix/v1",
            wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=data),
            {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            {"title": "Confusion matrix"},
        )
    if per_tag:
        from .outputs import PER_TAG_HEADER

        rows = sorted(per_tag.items(), key=lambda kv: (-kv[1]["support"], kv[0]))
        values["eval/per_tag"] = wandb.Table(
            columns=PER_TAG_HEADER, data=[[t, m["precision"], m["recall"], m["f1"], m["support"]] for t, m in rows]
        )
    if epochs:
        header, rows = _epoch_table_rows(epochs)
        values["eval/epochs"] = wandb.Table(columns=header, data=rows)
    if values:
        accelerator.log(values, step=step)


def _tensorboard_final(
    accelerator: Accelerator, figure: Any, per_tag: Optional[dict[str, Any]], epochs: list[dict[str, Any]], step: int
) -> None:
    from .outputs import PER_TAG_HEADER, epoch_table_markdown, markdown_table, per_tag_rows

    writer = accelerator.get_tracker("tensorboard", unwrap=True)
    if figure is not None:
        writer.add_image(CONFUSION_KEY, figure, global_step=step, dataformats="HWC")
    if per_tag:
        writer.add_text(
            "eval/per_tag",
            markdown_table(PER_TAG_HEADER, [[str(c) for c in r] for r in per_tag_rows(per_tag)]),
            global_step=step,
        )
    if epochs:
        writer.add_text("eval/epochs", epoch_table_markdown(epochs), global_step=step)
    writer.flush()


def finish(accelerator: Accelerator, tracker: Optional[str], exit_code: int = 0) -> None:
    """Close the run's trackers once (main process; the others hold none). A run that stopped early is
    marked so: W&B records the exit code (75 = preempted, marked as preempting so a resume continues it)."""
    for t in list(getattr(accelerator, "trackers", [])):
        run = getattr(t, "run", None)  # started on the main process only
        if t.name == "wandb" and run is None:  # never started (other process, or wandb.init failed)
            continue
        if t.name == "wandb" and exit_code:
            if exit_code == 75 and hasattr(run, "mark_preempting"):
                run.mark_preempting()
            run.finish(exit_code=exit_code)
        else:
            t.finish()
    accelerator.trackers = []
