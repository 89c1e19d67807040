"""With freed memory kept for reuse, a step that frees and re-allocates a large block faults in no fresh
pages; a user's own allocator choice, and a libc other than glibc, are left as they are."""

import json
import platform
import subprocess
import sys

import pytest
from conftest import glibc_default_env

from tagtune import TrainConfig, cpu_malloc
from tagtune.config import parse

STEP_FAULTS = """
import json, resource, sys, torch
from tagtune.cpu_malloc import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "reuse" else "defaults")
def step():  # a 64 MiB block (above glibc's largest mmap threshold) allocated, written and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.zeros(64 * 2**20 // 4)
    x.add_(1)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps([step() for _ in range(30)]))
"""

RELEASE = """
import json, os, torch
from tagtune.cpu_malloc import keep_freed_memory, release_freed_memory
def rss_mib():  # resident pages now
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before_keep = release_freed_memory()
keep_freed_memory()
x = torch.ones(256 * 2**20 // 4)  # written: resident
del x
kept = rss_mib()
released = release_freed_memory()
print(json.dumps([before_keep, released, kept, rss_mib()]))
"""


def _faults(mode: str) -> tuple[str, list[int]]:
    out = subprocess.run(
        [sys.executable, "-c", STEP_FAULTS, mode], capture_output=True, text=True, check=True, env=glibc_default_env()
    ).stdout.split("\n")
    return out[0], json.loads(out[-2])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere nothing is changed")
def test_reused_block_faults_in_no_fresh_pages():
    said, kept = _faults("reuse")
    _, default = _faults("default")
    assert said == "freed memory kept for reuse (mallopt: no mmap, no trim)"
    # 64 MiB is 16,384 small pages or 32 huge ones: glibc's default maps it afresh every step.
    assert min(default) >= 32, default
    # Kept for reuse, the heap grows for the first few steps: torch asks for 64-byte-aligned memory, and
    # glibc's memalign requests the size plus the alignment, a little more than the freed block, until
    # free neighbours merge (3 to 7 steps in 20 probes, at varying points, with address randomisation).
    # After that every step reuses the same pages.
    fresh = [i for i, n in enumerate(kept) if n > 16]
    assert len(fresh) <= 10 and kept[-1] <= 16, kept


def test_a_users_allocator_choice_is_left_as_it_is():
    assert cpu_malloc.keep_freed_memory({"MALLOC_MMAP_THRESHOLD_": "65536"}).startswith("left as is")
    assert cpu_malloc.keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}) == (
        "left as is (GLIBC_TUNABLES is set)"
    )
    assert (
        cpu_malloc.keep_freed_memory({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) == "left as is (LD_PRELOAD is set)"
    )
    assert cpu_malloc._user_allocator({"LD_PRELOAD": "/opt/libfoo.so"}) == ""  # another preload: not an allocator


def test_other_libcs_are_left_as_they_are(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(cpu_malloc.ctypes, "CDLL", lambda *a: pytest.fail("libc loaded on a non-glibc system"))
    assert cpu_malloc.keep_freed_memory({}).startswith("left as is (not glibc")


def test_on_by_default_and_off_from_the_command_line():
    base = ["--model_name_or_path", "m", "--train_file", "t.conllu"]
    assert TrainConfig(model_name_or_path="m", train_file="t.conllu").cpu_malloc_reuse is True
    assert parse(TrainConfig, base + ["--cpu_malloc_reuse", "false"]).cpu_malloc_reuse is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere nothing is changed")
def test_kept_memory_goes_back_when_released():
    """The trainer releases the kept heap before each evaluation: a freed 256 MiB block, still resident
    while kept, leaves the process; before keep_freed_memory there is nothing of ours to release."""
    out = subprocess.run(
        [sys.executable, "-c", RELEASE], capture_output=True, text=True, check=True, env=glibc_default_env()
    )
    before_keep, released, kept_mib, after_mib = json.loads(out.stdout.split("\n")[-2])
    assert before_keep is False and released is True
    assert kept_mib - after_mib >= 200, (kept_mib, after_mib)
