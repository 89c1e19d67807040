"""Streamed, optionally multi-process output of `tagtune predict`.

The input is read in chunks (predict_io.InputStream); chunk i is tagged by process i % world_size, and the
output is written as the chunks are tagged, in input order, so memory stays bounded whatever the input's
size. One process writes straight to the output (stdout, or a file renamed into place at the end). Several
processes (`accelerate launch --multi_gpu --num_processes N -m tagtune.cli predict ...`, `torchrun ... -m tagtune.cli predict ...`) each write their chunks to a
part file beside the output; after a barrier, rank 0 joins the parts in input order into the output and
removes them. Nothing is left behind on failure, and an existing output file is replaced only on success.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch

from .errors import ConfigError
from .outputs import atomic_writer


@dataclass
class Shard:
    """This process's place among the processes of a launch (1 and 0 without a launcher)."""

    world_size: int = 1
    rank: int = 0

    @classmethod
    def from_env(cls) -> Shard:
        return cls(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")))

    def owns(self, chunk_index: int) -> bool:
        return chunk_index % self.world_size == self.rank


@contextlib.contextmanager
def process_group(shard: Shard, timeout_s: int = 1800) -> Iterator[None]:
    """A gloo group for the barrier and the word count of a multi-process prediction; none for one."""
    if shard.world_size == 1:
        yield
        return
    import torch.distributed as dist

    from . import runtime

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield
    finally:
        before = runtime.live_comm_threads()
        dist.destroy_process_group()
        runtime.release_process_groups(before)  # threads joined before exit (see runtime.shutdown)


def total(value: int, shard: Shard) -> int:
    """The sum of ``value`` over all processes."""
    if shard.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    torch.distributed.all_reduce(t)
    return int(t.item())


def _index(part: Path) -> Path:
    """The chunk sizes of a part file, written once the part is complete."""
    return part.with_name(part.name + ".index")


@dataclass
class ChunkSink:
    """Where tagged chunks go: write(index, text) in increasing index order per process."""

    output: str
    shard: Shard
    _out: TextIO | None = None
    _sizes: list[int] = field(default_factory=list)  # this process's chunks, in order: characters each

    def part_path(self, rank: int) -> Path:
        out = Path(self.output)
        return out.parent / f".{out.name}.part-{rank}-of-{self.shard.world_size}"

    @property
    def part(self) -> Path:
        return self.part_path(self.shard.rank)

    def write(self, text: str) -> None:
        self._out.write(text)
        self._sizes.append(len(text))
        if self.output == "-":
            self._out.flush()  # a reader at the other end of a pipe sees each chunk as soon as it is tagged

    @contextlib.contextmanager
    def open(self) -> Iterator[ChunkSink]:
        if self.shard.world_size > 1 and self.output == "-":
            raise ConfigError("several processes cannot share stdout", where="--output", fix="give --output FILE")
        if self.shard.world_size == 1:
            if self.output == "-":
                self._out = sys.stdout
                yield self
            else:
                with atomic_writer(self.output) as self._out:
                    yield self
            return
        self.part.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.part, "w", encoding="utf-8") as self._out:
                yield self
            _index(self.part).write_text(json.dumps(self._sizes))
            torch.distributed.barrier()  # every part complete
            if self.shard.rank == 0:
                self._join()
            torch.distributed.barrier()  # rank 0 has read every part
        finally:
            self.part.unlink(missing_ok=True)
            _index(self.part).unlink(missing_ok=True)

    def _join(self) -> None:
        """Rank 0: chunk i is the (i // world)-th chunk of rank i % world's part; copy them in input order."""
        world = self.shard.world_size
        parts = [self.part_path(r) for r in range(world)]
        sizes = [json.loads(_index(p).read_text()) for p in parts]
        files = [open(p, encoding="utf-8") for p in parts]
        try:
            with atomic_writer(self.output) as out:
                for i in range(sum(map(len, sizes))):
                    out.write(files[i % world].read(sizes[i % world][i // world]))
        finally:
            for f in files:
                f.close()
