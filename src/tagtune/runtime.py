"""The process a run lives in: CPU threads, precision, the Accelerator and its process group, hang
diagnostics, and the orderly shutdown at the end.

One place decides precision (``resolve_precision``) and one the process-group backend
(``make_accelerator``); only the trainer and checkpoint code use the Accelerator it returns.
"""

from __future__ import annotations

import datetime
import faulthandler
import gc
import json
import logging
import os
import resource
import signal
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from .errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger("tagtune")

# Seconds after which every thread's Python stack is dumped to stderr (repeatedly): set by the tests'
# launch helper so that a hung launch shows where each process was, before it is killed.
FAULTHANDLER_ENV = "TAGTUNE_FAULTHANDLER_TIMEOUT"


# ----------------------------------------------------------------------------------------
# CPU threads
# ----------------------------------------------------------------------------------------


def _launcher_environ_and_args() -> Optional[tuple[dict[str, str], list[str]]]:
    """The environment and command line the user gave `accelerate launch`, read from /proc.

    The workers only see what the launcher passed on, and `accelerate launch` writes
    OMP_NUM_THREADS=1 into their environment whenever the user set neither OMP_NUM_THREADS nor
    --num_cpu_threads_per_process; the launcher's own start-up environment and arguments still say
    whether the user did. None when no `accelerate` launcher is among this process's ancestors.
    """
    pid = os.getppid()
    for _ in range(4):  # worker <- accelerate launch, or worker <- torchrun agent (in accelerate) <- ...
        if pid <= 1:
            return None
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            if any("accelerate" in a for a in args[:3]):
                raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
                return dict(kv.split("=", 1) for kv in raw if "=" in kv), args
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


def configure_cpu_threads() -> tuple[int, str]:
    """Use the cores available to each local process on CPU; an explicit user setting wins.

    Returns (threads, why). On a GPU, or without `accelerate launch`, torch's own choice stands.
    """
    if torch.cuda.is_available():
        return torch.get_num_threads(), "GPU run: torch default"
    launcher = _launcher_environ_and_args()
    if launcher is None:
        return torch.get_num_threads(), "torch default (not under accelerate launch)"
    env, args = launcher
    if "OMP_NUM_THREADS" in env:
        return torch.get_num_threads(), f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} set by the user"
    if any(a.startswith("--num_cpu_threads_per_process") for a in args):
        return torch.get_num_threads(), "--num_cpu_threads_per_process set by the user"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = max(1, len(os.sched_getaffinity(0)) // max(local, 1))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # loader workers and other children inherit it
    return threads, f"{len(os.sched_getaffinity(0))} cores / {local} local process(es); accelerate launch had set 1"


# ----------------------------------------------------------------------------------------
# hang diagnostics
# ----------------------------------------------------------------------------------------


def enable_hang_diagnostics() -> None:
    """SIGUSR1 dumps every thread's Python stack; TAGTUNE_FAULTHANDLER_TIMEOUT=S dumps them every S seconds."""
    if not faulthandler.is_enabled():
        faulthandler.enable(file=sys.stderr, all_threads=True)
    try:
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True, chain=False)
    except (ValueError, RuntimeError, AttributeError):  # not the main thread, or no SIGUSR1 (Windows)
        pass
    timeout = os.environ.get(FAULTHANDLER_ENV)
    if timeout:
        faulthandler.dump_traceback_later(float(timeout), repeat=True, file=sys.stderr)


def disable_hang_diagnostics() -> None:
    faulthandler.cancel_dump_traceback_later()


