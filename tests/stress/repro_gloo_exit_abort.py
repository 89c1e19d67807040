"""Minimal reproducer: `terminate called without an active exception` at exit with gloo (tagtune issue 10).

Each rank issues async all_reduces on tensors created in Python and exits without waiting. The Python
objects die at once, so each TensorImpl keeps (owns) its PyObject; gloo's worker threads finish the works
during interpreter finalization and drop the last reference: TensorImpl::decref_pyobject takes the GIL,
CPython ends that C++ thread with pthread_exit, and the forced unwind through the worker's noexcept frames
calls std::terminate -> SIGABRT.
REPRO_FIX=1: destroy the process group (no reference left) and gc before exit: ~ProcessGroupGloo waits for
the works and joins its threads while the interpreter is alive.
"""

import gc
import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
works = [dist.all_reduce(torch.ones(1 << 18), async_op=True) for _ in range(int(os.environ.get("REPRO_WORKS", "100")))]
del works
if os.environ.get("REPRO_FIX") == "1":
    dist.destroy_process_group()
    gc.collect()
    threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    print(f"rank {os.environ['RANK']}: gloo threads left: {[t for t in threads if 'gloo' in t]}", flush=True)
print(f"rank {os.environ['RANK']} leaving", flush=True)
