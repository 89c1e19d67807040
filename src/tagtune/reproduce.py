"""`tagtune reproduce`: the study's grid (models x methods x seeds) in one resumable command, then one report.

Usage:  tagtune reproduce [--seeds 3] [--models bert-base-cased roberta-base] [--methods full lora]
                          [--lora_init pretrained|from_full_run|both] [--accelerate_config FILE|none]
                          [--out outputs/reproduce] [--dry-run] [data flags] [-- extra recipe flags]

Each run is `accelerate launch --config_file CONFIG recipes/<family>_<method>.py --seed S --output_dir ...`
(`python recipes/...` with --accelerate_config none), so it trains with the recipe's (= the study's)
hyperparameters. A run whose results.json exists is skipped; an unfinished one continues from its last
checkpoint (--resume_from_checkpoint latest). SIGTERM/Ctrl-C stop the running training at a step boundary
with a checkpoint; rerunning the same command continues. The report is `tagtune report --compare-study`
over every run, its tables also logged to one W&B summary run of the reproduction's group.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .checkpoint import PREEMPTED_EXIT_CODE, list_checkpoints
from .errors import ConfigError
from .report import model_family, short_name

REPO = Path(__file__).resolve().parents[2]  # a source checkout: recipes/ and accelerate_configs/ live here
DEFAULT_ACCELERATE_CONFIG = "accelerate_configs/single_t4_fp16.yaml"
STUDY_MODELS = ("bert-base-cased", "roberta-base")
LORA_INITS = ("pretrained", "from_full_run", "both")

# Dry-run estimate when no step time has been measured (an assumption, printed as such):
# 6 x parameters x sub-tokens per optimizer step (4 x for LoRA: frozen weights get no weight gradient),
# at ASSUMED_MFU of the T4's 65 TFLOPS fp16 peak (tagtune.bench.PEAK_TFLOPS).
ASSUMED_MFU = 0.10
ASSUMED_SUBTOKENS_PER_SENTENCE = 32  # CoNLL-2000 / WSJ sentences: ~24 words, ~1.3 sub-tokens a word
KNOWN_PARAMS = {"bert": 108_051_504, "roberta": 124_386_864}  # unique counts from the seed report
KNOWN_TRAIN_SENTENCES = {"batterydata/pos_tagging": 13_054}


@dataclass
class PlannedRun:
    name: str
    recipe: Path
    model: str  # what the run starts from (a full run's model folder for from_full_run)
    base_model: str
    method: str
    init: str
    seed: int
    dir: Path
    after: Optional[Path] = None  # the full run this one starts from

    @property
    def family(self) -> str:
        return model_family(self.base_model)


def recipe_for(model: str, method: str, recipes_dir: Path) -> Path:
    """recipes/<family>_<method>.py; a model of another family uses the BERT recipe (same hyperparameters)."""
    family = model_family(model)
    path = recipes_dir / f"{family if family in ('bert', 'roberta') else 'bert'}_{method}.py"
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}", where="--recipes_dir", fix="run from a tagtune checkout")
    return path


def plan(
    models: Sequence[str], methods: Sequence[str], seeds: Sequence[int], lora_init: str, out: Path, recipes_dir: Path
) -> list[PlannedRun]:
    """Every run of the grid, full runs first (a from_full_run LoRA run needs its full run's model)."""
    inits = ["pretrained", "from_full_run"] if lora_init == "both" else [lora_init]
    if "from_full_run" in inits and "full" not in methods:
        raise ConfigError(
            "--lora_init from_full_run needs the full runs to start from",
            where="--methods",
            fix="add 'full' to --methods, or use --lora_init pretrained",
        )
    runs: list[PlannedRun] = []
    for method in sorted(methods, key=lambda m: m != "full"):
        for init in inits if method == "lora" else ["pretrained"]:
            for model in models:
                for seed in seeds:
                    tag = "" if method == "full" else f"-{init}"
                    name = f"{model_family(model)}_{method}-{short_name(model)}{tag}-seed{seed}"
                    after = None
                    start = model
                    if init == "from_full_run":
                        after = out / "runs" / f"{model_family(model)}_full-{short_name(model)}-seed{seed}"
                        start = str(after / "model")
                    recipe = recipe_for(model, method, recipes_dir)
                    runs.append(PlannedRun(name, recipe, start, model, method, init, seed, out / "runs" / name, after))
    return runs


def status(run_dir: Path) -> str:
    """finished (results.json) | resume (a complete checkpoint) | restart (started, no checkpoint) | new."""
    if (run_dir / "results.json").is_file():
        return "finished"
    if list_checkpoints(run_dir):
        return "resume"
    return "restart" if (run_dir / "run_config.json").is_file() else "new"


def launch_prefix(accelerate_config: str) -> list[str]:
    if accelerate_config == "none":
        return [sys.executable]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config]


