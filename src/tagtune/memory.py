"""`tagtune memory`: estimated per-GPU memory of the model states (parameters, gradients, optimizer
states) under plain DDP and DeepSpeed ZeRO-1/2/3, with and without CPU offload.

  tagtune memory --model bert-base-cased roberta-base --gpus 1 2 8 [--method full lora] [--nodes 1]

Method: the mixed-precision Adam formula of the ZeRO paper (Rajbhandari et al. 2020, section 3.1)
for DeepSpeed: per trainable parameter 2 bytes of fp16/bf16 weights, 2 of gradients and 12 of
optimizer states (fp32 master weights, momentum, variance) = 16 bytes; frozen parameters (LoRA's
base) only their 2-byte copy. ZeRO-1 partitions the optimizer states across the N data-parallel
devices, ZeRO-2 also the gradients, ZeRO-3 also the weights. ``--precision fp32`` (DeepSpeed without
fp16/bf16, as on CPU) makes weights and gradients 4 bytes; the optimizer still keeps its own fp32
copy (12 bytes). Plain DDP under Accelerate's autocast keeps every weight in fp32 whatever the
precision, the frozen ones too: 4 bytes per parameter, plus 4 (fp32 gradient) + 8 (momentum,
variance) per trainable one, and on more than one process 4 more for the gradient copy in DDP's
all-reduce buckets (PyTorch DDP's default ``gradient_as_bucket_view=False``). Activations, the CUDA context and buffers come on top and grow with
batch size and sequence length. For full fine-tuning the table also gives DeepSpeed's own estimators
(deepspeed.runtime.zero.*.estimate_zero{2,3}_model_states_mem_needs), which add fp32 gradient and
buffer terms, as a cross-check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any, Optional

from .errors import ConfigError

GIB = 1024**3
STUDY_NUM_LABELS = 48  # tags in batterydata/pos_tagging

# Architectures of the study's two models, so the command needs no download.
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "bert-base-cased": {"model_type": "bert", "vocab_size": 28996},
    "roberta-base": {
        "model_type": "roberta",
        "vocab_size": 50265,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    },
}


@dataclass
class ModelShape:
    name: str
    method: str
    total: int  # distinct parameters the model holds
    trainable: int  # parameters with gradients and optimizer states
    largest_layer: int  # biggest single weight: what ZeRO-3 must gather at once


@dataclass
class Estimate:
    setup: str
    gpus: int
    params_gib: float
    grads_gib: float
    optim_gib: float
    gpu_total_gib: float
    cpu_total_gib: float  # per process, offloaded states
    deepspeed_gpu_gib: Optional[float] = None  # DeepSpeed's estimator (full fine-tuning only)


def load_config(name: str, num_labels: int):
    from transformers import AutoConfig

    labels = {"num_labels": num_labels}
    if name in KNOWN_SHAPES:
        kw = dict(KNOWN_SHAPES[name])
        return AutoConfig.for_model(kw.pop("model_type"), **kw, **labels)
    try:
        return AutoConfig.from_pretrained(name, **labels)
    except Exception as err:  # offline, missing folder, unknown id
        raise ConfigError(
            f"cannot read the config of '{name}': {err}",
            where="--model",
            fix=f"give a local model folder, or one of {sorted(KNOWN_SHAPES)}",
        ) from None


def model_shape(
    name: str,
    method: str = "full",
    num_labels: int = STUDY_NUM_LABELS,
    lora_r: int = 8,
    lora_target_modules: Optional[list[str]] = None,
) -> ModelShape:
    """Exact parameter counts from a weightless (meta-device) model of that architecture."""
    from .config import TrainConfig
    from .modeling import AdapterSpec, count_parameters, model_from_config

    # a full config (its PEFT defaults); the data source is required by validation but never read
    cfg = TrainConfig(
        dataset_name="synthetic:pos",
        method=method,
        lora_r=lora_r,
        lora_alpha=2 * lora_r,
        lora_dropout=0.0,
        lora_target_modules=lora_target_modules,
    )
    model = model_from_config(load_config(name, num_labels), AdapterSpec.from_config(cfg))
    counts = count_parameters(model)
    largest = max(p.numel() for p in model.parameters())
    return ModelShape(name, method, counts.unique, counts.trainable, largest)


def estimate(shape: ModelShape, gpus: int, nodes: int = 1, precision: str = "fp16") -> list[Estimate]:
    """Per-device model-state memory for each set-up, on `gpus` devices per node x `nodes` nodes."""
    n = gpus * nodes
    psi, t = shape.total, shape.trainable
    w = 4 if precision == "fp32" else 2  # DeepSpeed's weight/gradient bytes
    p16, g16, opt = w * psi, w * t, 12 * t
    rows = {
        # Accelerate autocast: fp32 weights (frozen ones too), fp32 gradients (+ DDP's fp32 bucket copy of them
        # when there are several processes: gradient_as_bucket_view is off), AdamW momentum + variance
        "DDP": (4 * psi, (8 if n > 1 else 4) * t, 8 * t, 0),
        "ZeRO-1": (p16, g16, opt / n, 0),
        "ZeRO-2": (p16, g16 / n, opt / n, 0),
        "ZeRO-2 + offload optimizer": (p16, 0, 0, (g16 + opt) / n),
        "ZeRO-3": (p16 / n, g16 / n, opt / n, 0),
        # weights live in CPU RAM; a device holds only the layer being computed
        "ZeRO-3 + offload params+optimizer": (w * shape.largest_layer, 0, 0, (p16 + g16 + opt) / n),
    }
    ds = _deepspeed_estimates(shape, gpus, nodes) if shape.trainable == shape.total and w == 2 else {}
    out = []
    for setup, (p, g, o, cpu) in rows.items():
        out.append(Estimate(setup, n, p / GIB, g / GIB, o / GIB, (p + g + o) / GIB, cpu / GIB, ds.get(setup)))
    return out


def _deepspeed_estimates(shape: ModelShape, gpus: int, nodes: int) -> dict[str, float]:
    try:  # DeepSpeed's first import prints an accelerator notice on stdout: keep `--json` output pure
        with contextlib.redirect_stdout(sys.stderr):
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except Exception:  # deepspeed is an optional extra
        return {}
    z2 = lambda off: estimate_zero2_model_states_mem_needs(shape.total, gpus, nodes, cpu_offload=off)[1]  # noqa: E731
    z3 = lambda off: estimate_zero3_model_states_mem_needs(  # noqa: E731
        shape.total, shape.largest_layer, gpus, nodes, cpu_offload=off, cpu_offload_params=off
    )[1]
    return {
        "ZeRO-2": z2(False) / GIB,
        "ZeRO-2 + offload optimizer": z2(True) / GIB,
        "ZeRO-3": z3(False) / GIB,
        "ZeRO-3 + offload params+optimizer": z3(True) / GIB,
    }


def markdown(shape: ModelShape, rows: list[Estimate]) -> str:
    head = (
        f"{shape.name} ({shape.method}): {shape.total:,} parameters, {shape.trainable:,} trainable, "
        f"GPUs: {rows[0].gpus}\n\n"
        "| set-up | params | grads | optimizer | GPU total | CPU (offload) | DeepSpeed estimator GPU |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    fmt = lambda x: f"{x:.2f}"  # noqa: E731
    lines = [
        f"| {r.setup} | {fmt(r.params_gib)} | {fmt(r.grads_gib)} | {fmt(r.optim_gib)} | **{fmt(r.gpu_total_gib)}** | "
        f"{fmt(r.cpu_total_gib) if r.cpu_total_gib else '-'} | "
        f"{fmt(r.deepspeed_gpu_gib) if r.deepspeed_gpu_gib is not None else '-'} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tagtune memory",
        description="Estimated per-GPU memory (GiB) of parameters, gradients and optimizer states under DDP and "
        "ZeRO-1/2/3 (+ CPU offload), by the 16-bytes-per-trainable-parameter mixed-precision Adam formula "
        "(frozen LoRA-base weights: 4 bytes under DDP autocast, 2 under DeepSpeed fp16/bf16); "
        "DeepSpeed's estimators beside it for full fine-tuning. Activations not included.",
    )
    parser.add_argument(
        "--model",
        nargs="+",
        default=["bert-base-cased", "roberta-base"],
        help=f"model names or local folders (known offline: {', '.join(KNOWN_SHAPES)})",
    )
    parser.add_argument("--gpus", nargs="+", type=int, default=[1, 2, 8], help="GPUs per node (one table each)")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes")
    parser.add_argument("--method", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    parser.add_argument(
        "--num_labels", type=int, default=STUDY_NUM_LABELS, help="classifier size (48: the study's tags)"
    )
    parser.add_argument("--lora_r", type=int, default=8, help="LoRA rank (targets: peft's default, query/value)")
    parser.add_argument(
        "--precision",
        choices=["fp16", "bf16", "fp32"],
        default="fp16",
        help="DeepSpeed weight/gradient precision (fp32: DeepSpeed without mixed precision, e.g. on CPU)",
    )
    parser.add_argument("--summary", action="store_true", help="one table of GPU totals (the README's table)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")
    args = parser.parse_args(argv)
    for name, v in (
        ("--gpus", min(args.gpus)),
        ("--nodes", args.nodes),
        ("--num_labels", args.num_labels),
        ("--lora_r", args.lora_r),
    ):
        if v < 1:
            raise ConfigError(f"invalid value {v}: must be >= 1", where=name)
    return args


def summary_table(rows_by_case: list[tuple[str, str, list[Estimate]]]) -> str:
    """One line of GPU totals per (model, method, GPUs): the README's table."""
    setups = rows_by_case[0][2]
    lines = [
        "| model | method | GPUs | " + " | ".join(r.setup for r in setups) + " |",
        "| --- | --- | ---: |" + " ---: |" * len(setups),
    ]
    for name, method, rows in rows_by_case:
        lines.append(
            f"| {name} | {method} | {rows[0].gpus} | " + " | ".join(f"{r.gpu_total_gib:.2f}" for r in rows) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    out: list[dict[str, Any]] = []
    cases: list[tuple[str, str, list[Estimate]]] = []
    for name in args.model:
        for method in args.method:
            shape = model_shape(name, method, args.num_labels, args.lora_r)
            for g in args.gpus:
                rows = estimate(shape, g, args.nodes, args.precision)
                if args.json:
                    out.append(
                        {**asdict(shape), "gpus_per_node": g, "nodes": args.nodes, "rows": [asdict(r) for r in rows]}
                    )
                elif args.summary:
                    cases.append((name, method, rows))
                else:
                    print(markdown(shape, rows))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if cases:
        print(summary_table(cases))
    print(
        "GiB per device for the model states only (16 bytes per trainable parameter, 20 under multi-process DDP; "
        "a frozen one: 4 under DDP autocast, 2 under DeepSpeed fp16/bf16); activations, CUDA context and "
        "buffers come on top."
    )
    return 0
