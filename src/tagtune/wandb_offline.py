"""Read an offline W&B run (``run-<id>.wandb``) back as Python data, through wandb's own reader.

Usage:  python -m tagtune.wandb_offline OUTPUT_DIR_OR_RUN_FILE [--history]

To look at a run, use wandb's tools: ``wandb leet ./wandb`` (terminal viewer of offline runs),
``wandb leet inspect --summary PATH`` (state, latest metrics, config), ``wandb sync PATH``
(upload later). This module only turns ``wandb leet inspect --json`` (one JSON object per
record) and ``wandb leet inspect --summary --json`` into an ``OfflineRun`` with every history
row, the config as logged (``_wandb`` included, which the summary view leaves out), run metadata
and files: what the tests assert on. leet prints nested keys dotted (``eval/confusion_matrix.path``);
they are nested back, so a key logged with a dot in its name would be split too. A run file cut off (killed run) is read up to the cut; a
corrupt one is an error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import DataError


def inspect(path: Path, summary: bool = False, timeout: float = 300) -> str:
    """stdout of ``wandb leet inspect --json [--summary] path``; corruption and failures raise."""
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *(["--summary"] if summary else []), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    corrupt = [ln for ln in proc.stderr.split("wandb leet inspect: ") if "corrupt" in ln]
    if proc.returncode != 0 or corrupt:
        problem = (corrupt or [proc.stderr.strip() or f"exit code {proc.returncode}"])[0].strip()
        raise DataError(
            f"cannot read the W&B run file: {problem}",
            where=str(path),
            fix="pass a run-<id>.wandb file from <output_dir>/wandb/offline-run-*/; a corrupt file can be "
            "browsed with `wandb leet inspect PATH`",
        )
    return proc.stdout


@dataclass
class OfflineRun:
    """What a run recorded: one ``history`` dict per logged step (keys as logged, e.g. ``train/train_loss``),
    the ``summary`` and ``config`` as wandb reports them, and run metadata."""

    path: Path
    run_id: str = ""
    project: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    exit_code: Optional[int] = None

    @property
    def files_dir(self) -> Path:
        return self.path.parent / "files"

    def series(self, key: str) -> dict[int, Any]:
        """step -> value for every history row that holds ``key``."""
        return {int(row["_step"]): row[key] for row in self.history if key in row}


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """leet prints a nested key (a logged image's ``path``, ``_wandb.runtime``) as one dotted key: nest it back."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        d = out
        for k in parents:
            d = d.setdefault(k, {})
        d[last] = _nest(value) if isinstance(value, dict) else value
    return out


def _merge(target: dict[str, Any], update: dict[str, Any]) -> None:
    """A config update: nested dicts (``_wandb.visualize``) merged key by key, not replaced."""
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = v


def read_run(path: str | Path) -> OfflineRun:
    path = Path(path)
    out = OfflineRun(path=path)
    for line in inspect(path).splitlines():
        rec = json.loads(line)
        kind, body = rec.get("type"), rec.get(rec.get("type"), {})
        if kind == "run":
            out.run_id, out.project, out.name = (
                body.get("run_id", ""),
                body.get("project", ""),
                body.get("display_name", ""),
            )
            out.group, out.job_type, out.tags = (
                body.get("run_group", ""),
                body.get("job_type", ""),
                body.get("tags", []),
            )
            _merge(out.config, _nest(body.get("config", {}).get("update", {})))
        elif kind == "config":
            _merge(out.config, _nest(body.get("update", {})))
        elif kind == "history":
            out.history.append(_nest(body.get("item", {})))
        elif kind == "files":
            out.files += [f["path"] for f in body.get("files", [])]
    state = json.loads(inspect(path, summary=True))
    out.summary, out.exit_code = _nest(state.get("summary", {})), state.get("exit_code")
    return out


def find_run_files(root: str | Path) -> list[Path]:
    """Every offline run file under ``root`` (an output_dir, its wandb/ folder, or one run folder)."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(root.glob("**/offline-run-*/run-*.wandb")) or sorted(root.glob("run-*.wandb"))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tagtune.wandb_offline", description=__doc__.split("\n")[0])
    ap.add_argument("path", help="output_dir, its wandb/ folder, an offline-run-* folder or a run-*.wandb file")
    ap.add_argument("--history", action="store_true", help="also print every history row (JSON lines)")
    args = ap.parse_args(argv)
    runs = find_run_files(args.path)
    if not runs:
        print(f"no offline W&B run file under {args.path}", file=sys.stderr)
        return 2
    for p in runs:
        run = read_run(p)
        head = {"file": str(p), "id": run.run_id, "project": run.project, "name": run.name, "group": run.group}
        print(json.dumps({**head, "history_rows": len(run.history), "summary": run.summary}, indent=2, default=str))
        if args.history:
            for row in run.history:
                print(json.dumps(row, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
