"""The run's final model: ``save_pretrained`` in safetensors, with tokenizer and label maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .outputs import atomic_write_json, redact


def save_model(
    accelerator: Any, model: torch.nn.Module, tokenizer: Any, out: Path, config: dict[str, Any], labels: list[str]
) -> None:
    """save_pretrained in safetensors; under ZeRO-3 the 16-bit weights are gathered first (a collective)."""
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
        atomic_write_json(out / "tagtune_config.json", redact({**config, "labels": labels}))
