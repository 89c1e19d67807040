"""`tagtune convert-checkpoint --to universal CKPT OUT`: a DeepSpeed ZeRO checkpoint that any number of
processes can resume, optimizer state included.

A ZeRO checkpoint holds one optimizer shard per process, so tagtune refuses to resume it at another world
size (checkpoint.check_compatible). DeepSpeed's own ``ds_to_universal`` rewrites the shards as one folder
per parameter (fp32 weights, Adam moments, step); a launch then loads them at any process count with the
DeepSpeed config ``"checkpoint": {"load_universal": true}``, which the trainer sets itself when it resumes
from a converted checkpoint. OUT is a complete tagtune checkpoint (the scheduler, RNG states and
tagtune_checkpoint.json are carried over, the metadata marked ``"universal": true``); it is written into
a temporary folder and renamed into place, so a failed conversion leaves no OUT and CKPT untouched.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

from . import checkpoint as ckpt
from .errors import CheckpointError
from .outputs import atomic_write_json

USAGE = "tagtune convert-checkpoint --to universal CKPT OUT"


def deepspeed_tag(folder: Path) -> str:
    """The sub-folder DeepSpeed wrote its files into (its 'latest' file names it; Accelerate uses pytorch_model)."""
    latest = folder / "latest"
    tag = latest.read_text(encoding="utf-8").strip() if latest.is_file() else "pytorch_model"
    if not (folder / tag).is_dir():
        raise CheckpointError(
            f"no DeepSpeed folder '{tag}' in the checkpoint",
            where=str(folder),
            fix="give a step-<N> folder written by a DeepSpeed ZeRO run",
        )
    return tag


def _source_meta(src: Path) -> dict[str, Any]:
    path = ckpt.resolve_resume(str(src.parent.parent), str(src))  # the same checks as --resume_from_checkpoint
    meta = ckpt.read_meta(path)
    if not meta.get("zero_stage"):
        raise CheckpointError(
            "not a DeepSpeed ZeRO checkpoint; a DDP or single-process checkpoint already resumes at any "
            "number of processes",
            where=str(src),
            fix="resume from it directly with --resume_from_checkpoint",
        )
    if meta.get("universal"):
        raise CheckpointError(
            "already a universal checkpoint",
            where=str(src),
            fix="resume from it directly with --resume_from_checkpoint",
        )
    return meta


def _ds_to_universal(src: Path, dst: Path) -> None:
    """DeepSpeed's converter, in this process, its progress printed to stderr."""
    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(
        input_folder=str(src),
        output_folder=str(dst),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        # Accelerate-saved ZeRO-1/2 checkpoints carry no 'universal_checkpoint_info' (Megatron writes one);
        # DeepSpeed's own flag adds the default
        inject_missing_state=True,
    )
    with contextlib.redirect_stdout(sys.stderr):
        ds_to_universal.main(args)


def convert_to_universal(src: Path, out: Path) -> Path:
    """Write the universal form of ZeRO checkpoint ``src`` to ``out`` (which must not exist)."""
    src, out = Path(src), Path(out)
    meta = _source_meta(src)
    if out.exists():
        raise CheckpointError(
            "output folder already exists", where=str(out), fix="choose a new folder (nothing was overwritten)"
        )
    tag = deepspeed_tag(src)
    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)  # an interrupted conversion
    try:
        # everything but DeepSpeed's shards (and its zero_to_fp32 helper scripts, which read shards)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(tag, "zero_to_*.py", ckpt.META_NAME))
        try:
            _ds_to_universal(src / tag, tmp / tag)
        except Exception as err:  # noqa: BLE001 - DeepSpeed raises assertions, ValueErrors, pickling errors
            raise CheckpointError(
                f"DeepSpeed's ds_to_universal failed: {type(err).__name__}: {str(err).strip()[:300]}",
                where=str(src),
                fix="resume with the checkpoint's own number of processes, or convert it to a plain model with "
                "launch/zero_to_fp32.sh (optimizer state lost)",
            ) from None
        atomic_write_json(
            tmp / ckpt.META_NAME,
            {**meta, "universal": True, "converted_from": str(src.resolve()), "source_world_size": meta["world_size"]},
        )
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tagtune convert-checkpoint",
        description="Convert a DeepSpeed ZeRO checkpoint (a step-<N> folder) to DeepSpeed's universal format, "
        "which a run resumes with any number of processes (--resume_from_checkpoint OUT), optimizer state kept.",
    )
    parser.add_argument("--to", required=True, choices=["universal"], help="target format")
    parser.add_argument("checkpoint", type=Path, help="a step-<N> folder of a ZeRO run")
    parser.add_argument("out", type=Path, help="new folder for the converted checkpoint")
    args = parser.parse_args(argv)
    out = convert_to_universal(args.checkpoint, args.out)
    print(f"universal checkpoint written to {out}; resume with --resume_from_checkpoint {out} at any process count")
    return 0
