"""The README is an executable spec: every ```bash block in README.md runs as written, in order, in a
temporary copy of the repository, offline and on CPU, with no set-up commands of its own.

A block that cannot run here says so on the line above its fence, with the reason:
    <!-- spec: skip (needs the Hugging Face hub) -->
Everything else runs, so a README command that stops working fails CI. Blocks run in document order
in one copy (a later block may use what an earlier one wrote, as a reader following along would).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED, run_cmd

FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"<!--\s*spec:\s*skip\s*\(([^)]+)\)\s*-->")
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", ".cache", "outputs", "__pycache__", "*.egg-info", "wandb")


def readme_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, bash source, skip reason or None) of every ```bash block."""
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


BLOCKS = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_runnable_blocks_and_every_skip_names_a_reason():
    runnable = [b for b in BLOCKS if b[2] is None]
    assert len(runnable) >= 8, f"only {len(runnable)} runnable blocks"
    for line, _, reason in BLOCKS:
        assert reason is None or len(reason) > 8, f"README.md:{line}: a skipped block must say why"


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """A copy of the repository beside a link to ../shared, as a clone sits in a checkout."""
    base = tmp_path_factory.mktemp("readme")
    repo = base / "tagtune"
    shutil.copytree(ROOT, repo, ignore=COPY_IGNORE)
    if SHARED.is_dir():
        (base / "shared").symlink_to(SHARED)
    return repo


@pytest.mark.parametrize("line,source", [(ln, src) for ln, src, skip in BLOCKS if skip is None], ids=lambda v: str(v))
def test_readme_block_runs_as_written(line, source, copy):
    if "../shared" in source and not SHARED.is_dir():
        pytest.skip("../shared is not beside this checkout")
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TAGTUNE_CACHE": str(copy / ".cache" / "tagtune"),
        "HOME": str(copy.parent / "home"),  # a new user's empty home: no W&B login, no HF cache
    }
    script = copy / f".readme-block-{line}.sh"
    script.write_text("set -euo pipefail\n" + source + "\n")
    proc = run_cmd(["bash", str(script)], timeout=900, check=False, cwd=copy, **env)
    assert proc.returncode == 0, (
        f"README.md:{line} failed ({proc.returncode}):\n{source}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
        f"--- stderr ---\n{proc.stderr[-4000:]}"
    )
