"""Read an offline W&B run file (``run-<id>.wandb``) without the network or a W&B account.

Usage:  python -m tagtune.wandb_offline OUTPUT_DIR_OR_RUN_FILE [--history]

wandb 0.31 ships no offline reader. The file is a LevelDB-log-style record stream: a 7-byte
header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each chunk a 7-byte
header (CRC32 of type byte + data, length, type FULL/FIRST/MIDDLE/LAST) and data; a whole record
is one ``wandb_internal_pb2.Record`` protobuf (history row, config, summary, run, files, exit ...).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import DataError

FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32768
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _chunk_crc(kind: int, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF


def read_record_bytes(path: str | Path) -> Iterator[bytes]:
    """Each complete record's bytes. A record cut off at the end (run still writing or killed) is dropped."""
    path = Path(path)
    data = path.read_bytes()
    if data[: len(FILE_HEADER)] != FILE_HEADER:
        raise DataError(
            "not a W&B run file (bad header)",
            where=str(path),
            fix="pass a run-<id>.wandb file from <output_dir>/wandb/offline-run-*/",
        )
    pos, pending = len(FILE_HEADER), None
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # block trailer padding
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:  # zero-filled rest of a block
            pos += left
            continue
        body = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        if len(body) < length:
            return
        if _chunk_crc(kind, body) != crc:
            raise DataError(
                f"checksum mismatch in chunk at byte {pos}",
                where=str(path),
                fix="the file is corrupt; re-run, or read it with `wandb sync` to recover what it can",
            )
        pos += CHUNK_HEADER + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE and pending is not None:
            pending += body
        elif kind == LAST and pending is not None:
            yield pending + body
            pending = None
        else:
            raise DataError(f"unexpected chunk type {kind} at byte {pos}", where=str(path))


def read_records(path: str | Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in read_record_bytes(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        yield rec


def _key(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _set(d: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def _del(d: dict[str, Any], keys: list[str]) -> None:
    for k in keys[:-1]:
        d = d.get(k, {})
    d.pop(keys[-1], None)


@dataclass
class OfflineRun:
    """What a run recorded: one ``history`` dict per logged step (keys as logged, e.g. ``train/train_loss``),
    the final ``summary`` and ``config`` (updates applied in order), and run metadata."""

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


def _apply(target: dict[str, Any], upd: Any) -> None:
    for item in upd.update:
        _set(target, _key(item), json.loads(item.value_json))
    for item in upd.remove:
        _del(target, _key(item))


def read_run(path: str | Path) -> OfflineRun:
    path = Path(path)
    out = OfflineRun(path=path)
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.run_id, out.project, out.name = r.run_id, r.project, r.display_name
            out.group, out.job_type, out.tags = r.run_group, r.job_type, list(r.tags)
            _apply(out.config, r.config)
        elif kind == "config":
            _apply(out.config, rec.config)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                _set(row, _key(item), json.loads(item.value_json))
            out.history.append(row)
        elif kind == "summary":
            _apply(out.summary, rec.summary)
        elif kind == "files":
            out.files += [f.path for f in rec.files.files]
        elif kind == "exit":
            out.exit_code = rec.exit.exit_code
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
        print(
            json.dumps(
                {
                    "file": str(p),
                    "id": run.run_id,
                    "project": run.project,
                    "name": run.name,
                    "group": run.group,
                    "history_rows": len(run.history),
                    "summary": run.summary,
                },
                indent=2,
                default=str,
            )
        )
        if args.history:
            for row in run.history:
                print(json.dumps(row, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