def train_args(run: PlannedRun, group: str, passthrough: Sequence[str]) -> list[str]:
    """The recipe's flags: seed, folder, model, W&B group; resume from the latest checkpoint when there is one
    (overwrite only ever clears this run's own unfinished folder: finished runs are never launched)."""
    return [
        str(run.recipe),
        "--seed",
        str(run.seed),
        "--output_dir",
        str(run.dir),
        "--model_name_or_path",
        run.model,
        "--run_group",
        group,
        "--run_name",
        f"{group}-{run.name}",
        "--resume_from_checkpoint",
        "latest",
        "--overwrite_output_dir",
        "true",
        *passthrough,
    ]


# ----------------------------------------------------------------------------------------
# dry-run estimate
# ----------------------------------------------------------------------------------------


def measured_step_times(runs: Sequence[PlannedRun]) -> dict[tuple[str, str], tuple[float, str]]:
    """(family, method) -> (wall seconds per optimizer step incl. evaluation and saving, where) from finished runs."""
    found: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for r in runs:
        p = r.dir / "results.json"
        if not p.is_file():
            continue
        res = json.loads(p.read_text(encoding="utf-8"))
        if res.get("global_steps") and res.get("wall_time_s"):
            where = f"{res.get('device', '?')}, {res.get('mixed_precision', '?')}"
            found.setdefault((r.family, r.method), []).append((res["wall_time_s"] / res["global_steps"], where))
    return {k: (sum(t for t, _ in v) / len(v), v[0][1]) for k, v in found.items()}


def assumed_step_time(family: str, method: str, batch_size: int = 16) -> Optional[float]:
    from .bench_report import peak_flops

    params = KNOWN_PARAMS.get(family)
    peak, _ = peak_flops("T4", "fp16")
    if params is None or peak is None:
        return None
    flops = (6 if method == "full" else 4) * params * batch_size * ASSUMED_SUBTOKENS_PER_SENTENCE
    return flops / (peak * ASSUMED_MFU)


def steps_per_run(dataset: Optional[str], max_train: Optional[int], max_steps: Optional[int], epochs: float = 3.0):
    if max_steps and max_steps > 0:
        return max_steps
    n = KNOWN_TRAIN_SENTENCES.get(dataset or "")
    if n is None:
        return None
    return math.ceil(epochs * math.ceil(min(n, max_train or n) / 16))


def estimate_lines(runs: Sequence[PlannedRun], steps: Optional[int], step_time_s: Optional[float]) -> list[str]:
    """Per unfinished run: optimizer steps x seconds per step; each source of a step time is named once."""
    measured = measured_step_times(runs)
    total, lines, unknown, sources = 0.0, [], 0, {}
    for r in runs:
        if status(r.dir) == "finished":
            continue
        if step_time_s:
            t, src = step_time_s, "given with --step_time_s"
        elif (r.family, r.method) in measured:
            t, where = measured[(r.family, r.method)]
            src = f"measured: wall time per step of this reproduction's finished runs on {where}"
        else:
            t = assumed_step_time(r.family, r.method)
            src = (
                f"assumed, not measured: 6 (LoRA 4) x parameters FLOPs a sub-token, "
                f"{ASSUMED_SUBTOKENS_PER_SENTENCE} sub-tokens a sentence, {ASSUMED_MFU:.0%} of a T4's 65 TFLOPS fp16; "
                "training steps only"
            )
        if t is None or steps is None:
            unknown += 1
            lines.append(f"  {r.name}: unknown (no step count or step time; pass --max_steps / --step_time_s)")
            continue
        key = sources.setdefault(src, f"[{len(sources) + 1}]")
        total += steps * t
        lines.append(f"  {r.name}: {steps} steps x {t:.3f} s = {steps * t / 60:.1f} min {key}")
    lines += [f"  {key} {src}" for src, key in sources.items()]
    lines.append(f"estimated time left: {total / 3600:.2f} GPU-hours" + (f" (+{unknown} unknown)" if unknown else ""))
    return lines