# ----------------------------------------------------------------------------------------
# precision and the Accelerator
# ----------------------------------------------------------------------------------------


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively, as torch reports it: AVX512-BF16 or AMX on x86; elsewhere
    oneDNN's own check (e.g. the BF16 extension on Arm). Without it bf16 is emulated and slower than fp32."""
    import platform

    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(requested: Optional[str]) -> str:
    """fp16 on a GPU (loss scaling); bf16 on compute capability >= 8.0 or a CPU with native bf16 (autocast on
    CPU, through Accelerate); fp16 on CPU runs fp32."""
    mp = requested or os.environ.get("ACCELERATE_MIXED_PRECISION", "no") or "no"
    if mp not in ("no", "fp16", "bf16"):
        raise ConfigError(f"unsupported mixed precision '{mp}'", where="mixed_precision", fix="use no, fp16 or bf16")
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        if mp == "bf16" and major < 8:
            raise ConfigError(
                f"bf16 requested but {torch.cuda.get_device_name()} (compute capability {major}.{minor}) has no bf16 "
                "hardware; torch may emulate it about 4x slower",
                where="mixed_precision",
                fix="use fp16 on this GPU (e.g. --mixed_precision fp16 or accelerate_configs/single_t4_fp16.yaml)",
            )
    elif mp == "bf16" and not cpu_bf16_supported():
        raise ConfigError(
            "bf16 requested on a CPU without native bf16 (torch.cpu reports neither AVX512-BF16 nor AMX): "
            "it would be emulated, slower than fp32",
            where="mixed_precision",
            fix='use --mixed_precision no on this machine, or run where `python -c "import torch; '
            'print(torch.cpu._is_avx512_bf16_supported())"` prints True',
        )
    elif mp == "fp16":
        # Accelerate would keep saying fp16 while running fp32; say so and run fp32 explicitly.
        logger.warning("fp16 needs a GPU; running in fp32 on CPU")
        mp = "no"
    return mp


def launched() -> bool:
    """Started by a launcher (accelerate launch, torchrun, deepspeed): it sets LOCAL_RANK."""
    return "LOCAL_RANK" in os.environ


def make_accelerator(
    *,
    mixed_precision: Optional[str],
    gradient_accumulation_steps: int,
    tracker: Optional[str],
    output_dir: str,
    timeout_s: int,
) -> Any:
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedType
    from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

    # A stuck rank fails after timeout_s with a message instead of waiting forever in a collective.
    pg_kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s)}
    if not torch.cuda.is_available() and launched():
        # No NCCL on CPU: without gloo, DeepSpeed silently sees one process (see README, CPU).
        pg_kwargs["backend"] = "gloo"
    accelerator = Accelerator(
        mixed_precision=resolve_precision(mixed_precision),
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=tracker,
        project_config=ProjectConfiguration(project_dir=output_dir, logging_dir=os.path.join(output_dir, "tb")),
        # each global batch is split across processes: same data per step at any world size
        # non_blocking: batches come from pinned memory on CUDA, so the copy overlaps the previous step
        dataloader_config=DataLoaderConfiguration(split_batches=True, non_blocking=torch.cuda.is_available()),
        kwargs_handlers=[InitProcessGroupKwargs(**pg_kwargs)] if launched() else [],
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # both happen on CPU: Accelerate sees 1 process, or 2 with distributed type NO (no gradient sync)
    if world > 1 and (accelerator.num_processes != world or accelerator.distributed_type == DistributedType.NO):
        raise ConfigError(
            f"launched {world} processes but Accelerate sees {accelerator.num_processes} "
            f"with distributed type {accelerator.distributed_type.value}: each would train alone",
            where="launch command",
            fix="on CPU set ACCELERATE_USE_CPU=1 for DDP (not with DeepSpeed); see README 'Scaling out'",
        )
    if (
        os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        and accelerator.distributed_type != DistributedType.DEEPSPEED
    ):
        raise ConfigError(
            "DeepSpeed was requested but Accelerate did not enable it (ACCELERATE_USE_CPU=1 drops it)",
            where="launch environment",
            fix="unset ACCELERATE_USE_CPU when launching with DeepSpeed",
        )
    return accelerator


def topology(accelerator: Accelerator) -> dict[str, Any]:
    return {
        "num_processes": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "mixed_precision": accelerator.mixed_precision,
        "device": str(accelerator.device),
    }


def peak_memory_bytes() -> dict[str, Any]:
    if torch.cuda.is_available():
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated()), "peak_memory_kind": "cuda_max_allocated"}
    rss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return {"peak_memory_bytes": rss, "peak_memory_kind": "cpu_peak_rss"}


