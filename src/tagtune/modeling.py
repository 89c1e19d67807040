"""AutoModelForTokenClassification with the label maps; full fine-tuning or LoRA (peft);
parameter counts as peft reports them plus the unique count."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)


def resolve_model_path(name: str) -> str:
    """'synthetic:<arch>' -> a locally built tiny model folder; anything else unchanged."""
    if name.startswith("synthetic:"):
        from .synthetic import synthetic_model_path

        return synthetic_model_path(name)
    return name


def label_maps(labels: list[str]) -> tuple[dict[int, str], dict[str, int]]:
    return {i: label for i, label in enumerate(labels)}, {label: i for i, label in enumerate(labels)}


def load_base_model(path: str, labels: list[str], cfg: Any):
    from transformers import AutoModelForTokenClassification

    id2label, label2id = label_maps(labels)
    return AutoModelForTokenClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=id2label,
        label2id=label2id,
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
        use_safetensors=None,
    )


def lora_config(cfg: Any):
    from peft import LoraConfig, TaskType

    # TOKEN_CLS keeps the classifier trainable through modules_to_save.
    return LoraConfig(
        task_type=TaskType.TOKEN_CLS,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        inference_mode=False,
    )


def apply_method(model: torch.nn.Module, cfg: Any) -> torch.nn.Module:
    if cfg.method == "full":
        return model
    from peft import get_peft_model

    if cfg.lora_target_modules and "classifier" in cfg.lora_target_modules:
        from .errors import ConfigError

        raise ConfigError(
            "the classifier is trained in full under LoRA and cannot also be a LoRA target",
            where="config field 'lora_target_modules'",
            fix="remove 'classifier' from the list",
        )
    return get_peft_model(model, lora_config(cfg))


def build_model(cfg: Any, labels: list[str]) -> torch.nn.Module:
    model = load_base_model(resolve_model_path(cfg.model_name_or_path), labels, cfg)
    return apply_method(model, cfg)


@dataclass
class ParamCounts:
    trainable: int
    total: int  # as peft's print_trainable_parameters counts: a modules_to_save copy counts twice
    unique: int  # each distinct weight once: what the model really holds

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "trainable_params": self.trainable,
            "total_params": self.total,
            "unique_params": self.unique,
            "trainable_pct": round(self.trainable_pct, 4),
        }

    def line(self) -> str:
        return (
            f"trainable params: {self.trainable:,} || all params: {self.total:,} || "
            f"trainable%: {self.trainable_pct:.4f} || unique params: {self.unique:,}"
        )


def _numel(p: torch.Tensor) -> int:
    # DeepSpeed ZeRO-3 partitions parameters; ds_numel keeps the full size
    return int(getattr(p, "ds_numel", p.numel()))


def count_parameters(model: torch.nn.Module) -> ParamCounts:
    trainable = total = 0
    for p in model.parameters():
        n = _numel(p)
        total += n
        if p.requires_grad:
            trainable += n
    unique = total
    # peft keeps the original classifier (frozen) beside the trainable copy
    for module in model.modules():
        if type(module).__name__ == "ModulesToSaveWrapper":
            orig = getattr(module, "original_module", None)
            if orig is not None:
                unique -= sum(_numel(p) for p in orig.parameters())
    return ParamCounts(trainable, total, unique)


def model_from_config(config: Any, cfg: Any) -> torch.nn.Module:
    """Model of a config's shape without weights files (meta device: no memory, no download)."""
    from transformers import AutoModelForTokenClassification

    with torch.device("meta"):
        model = AutoModelForTokenClassification.from_config(config)
    return apply_method(model, cfg)