# ----------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------


class Interrupt:
    """SIGTERM/SIGINT while a training runs: pass the signal to its process group (launcher and trainer), whose
    handler saves a checkpoint at the next step boundary and exits 75; this command then stops too."""

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self.pgid: Optional[int] = None

    def __enter__(self) -> Interrupt:
        self.before = {s: signal.signal(s, self.handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self.before.items():
            signal.signal(s, h)

    def handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum).name
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signum)
            except ProcessLookupError:
                pass


def wait_group(pgid: int, timeout_s: float = 600.0) -> None:
    """Wait until every process of the group has exited (an orphaned trainer still writing its checkpoint)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def execute(cmd: list[str], log: Path, stop: Interrupt, timeout_s: Optional[float]) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        stop.pgid = proc.pid
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            rc = proc.wait()
        finally:
            wait_group(proc.pid)
            stop.pgid = None
    return rc


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def run_grid(
    runs: Sequence[PlannedRun],
    prefix: list[str],
    group: str,
    passthrough: list[str],
    out: Path,
    timeout_s: Optional[float],
) -> int:
    """Run what is not finished, in order. 0 = all finished, 75 = interrupted (rerun to continue), 1 = a run failed."""
    with Interrupt() as stop:
        for i, r in enumerate(runs, 1):
            state = status(r.dir)
            if state == "finished":
                print(f"[{i}/{len(runs)}] skip (finished): {r.name}", flush=True)
                continue
            if r.after is not None and status(r.after) != "finished":
                print(f"[{i}/{len(runs)}] cannot start {r.name}: its full run {r.after} is not finished", flush=True)
                return 1
            what = {"resume": "resume from checkpoint", "restart": "restart (no checkpoint yet)", "new": "start"}[
                state
            ]
            ckpts = list_checkpoints(r.dir)
            at = f" {ckpts[-1][1].name}" if state == "resume" else ""
            print(f"[{i}/{len(runs)}] {what}{at}: {r.name}", flush=True)
            cmd = prefix + train_args(r, group, passthrough)
            log = out / "logs" / f"{r.name}.log"
            t0 = time.time()
            rc = execute(cmd, log, stop, timeout_s)
            if stop.received or rc == PREEMPTED_EXIT_CODE:
                print(
                    f"interrupted ({stop.received or 'trainer preempted'}) during {r.name}: its checkpoint is kept; "
                    "run the same command again to continue",
                    flush=True,
                )
                return PREEMPTED_EXIT_CODE
            if rc != 0 or status(r.dir) != "finished":
                print(f"run {r.name} failed (exit {rc}); log {log}:\n{_tail(log)}", file=sys.stderr, flush=True)
                return 1
            print(f"    done in {time.time() - t0:.0f} s: {r.dir}", flush=True)
    return 0


def write_report(runs: Sequence[PlannedRun], out: Path, group: str, project: Optional[str]) -> Path:
    """`tagtune report --compare-study` over every run into out/report; project None: no W&B summary run."""
    from .report import build_report, load_runs
    from .study_compare import compare_study

    loaded = load_runs([r.dir for r in runs])
    report_dir = out / "report"
    path = build_report(loaded, report_dir)
    compare_study(loaded, report_dir, path, group if project else None, project or "tagtune")
    return path


# ----------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------


def find_path(value: str, what: str) -> Path:
    """A path as given, else relative to the tagtune checkout."""
    for p in (Path(value), REPO / value):
        if p.exists():
            return p
    raise ConfigError(f"{what} not found: {value}", where=f"--{what}", fix="give an existing path")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tagtune reproduce", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--out", default="outputs/reproduce", help="folder for runs/, logs/ and report/ (default %(default)s)"
    )
    ap.add_argument("--seeds", type=int, default=3, help="seeds per cell (default %(default)s)")
    ap.add_argument("--first_seed", type=int, default=42, help="seeds are first_seed, first_seed+1, ...")
    ap.add_argument("--models", nargs="+", default=list(STUDY_MODELS), help="hub ids, folders or synthetic:<arch>")
    ap.add_argument("--methods", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    ap.add_argument(
        "--lora_init",
        default="pretrained",
        choices=LORA_INITS,
        help="where LoRA starts: pretrained (clean), from_full_run (the full run's weights, same model and seed: "
        "what the study's epoch-1 losses suggest) or both",
    )
    ap.add_argument(
        "--accelerate_config", default=DEFAULT_ACCELERATE_CONFIG, help="accelerate config file, or 'none' for `python`"
    )
    ap.add_argument("--recipes_dir", default="recipes", help="folder of bert_full.py ... roberta_lora.py")
    ap.add_argument("--run_group", default=None, help="W&B group of every run (default: reproduce-<out folder name>)")
    ap.add_argument("--project", default="tagtune", help="W&B project of every run and of the summary run")
    ap.add_argument("--no_wandb_summary", action="store_true", help="do not log the report's tables to W&B")
    for flag in ("dataset_name", "train_file", "validation_file", "test_file", "eval_split"):
        ap.add_argument(f"--{flag}", default=None, help="passed to every run (default: the recipe's)")
    for flag in ("max_train_samples", "max_eval_samples", "max_steps", "checkpointing_steps"):
        ap.add_argument(f"--{flag}", type=int, default=None, help="passed to every run")
    ap.add_argument("--step_time_s", type=float, default=None, help="dry run: seconds per step to estimate with")
    ap.add_argument(
        "--run_timeout_s", type=float, default=None, help="stop a run that takes longer (it keeps its checkpoint)"
    )
    ap.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the plan and a time estimate only")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more recipe flags for every run")
    return ap


def passthrough_args(args: argparse.Namespace) -> list[str]:
    out = []
    if args.train_file and not args.dataset_name:
        out += ["--dataset_name", ""]  # the recipes name the hub dataset
    for flag in (
        "project",
        "dataset_name",
        "train_file",
        "validation_file",
        "test_file",
        "eval_split",
        "max_train_samples",
        "max_eval_samples",
        "max_steps",
        "checkpointing_steps",
    ):
        if getattr(args, flag) is not None:
            out += [f"--{flag}", str(getattr(args, flag))]
    extra = list(args.extra or [])
    return out + (extra[1:] if extra[:1] == ["--"] else extra)


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: must be >= 1", where="--seeds")
    out = Path(args.out)
    recipes_dir = find_path(args.recipes_dir, "recipes_dir")
    prefix = launch_prefix(
        "none" if args.accelerate_config == "none" else str(find_path(args.accelerate_config, "accelerate_config"))
    )
    seeds = [args.first_seed + i for i in range(args.seeds)]
    runs = plan(args.models, args.methods, seeds, args.lora_init, out, recipes_dir)
    group = args.run_group or f"reproduce-{out.resolve().name}"
    passthrough = passthrough_args(args)
    print(f"reproduce: {len(runs)} runs, W&B group '{group}', launch: {' '.join(prefix)} RECIPE ...", flush=True)
    if args.dry_run:
        for r in runs:
            print(f"  [{status(r.dir)}] {' '.join(prefix + train_args(r, group, passthrough))}")
        steps = steps_per_run(args.dataset_name or "batterydata/pos_tagging", args.max_train_samples, args.max_steps)
        if args.train_file and not args.max_steps:
            steps = None
        print("\n".join(estimate_lines(runs, steps, args.step_time_s)))
        return 0
    rc = run_grid(runs, prefix, group, passthrough, out, args.run_timeout_s)
    if rc != 0:
        return rc
    path = write_report(runs, out, group, None if args.no_wandb_summary else args.project)
    print(f"reproduce: report {path}", flush=True)
    return 0
