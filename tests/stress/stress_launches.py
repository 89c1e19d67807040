"""Stress check for clean exits (issue 10): launch 2-process DeepSpeed (or DDP) smoke runs many times and count
aborts and hangs. Not a pytest module (pytest collects only test_*.py): run it by hand or from CI.

    python tests/stress/stress_launches.py                 # ZeRO-2 and ZeRO-3, 30 launches each, cold caches
    python tests/stress/stress_launches.py --runs 5 --configs deepspeed_zero3 --warm-cache

Each launch is `accelerate launch --config_file accelerate_configs/<config>.yaml --num_processes 2
recipes/smoke.py ...` exactly as the tests run it, with its own empty TAGTUNE_CACHE (unless --warm-cache)
and a timeout. A launch is
  ok     exit 0, results.json written by 2 processes under DeepSpeed
  abort  exit != 0 and 'terminate called' in its stderr (the exit-time abort of issue 10)
  hang   still running at the timeout: the Python stacks of every process of the launch are printed
         (py-spy, and the trainer's own faulthandler dump via TAGTUNE_FAULTHANDLER_TIMEOUT), then its
         processes (launcher and ranks) are killed
  leak   exit 0, but a rank still had gloo threads alive after the trainer's cleanup (TAGTUNE_THREADS_REPORT):
         the condition the abort needs, counted even on the launches where the race did not fire
  fail   any other failure
The script prints one row per launch and a summary, and exits 1 if any launch was not ok.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from offline_env import OFFLINE_ENV, free_port  # noqa: E402

# the same small run as tests/integration/_scaleout_common.py: 4 steps, uneven last eval batch
RECIPE_ARGS = [
    "--per_device_train_batch_size", "8",
    "--max_steps", "4",
    "--max_train_samples", "64",
    "--max_eval_samples", "37",
    "--per_device_eval_batch_size", "4",
    "--report_to", "none",
    "--overwrite_output_dir", "true",
    "--checkpoint_epoch_end", "false",
]  # fmt: skip


@dataclass
class Launch:
    config: str
    index: int
    outcome: str
    returncode: int | None
    seconds: float
    log_dir: Path


def launch_env(cache: Path, faulthandler_s: int) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))
    }
    env.update(OFFLINE_ENV)
    env["TAGTUNE_CACHE"] = str(cache)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    # the trainer dumps every thread's Python stack to stderr if it is still running after this many seconds
    env["TAGTUNE_FAULTHANDLER_TIMEOUT"] = str(faulthandler_s)
    return env


def launch_cmd(config: str, method: str, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), "--num_processes", "2",
        "--config_file", str(ROOT / "accelerate_configs" / f"{config}.yaml"),
        str(ROOT / "recipes" / "smoke.py"), "--method", method, "--output_dir", str(out), *RECIPE_ARGS,
    ]  # fmt: skip


def dump_stacks(pid: int) -> str:
    """py-spy dump of the launcher and every process below it (needs ptrace rights: root or ptrace_scope 0)."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return "(launch already gone)\n"
    if shutil.which("py-spy") is None:
        return "(py-spy not installed: pip install py-spy; see the faulthandler dump in stderr)\n"
    parts = []
    for p in procs:
        try:
            dump = subprocess.run(["py-spy", "dump", "--pid", str(p.pid)], capture_output=True, text=True, timeout=60)
            parts.append(f"--- pid {p.pid}: {' '.join(p.cmdline())[:200]}\n{dump.stdout}{dump.stderr}")
        except (psutil.NoSuchProcess, subprocess.TimeoutExpired) as e:
            parts.append(f"--- pid {p.pid}: no dump ({e})\n")
    return "".join(parts)


def kill_launch(pid: int) -> None:
    """SIGKILL the launcher's process group and every process below it: torch's elastic agent starts each
    rank in a session of its own, so killing the launcher's group alone would leave the ranks running."""
    import psutil

    try:
        ranks = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        ranks = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for p in ranks:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(ranks, timeout=30)


def classify(returncode: int, stderr: str, out: Path, threads: Path, distributed_type: str) -> str:
    if returncode != 0:
        return "abort" if "terminate called" in stderr else "fail"
    results = out / "results.json"
    if not results.is_file():
        return "fail"
    rec = json.loads(results.read_text())
    # a launch that silently ran one process, or dropped DeepSpeed, is not the launch under test
    if rec.get("num_processes") != 2 or rec.get("distributed_type") != distributed_type:
        return "fail"
    ranks = [json.loads(line) for line in threads.read_text().splitlines()] if threads.is_file() else []
    if len(ranks) != 2:
        return "fail"
    return "leak" if any(r["after"] for r in ranks) else "ok"


