"""oneDNN's and ideep's kernel caches, bounded for CPU runs whose batch shapes change from step to step.

On CPU, PyTorch runs bf16 matmuls through oneDNN, by way of its ideep layer. Both keep the kernels
they build in a cache keyed by shape: ideep up to ``LRU_CACHE_CAPACITY`` entries, oneDNN up to
``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, 1,024 each by default. With length-grouped batches nearly
every step brings a sequence length not seen before, so both caches grow for the whole run, by
several MiB per new length. Traced on MiniLM / EWT in bf16 (README, Performance, "Kernel caches"):
58 lengths in 250 steps left 390 MiB of kernels in use and raised peak RSS from 1,334 to 1,886 MiB.

What is reused is one step's kernels: the encoder's layers share their shapes, and so do the
passes of a step. So oneDNN's cache is bounded to 64 entries, which hold a step's kernels with room
to spare (16 were as fast on MiniLM), and ideep's to 1, since oneDNN's cache already holds what
ideep would look up. The speed is the same (measured), without the growth.

Both libraries read these variables once, when they first build a kernel, so the trainer sets them
at set-up and `tagtune predict` before loading the model. They are process-wide, and child
processes inherit them; a second run in the same process finds them already set.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Optional

# (the variables a user may have set, the one this module sets, its value)
CACHES = (
    (("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY"), "ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64"),
    (("LRU_CACHE_CAPACITY",), "LRU_CACHE_CAPACITY", "1"),
)
VARIABLES = tuple(name for names, _, _ in CACHES for name in names)
# what this module set in os.environ, so that a second run in the same process (the Python API, a
# notebook, the tests) does not take its own setting for the user's
_SET_HERE: dict[str, str] = {}


def bound_kernel_caches(environ: Optional[MutableMapping[str, str]] = None) -> str:
    """Bound oneDNN's and ideep's kernel caches, unless the user sized them; returns what was done, for the log."""
    env = os.environ if environ is None else environ
    done, earlier, kept = [], [], []
    for user_names, name, value in CACHES:
        # an empty value counts as unset: the libraries then use their default
        found = next((n for n in user_names if env.get(n)), None)
        if found is None:
            env[name] = value
            done.append(f"{name}={value}")
            if env is os.environ:
                _SET_HERE[name] = value
        elif env is os.environ and _SET_HERE.get(found) == env[found]:
            earlier.append(f"{found}={env[found]}")
        else:
            kept.append(f"{found}={env[found]}")
    said = [f"bounded ({', '.join(done)})"] if done else []
    said += [f"bounded earlier in this process ({', '.join(earlier)})"] if earlier else []
    said += [f"the user's {', '.join(kept)} kept"] if kept else []
    return "; ".join(said) if done or earlier else f"left as is; {said[0]}"
