"""The README is an executable spec: every ```bash block in README.md runs as written, in order, in a
temporary copy of the repository, offline and on CPU, with no set-up commands of its own.

A block that cannot run here says so on the line above its fence, with the reason:
    <!-- spec: skip (needs the Hugging Face hub) -->
A block whose outputs a test checks is run by that test, as written, and says so the same way:
    <!-- spec: skip (tests/integration/test_reproduce.py runs this block as written and checks its report) -->
Everything else runs, so a README command that stops working fails CI. Blocks run in document order
in one copy (a later block may use what an earlier one wrote, as a reader following along would).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import README_BLOCKS, ROOT, SHARED, run_readme_block

BLOCKS = README_BLOCKS
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", ".cache", "outputs", "__pycache__", "*.egg-info", "wandb")
# a block that a test runs itself, as written, and checks the outputs of: "<!-- spec: skip (tests/x.py runs this
# block as written ...) -->" above it, and that test finds it with conftest.readme_block("<its first words>")
RUN_BY = re.compile(r"(tests/[\w/]+\.py) runs this block as written")


def test_the_readme_has_runnable_blocks_and_every_skip_names_a_reason():
    runnable = [b for b in BLOCKS if b[2] is None]
    assert len(runnable) >= 8, f"only {len(runnable)} runnable blocks"
    for line, _, reason in BLOCKS:
        assert reason is None or len(reason) > 8, f"README.md:{line}: a skipped block must say why"


def test_blocks_run_by_a_test_are_run_there():
    """A block skipped here because a test runs it must really be found and run by that test."""
    delegated = [
        (line, src, RUN_BY.search(reason)) for line, src, reason in BLOCKS if reason and RUN_BY.search(reason)
    ]
    assert len(delegated) >= 2, delegated
    for line, source, m in delegated:
        test_file = ROOT / m.group(1)
        calls = re.findall(r"readme_block\(\s*\"([^\"]+)\"", test_file.read_text(encoding="utf-8"))
        assert any(source.startswith(prefix) for prefix in calls), (
            f"README.md:{line} says {m.group(1)} runs it, but that file finds no block that starts so: {calls}"
        )


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
    run_readme_block(
        line,
        source,
        copy,
        TAGTUNE_CACHE=str(copy / ".cache" / "tagtune"),
        HOME=str(copy.parent / "home"),  # a new user's empty home: no W&B login, no HF cache
    )
