"""AutoModelForTokenClassification with the label maps; full fine-tuning or LoRA (peft);
parameter counts as peft reports them plus the unique count."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

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


PEFT_METHODS = ("lora", "ia3", "loha", "lokr")
# peft's own default target lists, per method (None: peft knows no default for any model)
_DEFAULT_TARGETS = {
    "lora": "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING",
    "ia3": "TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING",
    "loha": "TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING",
    "lokr": "TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING",
}
# peft's TOKEN_CLS task trains these heads in full (modules_to_save); they must not also be adapted
HEAD_MODULES = ["classifier", "score"]


@dataclass
class AdapterSpec:
    """The parameter-efficient method of a run, as the config's fields describe it."""

    method: str  # one of PEFT_METHODS
    r: int
    alpha: int
    dropout: float
    target_modules: Optional[list[str]]  # None = peft's default; ["all-linear"] = every linear but the head
    use_dora: bool = False
    use_rslora: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> AdapterSpec:
        return cls(
            method=cfg.peft_method,
            r=cfg.lora_r,
            alpha=cfg.lora_alpha,
            dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
            use_dora=cfg.use_dora,
            use_rslora=cfg.use_rslora,
        )


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Distinct last-name parts of the model's linear layers, the head excluded: what target modules can name."""
    names = {
        n.rsplit(".", 1)[-1]
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not any(n == h or n.endswith("." + h) for h in HEAD_MODULES)
    }
    return sorted(names)


def resolve_targets(model: torch.nn.Module, spec: AdapterSpec) -> tuple[Any, Optional[list[str]]]:
    """(target_modules, exclude_modules) for peft; a clear error where peft has no default for this model."""
    from peft.utils import constants

    from .errors import ConfigError

    targets = spec.target_modules
    if targets and any(t in HEAD_MODULES for t in targets):
        raise ConfigError(
            f"the classifier is trained in full under {spec.method} and cannot also be a target",
            where="config field 'lora_target_modules'",
            fix="remove 'classifier' from the list",
        )
    if targets == ["all-linear"]:
        # peft's "all-linear" would wrap the classifier too, which TOKEN_CLS then cannot also train in full
        return "all-linear", list(HEAD_MODULES)
    if targets:
        return list(targets), None
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if getattr(constants, _DEFAULT_TARGETS[spec.method]).get(model_type) is None:
        raise ConfigError(
            f"peft has no default {spec.method} target modules for model type '{model_type}'",
            where="config field 'lora_target_modules'",
            fix=f"name some of this model's linear layers, e.g. --lora_target_modules "
            f"{' '.join(linear_module_names(model))}, or use --lora_target_modules all-linear",
        )
    return None, None


def adapter_config(model: torch.nn.Module, spec: AdapterSpec):
    """The peft config of ``spec`` for ``model``; task type TOKEN_CLS keeps the classifier trainable."""
    import peft

    targets, exclude = resolve_targets(model, spec)
    common = dict(task_type=peft.TaskType.TOKEN_CLS, target_modules=targets, exclude_modules=exclude)
    if spec.method == "lora":
        return peft.LoraConfig(
            r=spec.r,
            lora_alpha=spec.alpha,
            lora_dropout=spec.dropout,
            use_dora=spec.use_dora,
            use_rslora=spec.use_rslora,
            inference_mode=False,
            **common,
        )
    if spec.method == "ia3":  # learned scaling vectors: no rank, no alpha
        return peft.IA3Config(inference_mode=False, **common)
    if spec.method == "loha":
        return peft.LoHaConfig(r=spec.r, alpha=spec.alpha, module_dropout=spec.dropout, **common)
    return peft.LoKrConfig(r=spec.r, alpha=spec.alpha, module_dropout=spec.dropout, **common)


def apply_method(model: torch.nn.Module, cfg: Any) -> torch.nn.Module:
    if cfg.method == "full":
        return model
    from peft import get_peft_model

    return get_peft_model(model, adapter_config(model, AdapterSpec.from_config(cfg)))


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
