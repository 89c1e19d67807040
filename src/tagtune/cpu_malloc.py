"""glibc malloc, tuned for CPU training and predict: freed memory stays in the process for the next step or batch.

By default glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and
returns it to the kernel on free. A training step frees and re-allocates the same large blocks every
step (the dense word-embedding gradient of MiniLM alone is 30,522 x 384 x 4 bytes = 45 MiB), so each
step faults in, and the kernel zeroes, thousands of fresh pages. With large blocks served from the
heap and no trimming, the next step reuses the same pages: measured in the README (Performance,
"Malloc reuse"), 8% more bf16 training sub-tokens/s at the same peak RSS. It is the reuse that
jemalloc or tcmalloc bring when preloaded (as torch.backends.xeon.run_cpu does), through glibc's own
``mallopt``. The heap then keeps its peak size until ``release_freed_memory`` hands its free pages
back (the trainer does so before each evaluation, so that the metric libraries and the evaluation's
own memory reuse those pages instead of adding to the peak).

`tagtune predict` and `tagtune evaluate` keep freed memory too (``--cpu_malloc_reuse``). They make one
pass over their input, so glibc meets every batch's large blocks for the first time: its dynamic mmap
threshold has not yet risen to their size, and each is mapped and faulted in afresh. Kept, the next
batch reuses the pages: 0.13M page faults instead of 0.39M, and 1.19x bf16 predict over EWT dev at the
same peak RSS (docs/performance.md, "Malloc reuse in predict").
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes an int: the largest trim threshold it accepts, 2 GiB - 1 ("never trim" in practice)
KEEP_TRIM_THRESHOLD = 2**31 - 1
# a user who tuned the allocator (glibc's variables) or replaced it (a preloaded malloc) keeps that choice
USER_ALLOCATOR_VARS = ("GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


# set once keep_freed_memory has told glibc to keep the heap: only then is there anything for
# release_freed_memory to hand back that glibc would not have returned by itself
_KEEPING = False


def _user_allocator(environ: dict[str, str]) -> str:
    """The user's own allocator setting, if any (empty when there is none)."""
    for name in USER_ALLOCATOR_VARS:
        if name in environ:
            return name
    preload = environ.get("LD_PRELOAD", "")
    return "LD_PRELOAD" if any(lib in preload for lib in ("jemalloc", "tcmalloc", "mimalloc")) else ""


def keep_freed_memory(environ: dict[str, str] | None = None) -> str:
    """Serve large blocks from the heap (no mmap) and never trim it; returns what was done, for the log.

    Only glibc has ``mallopt``: elsewhere (musl, macOS, Windows) the allocator is left as it is, as it is
    when the user set glibc's malloc variables or preloaded another malloc. The settings are
    process-wide and apply to blocks allocated from then on.
    """
    libc = platform.libc_ver()[0]  # reads the interpreter's binary: once
    if platform.system() != "Linux" or libc != "glibc":
        return f"left as is (not glibc: {platform.system()} {libc or 'unknown libc'})"
    user = _user_allocator(dict(os.environ) if environ is None else environ)
    if user:
        return f"left as is ({user} is set)"
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    no_mmap = mallopt(M_MMAP_MAX, 0) == 1
    no_trim = mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD) == 1
    if no_mmap and no_trim:
        global _KEEPING
        _KEEPING = True
        return "freed memory kept for reuse (mallopt: no mmap, no trim)"
    return f"partly left as is (mallopt accepted: no mmap {no_mmap}, no trim {no_trim})"


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the kernel (glibc ``malloc_trim(0)``); True if it did.

    Only after ``keep_freed_memory`` in this process: with glibc's own settings the heap trims itself.
    The pages still in use stay; the next training step faults the freed ones in once more.
    """
    if not _KEEPING:
        return False
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