def run_one(config: str, index: int, method: str, work: Path, timeout: int, warm_cache: Path | None) -> Launch:
    log_dir = work / f"{config}-{index:03d}"
    log_dir.mkdir(parents=True)
    cache = warm_cache or (log_dir / "cache")  # cold: an empty cache of its own
    env = launch_env(cache, faulthandler_s=max(timeout - 15, 5))
    env["TAGTUNE_THREADS_REPORT"] = str(log_dir / "threads.jsonl")
    ddp = config == "multi_gpu"  # CPU DDP over gloo needs ACCELERATE_USE_CPU=1 (see README 'Scaling out')
    if ddp:
        env["ACCELERATE_USE_CPU"] = "1"
    t0 = time.time()
    with open(log_dir / "stdout", "w") as so, open(log_dir / "stderr", "w") as se:
        # its own session: on a timeout the whole launch (launcher + ranks) is killed as one process group
        proc = subprocess.Popen(
            launch_cmd(config, method, log_dir / "out"),
            cwd=ROOT,
            env=env,
            stdout=so,
            stderr=se,
            start_new_session=True,
        )
        try:
            returncode: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stacks = dump_stacks(proc.pid)
            (log_dir / "stacks.txt").write_text(stacks)
            kill_launch(proc.pid)
            proc.wait()
            print(f"HANG {config} #{index} after {timeout}s; Python stacks of every process:\n{stacks}", flush=True)
            return Launch(config, index, "hang", None, time.time() - t0, log_dir)
    stderr = (log_dir / "stderr").read_text(errors="replace")
    expected = "MULTI_CPU" if ddp else "DEEPSPEED"
    outcome = classify(returncode, stderr, log_dir / "out", log_dir / "threads.jsonl", expected)
    if outcome != "ok":
        print(f"{outcome.upper()} {config} #{index} (exit {returncode}); stderr tail:\n{stderr[-3000:]}", flush=True)
    return Launch(config, index, outcome, returncode, time.time() - t0, log_dir)


def summary(launches: list[Launch]) -> str:
    lines = [f"{'config':<18} {'#':>3} {'outcome':<7} {'exit':>5} {'s':>6}  logs"]
    lines += [
        f"{x.config:<18} {x.index:>3} {x.outcome:<7} {str(x.returncode):>5} {x.seconds:>6.1f}  {x.log_dir}"
        for x in launches
    ]
    lines.append("")
    for config in dict.fromkeys(x.config for x in launches):
        mine = [x for x in launches if x.config == config]
        counts = {k: sum(x.outcome == k for x in mine) for k in ("ok", "abort", "hang", "leak", "fail")}
        lines.append(f"{config}: {len(mine)} launches, " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="launches per config (default 30)")
    ap.add_argument(
        "--configs", nargs="+", default=["deepspeed_zero2", "deepspeed_zero3"], help="accelerate_configs/*"
    )
    ap.add_argument("--method", default="lora", choices=["full", "lora"])
    ap.add_argument("--timeout", type=int, default=300, help="seconds per launch before it counts as a hang")
    ap.add_argument("--warm-cache", action="store_true", help="share one pre-built model cache (not the cold start)")
    ap.add_argument("--work-dir", type=Path, help="where logs go (default: a new temporary folder, kept)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tagtune-stress-"))
    warm = None
    if args.warm_cache:
        warm = work / "warm-cache"
        env = launch_env(warm, faulthandler_s=0)
        build = "from tagtune.synthetic import synthetic_model_path as p; p('synthetic:bert')"
        subprocess.run([sys.executable, "-c", build], env=env, check=True, timeout=300)
    launches = []
    for index in range(args.runs):  # interleaved, so a slow-down of the machine hits every config alike
        for config in args.configs:
            x = run_one(config, index, args.method, work, args.timeout, warm)
            print(f"{x.config} #{x.index}: {x.outcome} (exit {x.returncode}, {x.seconds:.0f}s)", flush=True)
            launches.append(x)
    print(summary(launches))
    bad = [x for x in launches if x.outcome != "ok"]
    print(f"{len(bad)} of {len(launches)} launches not ok (logs in {work})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