def setup_logging(main: bool) -> None:
    level = logging.INFO if main else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        level=level,
        stream=sys.stdout,
        force=False,
    )
    for name in ("tagtune", "tagtune.data", "tagtune.tracking"):
        logging.getLogger(name).setLevel(level)


# ----------------------------------------------------------------------------------------
# shutdown
# ----------------------------------------------------------------------------------------


# Linux names (comm) of the C++ threads a gloo process group owns; they end only in ~ProcessGroupGloo
COMM_THREAD_NAMES = ("gloo_tcp_loop", "pt_gloo_runloop")

# Set to a file path: each rank appends one JSON line with its gloo threads before and after shutdown (tests).
THREADS_REPORT_ENV = "TAGTUNE_THREADS_REPORT"

# deepspeed.utils.groups globals that hold process groups, and the value each is reset to
_DEEPSPEED_GROUP_GLOBALS: dict[str, Any] = {
    "_WORLD_GROUP": None,
    "_ZERO_PARAM_INTRA_PARALLEL_GROUP": None,
    "_DATA_PARALLEL_GROUP": None,
    "_MODEL_PARALLEL_GROUP": None,
    "_TENSOR_MODEL_PARALLEL_GROUP": None,
    "_EXPERT_PARALLEL_GROUP": {},
    "_EXPERT_DATA_PARALLEL_GROUP": {},
    "_ALL_TO_ALL_GROUP": {},
}


def live_comm_threads() -> list[str]:
    """Names of this process's threads that belong to a gloo process group (empty once all were joined)."""
    names = []
    task_dir = Path("/proc/self/task")
    if not task_dir.is_dir():  # not Linux: nothing to check
        return names
    for task in task_dir.iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended while we looked
            continue
        if name.startswith(COMM_THREAD_NAMES):
            names.append(name)
    return sorted(names)


def _clear_deepspeed_globals() -> None:
    """Drop the module-level references DeepSpeed keeps to the groups and, under ZeRO-3, to the model.

    ZeRO-3 pushes the top module onto parameter_offload.FWD_MODULE_STACK at setup and never pops it (not even
    in engine.destroy()), and caches release plans keyed by its modules; through the parameters'
    ds_process_group either keeps the groups alive.
    """
    groups = sys.modules.get("deepspeed.utils.groups")
    if groups is not None:
        for name, empty in _DEEPSPEED_GROUP_GLOBALS.items():
            if hasattr(groups, name):
                setattr(groups, name, {} if isinstance(empty, dict) else empty)
    offload = sys.modules.get("deepspeed.runtime.zero.parameter_offload")
    stack = getattr(offload, "FWD_MODULE_STACK", None)
    if isinstance(stack, list):
        stack.clear()
    # PartitionedParameterCoordinator.__params_to_release is a method under an unbounded class-level
    # functools.lru_cache: its keys (coordinator, submodule, step) keep every coordinator, hence the engine,
    # the model and the groups, alive for the life of the process.
    coordinator = sys.modules.get("deepspeed.runtime.zero.partitioned_param_coordinator")
    cls = getattr(coordinator, "PartitionedParameterCoordinator", None)
    _clear_lru_cache(getattr(cls, "_PartitionedParameterCoordinator__params_to_release", None))


def _clear_lru_cache(fn: Any) -> None:
    """Clear the functools.lru_cache under `fn`, looking through decorators that keep it in their closure
    (DeepSpeed's instrument_w_nvtx does not set __wrapped__)."""
    for _ in range(4):  # a few decorator layers at most
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()
            return
        cells = getattr(fn, "__closure__", None) or ()
        inner = [c.cell_contents for c in cells if callable(getattr(c, "cell_contents", None))]
        fn = getattr(fn, "__wrapped__", None) or (inner[0] if inner else None)


