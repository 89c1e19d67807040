"""The run's final model: ``save_pretrained`` in safetensors, with tokenizer and label maps.

A LoRA run's ``model/`` also loads with one line of plain peft,
``AutoPeftModelForTokenClassification.from_pretrained(path)``. peft builds the base model from the
adapter config's ``base_model_name_or_path`` with ``from_pretrained`` and no other arguments, so the
base must already carry the run's label maps (else its classifier has the base's 2 labels and the
adapter's classifier does not fit). ``write_peft_base`` saves ``model/base/``: the base model's
config with the run's labels, beside the base's weight files (hard links where the file system
allows, else copies), and points the adapter config at it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .outputs import atomic_write_json, redact

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)
PEFT_BASE_DIR = "base"
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json")


def save_model(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: Any,
    out: Path,
    config: dict[str, Any],
    labels: list[str],
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
        if (out / "adapter_config.json").is_file():
            write_peft_base(out, config["model_name_or_path"], labels, bool(config.get("trust_remote_code")))


def _local_model_dir(name: str) -> Path:
    """A model folder, 'synthetic:*', or a hub id already in the local cache -> its folder."""
    from .modeling import resolve_model_path

    path = Path(resolve_model_path(name))
    if path.is_dir():
        return path
    from transformers.utils import cached_file

    return Path(cached_file(name, "config.json")).parent  # the cached snapshot; raises when not cached


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src.resolve(), dst)  # no second copy of the base weights on the same file system
    except OSError:
        shutil.copy2(src, dst)


def write_peft_base(out: Path, base_model: str, labels: list[str], trust_remote_code: bool = False) -> None:
    """``out/base/``: the base config with the run's label maps + the base weights; the adapter config
    points at it (absolute path), so plain ``AutoPeftModelForTokenClassification.from_pretrained(out)`` works."""
    from transformers import AutoConfig

    from .modeling import label_maps

    try:
        src = _local_model_dir(base_model)
    except OSError as err:  # a hub id that is not cached: plain-peft loading needs base_model= by hand
        logger.warning("no local copy of %s (%s): %s/%s not written", base_model, err, out, PEFT_BASE_DIR)
        return
    dst = out / PEFT_BASE_DIR
    dst.mkdir(exist_ok=True)
    id2label, label2id = label_maps(labels)
    config = AutoConfig.from_pretrained(
        src, num_labels=len(labels), id2label=id2label, label2id=label2id, trust_remote_code=trust_remote_code
    )
    config.save_pretrained(dst)
    for f in src.iterdir():
        if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES) and not f.name.startswith("adapter_"):
            _link_or_copy(f, dst / f.name)
    adapter_file = out / "adapter_config.json"
    adapter = json.loads(adapter_file.read_text(encoding="utf-8"))
    adapter["base_model_name_or_path"] = str(dst.resolve())
    atomic_write_json(adapter_file, adapter)
