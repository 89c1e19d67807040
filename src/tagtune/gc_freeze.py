"""Python's garbage collector in a tagtune command: the libraries' objects set aside once they are imported.

A tagtune process imports torch, transformers, accelerate and the rest: some hundreds of thousands of objects
that live until the process ends. Every full collection walks all of them, both the few the collector runs
while a run builds its model and the ones the interpreter runs while it shuts down. On the 2-core CI machine
that was about 2 s of a small run: a 20-step smoke run took 7.9 s from start to exit, 6.0 s with the objects
alive after the imports frozen (`gc.freeze`, after one collection of 0.08 s) and everything frozen again at exit
(docs/performance.md, "Start-up and exit: the garbage collector"). A training step makes no long-lived
objects, so training speed does not change.

Only a command does this, that is an entry point parsing the process's own command line (a recipe's
``main()``, ``tagtune ...``, ``python -m tagtune.cli ...``): there the process ends with the command. A
call with explicit arguments (the Python API, a notebook, the tests) leaves the collector alone, since a
frozen object that later becomes garbage in a cycle is never collected. ``TAGTUNE_GC_FREEZE=0`` turns it off.
"""

from __future__ import annotations

import atexit
import gc
import os

ENV = "TAGTUNE_GC_FREEZE"
_FREEZE_AT_EXIT = False  # the exit hook is registered once per process


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def freeze_imports() -> bool:
    """Collect once, move every object alive now out of the collector's reach, and do the same at exit.

    Called by a command right after its heavy imports and before anything that may hold a process group is
    made, so that no frozen object can keep one alive (runtime.shutdown collects those at the end). Returns
    whether it froze (False when TAGTUNE_GC_FREEZE=0)."""
    global _FREEZE_AT_EXIT
    if not enabled():
        return False
    gc.collect()  # garbage frozen now would never be freed
    gc.freeze()
    if not _FREEZE_AT_EXIT:
        # atexit runs this before the handlers registered earlier (the libraries' own): theirs still run, and
        # the interpreter's final collections then skip every object
        atexit.register(gc.freeze)
        _FREEZE_AT_EXIT = True
    return True