def _unpin_default_arguments() -> int:
    """Replace every process group held in a function's default arguments by None; returns how many functions.

    Python evaluates a default once, at import, and some libraries declare `group=...WORLD` (DeepSpeed's
    TorchBackend.barrier, torch.distributed.nn.functional, ZeroRedundancyOptimizer): a module imported after
    the default group exists (DDP's constructor imports torch._dynamo, which imports torch.distributed.nn) pins
    that group for the life of the process, out of reach of destroy_process_group(). Once the groups are
    destroyed these defaults are dead anyway, and None means "the default group" to each of them.
    """
    group_type = torch.distributed.ProcessGroup
    unpinned = 0
    for fn in gc.get_objects():
        # the exact type: isinstance() would fall back to obj.__class__, which on some objects warns (torch's
        # deprecated torch.distributed.reduce_op prints a FutureWarning); functions cannot be subclassed
        if type(fn) is not types.FunctionType:
            continue
        defaults, kwdefaults = fn.__defaults__, fn.__kwdefaults__
        if defaults and any(isinstance(d, group_type) for d in defaults):
            fn.__defaults__ = tuple(None if isinstance(d, group_type) else d for d in defaults)
            unpinned += 1
        if kwdefaults and any(isinstance(d, group_type) for d in kwdefaults.values()):
            fn.__kwdefaults__ = {k: None if isinstance(d, group_type) else d for k, d in kwdefaults.items()}
            unpinned += 1
    return unpinned


def shutdown(accelerator: Accelerator) -> list[str]:
    """Destroy the process groups, joining their threads, while the interpreter is fully alive.

    Why (issue 10, `terminate called without an active exception` at exit): destroy_process_group() only
    unregisters a group; a gloo group's C++ threads live until the last reference to it goes. If they are
    still alive when the interpreter finalizes, a worker that drops the last reference to a work holding a
    Python-owned tensor takes the GIL, CPython ends that C++ thread with pthread_exit, and the forced unwind
    through a noexcept frame calls std::terminate (SIGABRT). So every reference must be gone first:
    - the caller drops its model/optimizer/loaders;
    - free_memory() drops the Accelerator's (and destroys a DeepSpeed engine, which still needs the group);
    - DeepSpeed's module globals and ZeRO-3's class-level cache are reset (_clear_deepspeed_globals);
    - groups pinned in library functions' default arguments are released (_unpin_default_arguments);
    - gc collects the cycles, and ~ProcessGroupGloo joins the threads.
    Returns the gloo threads still alive afterwards: empty, unless something new holds a group (warned).
    """
    before = live_comm_threads()
    accelerator.free_memory()
    _clear_deepspeed_globals()
    state = getattr(accelerator, "state", None)
    if state is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        state.destroy_process_group()
    return release_process_groups(before)


def release_process_groups(before: list[str]) -> list[str]:
    """After destroy_process_group(): release the groups pinned in default arguments, collect, and check that
    no gloo thread is left (``before``: those alive before the teardown, for the report). Every process that
    made a group ends through here: the trainer's shutdown and a multi-process `tagtune predict`.
    Writes one line per rank to $TAGTUNE_THREADS_REPORT when set; returns the threads still alive."""
    if torch.distributed.is_available():
        _unpin_default_arguments()
    gc.collect()
    after = live_comm_threads()
    if after:
        logger.warning(
            "process-group threads still alive after shutdown (something still references a group; exit may "
            "abort): %s",
            after,
        )
    report = os.environ.get(THREADS_REPORT_ENV)
    if report:
        line = {"rank": int(os.environ.get("RANK", "0")), "before": before, "after": after}
        with open(report, "a") as f:  # one short line per rank: appends do not interleave
            f.write(json.dumps(line) + "\n")
    return after
