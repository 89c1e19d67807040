"""Which tracker a run uses, and what it gets: config, per-step and per-epoch scalars,
a summary with the parameter counts. Goes through Accelerate's trackers, so only the main
process logs and one training is one tracker run whatever the number of processes."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

logger = logging.getLogger(__name__)

PACKAGE = {"wandb": "wandb", "tensorboard": "tensorboard"}


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
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
            logger.info("report_to=auto: wandb not installed, no tracker")
            return None
        report_to = "wandb"
        if not os.environ.get("WANDB_MODE") and not _wandb_logged_in():
            os.environ["WANDB_MODE"] = "offline"
    if importlib.util.find_spec(PACKAGE[report_to]) is None:
        raise ConfigError(f"tracker '{report_to}' requested but the '{PACKAGE[report_to]}' package is not installed",
                          where="config field 'report_to'",
                          fix=f"pip install {PACKAGE[report_to]}, or pass --report_to none")
    return report_to


def run_name(cfg: Any) -> str:
    return cfg.run_name or f"{cfg.recipe}-{cfg.model_short_name}-{cfg.method}"


def init(accelerator: Any, cfg: Any, tracker: Optional[str], config: dict[str, Any]) -> None:
    if tracker is None:
        return
    init_kwargs: dict[str, Any] = {}
    if tracker == "wandb":
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        init_kwargs["wandb"] = {"name": run_name(cfg), "group": cfg.run_group or cfg.model_short_name,
                                "dir": cfg.output_dir, "job_type": cfg.method}
    accelerator.init_trackers(cfg.project, config=_flat_config(config), init_kwargs=init_kwargs)
    if accelerator.is_main_process and tracker == "wandb":
        run = accelerator.get_tracker("wandb", unwrap=True)
        mode = os.environ.get("WANDB_MODE", "online")
        where = getattr(run, "dir", None) or cfg.output_dir
        if mode == "offline":
            logger.info("wandb offline: run written to %s (upload later with `wandb sync %s`)", where, Path(where).parent)
        else:
            logger.info("wandb run: %s", getattr(run, "url", None) or where)


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    # TensorBoard's hparams only take scalars and strings
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}


def log(accelerator: Any, tracker: Optional[str], values: dict[str, Any], step: int) -> None:
    if tracker is not None:
        accelerator.log(values, step=step)


def summary(accelerator: Any, tracker: Optional[str], values: dict[str, Any]) -> None:
    """Run-level values (parameter counts, sizes, peak memory): W&B summary; TensorBoard as text scalars at step 0."""
    if tracker is None or not accelerator.is_main_process:
        return
    if tracker == "wandb":
        run = accelerator.get_tracker("wandb", unwrap=True)
        run.summary.update(values)
    else:
        accelerator.log({f"summary/{k}": v for k, v in values.items() if isinstance(v, (int, float))}, step=0)


def log_final(accelerator: Any, tracker: Optional[str], results: dict[str, Any], epochs: list[dict[str, Any]]) -> None:
    """End of run: run-level values into the summary."""
    summary(accelerator, tracker, {k: results[k] for k in ("peak_memory_bytes", "wall_time_s", "model_size_bytes") if k in results})


def finish(accelerator: Any, tracker: Optional[str]) -> None:
    if tracker is not None:
        accelerator.end_training()
