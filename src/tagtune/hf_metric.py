"""Where tagtune's POS metric lives as a Hugging Face ``evaluate`` module (shipped as package data).

``evaluate.load(POS_METRIC_PATH)`` works offline: a local folder needs no hub access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

POS_METRIC_PATH = str(Path(__file__).parent / "evaluate_metrics" / "pos_tagging")


def load_pos_metric(**kwargs: Any) -> Any:
    """``evaluate.load`` of the shipped POS metric (token accuracy, per-tag P/R/F1)."""
    import evaluate

    return evaluate.load(POS_METRIC_PATH, **kwargs)
