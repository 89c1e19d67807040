"""Shared test set-up: offline environment, a shared cache for the synthetic models, and helpers
to run recipes in-process or through a real `accelerate launch`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from offline_env import OFFLINE_ENV, free_port

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EWT = SHARED / "data" / "ud_english_ewt"

os.environ.update(OFFLINE_ENV)
os.environ.setdefault("TAGTUNE_CACHE", str(ROOT / ".cache" / "tagtune"))
# DeepSpeed's native ops are compiled once and reused by every test and CI run
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))


def subprocess_env(**extra: str) -> dict[str, str]:
    from tagtune.onednn_cache import VARIABLES

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "ACCELERATE_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_", "WANDB_SERVICE"))
        # an in-process run (smoke_run) sets these in this process: a child would take them for the user's
        and k not in VARIABLES
    }
    env.update(OFFLINE_ENV)
    env.update(extra)
    return env


def glibc_default_env(**extra: str) -> dict[str, str]:
    """subprocess_env without this shell's own allocator settings: a child starts from glibc's defaults."""
    from tagtune.cpu_malloc import USER_ALLOCATOR_VARS

    return {k: v for k, v in subprocess_env(**extra).items() if k not in (*USER_ALLOCATOR_VARS, "LD_PRELOAD")}


def run_cmd(
    cmd: list[str], timeout: int = 600, check: bool = True, cwd: Path = ROOT, **env_extra: str
) -> subprocess.CompletedProcess:
    """Run a command with a timeout; on failure show its output in the assertion message.

    A hang is made diagnosable: the children get TAGTUNE_FAULTHANDLER_TIMEOUT (the trainer then dumps every
    thread's Python stack to stderr shortly before the timeout), and on the timeout itself the whole
    process group gets SIGUSR1 (the trainer dumps its stacks again) and is then killed, so no orphaned
    rank outlives the test; the stacks are in the assertion message.
    """
    env = subprocess_env(**env_extra)
    env.setdefault("TAGTUNE_FAULTHANDLER_TIMEOUT", str(max(timeout - 20, 10)))
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGUSR1, 3), (signal.SIGKILL, 0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            time.sleep(wait)
        out, err = proc.communicate()
        raise AssertionError(
            f"command timed out after {timeout} s (stacks of every process below): {' '.join(cmd)}\n"
            f"--- stdout ---\n{out[-6000:]}\n--- stderr ---\n{err[-12000:]}"
        ) from None
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout ---\n{out[-6000:]}\n--- stderr ---\n{err[-6000:]}"
        )
    return result


def accelerate_launch(
    script: str,
    args: list[str],
    num_processes: int = 1,
    cpu_ddp: bool = False,
    extra_launch: list[str] | None = None,
    timeout: int = 600,
    check: bool = True,
    **env_extra: str,
) -> subprocess.CompletedProcess:
    """`accelerate launch` exactly as a user types it. cpu_ddp: the CPU DDP launch that really distributes."""
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "--num_processes",
        str(num_processes),
    ]
    if cpu_ddp:
        launch += ["--multi_gpu"]
        env_extra.setdefault("ACCELERATE_USE_CPU", "1")
    launch += list(extra_launch or [])
    return run_cmd(launch + [str(ROOT / script)] + args, timeout=timeout, check=check, **env_extra)


FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"<!--\s*spec:\s*skip\s*\(([^)]+)\)\s*-->")


def readme_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, bash source, skip reason or None) of every ```bash block of a README."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m.group(1) in ("bash", "sh", "shell"):
            start = i
            body = []
            i += 1
            while i < len(lines) and not FENCE.match(lines[i]):
                body.append(lines[i])
                i += 1
            prev = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
            skip = SKIP.search(prev)
            blocks.append((start + 1, "\n".join(body), skip.group(1) if skip else None))
        i += 1
    return blocks


README_BLOCKS = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))


def readme_block(first_line: str) -> tuple[int, str]:
    """The README's one ```bash block whose first line starts with ``first_line``: (line number, source).
    A test that runs a README block itself (its outputs checked there) finds it with this."""
    found = [(ln, src) for ln, src, _ in README_BLOCKS if src.startswith(first_line)]
    assert len(found) == 1, f"{len(found)} README blocks start with {first_line!r}"
    return found[0]


def run_readme_block(line: int, source: str, cwd: Path, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    """A README block as a reader runs it: bash with set -euo pipefail, in ``cwd``, this environment's
    commands (tagtune, accelerate) first on PATH; fails with the block's output."""
    script = cwd / f".readme-block-{line}.sh"
    script.write_text("set -euo pipefail\n" + source + "\n")
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    proc = run_cmd(["bash", str(script)], timeout=timeout, check=False, cwd=cwd, **{"PATH": path, **env})
    assert proc.returncode == 0, (
        f"README.md:{line} failed ({proc.returncode}):\n{source}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
        f"--- stderr ---\n{proc.stderr[-4000:]}"
    )
    return proc


def read_json(path: Path):
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def synthetic_bert() -> str:
    from tagtune.synthetic import synthetic_model_path

    return synthetic_model_path("synthetic:bert")


@pytest.fixture(scope="session")
def synthetic_roberta() -> str:
    from tagtune.synthetic import synthetic_model_path

    return synthetic_model_path("synthetic:roberta")


def tiny_sdpa_bert(seed: int = 0):
    """A 2-layer BERT token classifier with SDPA attention and attention dropout 0.3 (hidden dropout 0), random
    weights from ``seed``: the model the attention-function tests mark and run."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        attention_probs_dropout_prob=0.3,
        hidden_dropout_prob=0.0,
        num_labels=3,
        attn_implementation="sdpa",
    )
    return BertForTokenClassification(cfg)


def tiny_sdpa_batch(length: int = 9):
    """Input ids and attention mask for ``tiny_sdpa_bert``: 3 sentences of ``length``, the second padded by 3
    (so the bool attention mask path runs)."""
    import torch

    ids = torch.randint(5, 50, (3, length))
    mask = torch.ones(3, length, dtype=torch.long)
    mask[1, length - 3 :] = 0
    return ids, mask


def smoke_recipe() -> type:
    """The ``Smoke`` recipe class of recipes/smoke.py (recipes are scripts, not a package)."""
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        from smoke import Smoke
    finally:
        sys.path.pop(0)
    return Smoke


def smoke_config(out: Path, **overrides: Any):
    """The smoke recipe's config for an in-process ``TrainingRecipe`` writing into ``out`` (no tracker)."""
    return smoke_recipe()(output_dir=str(out), overwrite_output_dir=True, report_to="none", **overrides)


def train_smoke(out: Path, *args: str) -> Path:
    """Train recipes/smoke.py in-process into ``out`` with extra CLI overrides."""
    from tagtune import main

    main(smoke_recipe(), ["--output_dir", str(out), "--overwrite_output_dir", "true", "--report_to", "none", *args])
    return out


def model_recording(run: Path, dest: Path, key: str, value: Any) -> Any:
    """Copy ``run``'s model folder to ``dest`` with ``key`` of its tagtune_config.json set to ``value`` (None: the
    key removed, as in a run saved before the setting existed); returns what the run recorded."""
    import shutil

    from tagtune.tagger import CONFIG_FILE, find_model_dir

    shutil.copytree(find_model_dir(run), dest)
    cfg = read_json(dest / CONFIG_FILE)
    recorded = cfg.pop(key)
    if value is not None:
        cfg[key] = value
    (dest / CONFIG_FILE).write_text(json.dumps(cfg))
    return recorded


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One smoke training (synthetic BERT, 4 epochs, ~10 s) shared by tests that need a trained model."""
    return train_smoke(tmp_path_factory.mktemp("smoke_run"))


def pytest_configure(config):
    # kept here, not in a pytest.ini: the top level of the repository is fixed
    for line in ("ignore::DeprecationWarning", "ignore::FutureWarning"):
        config.addinivalue_line("filterwarnings", line)
