"""runtime.shutdown really destroys a gloo process group (its threads joined) even when a library pinned it.

The exit abort of issue 10 needs gloo threads alive while the interpreter finalizes; they live as long as
anything references the group. These tests pin a group the two ways found in the stack (a function default
evaluated after the group existed, as torch.distributed.nn.functional and DeepSpeed's TorchBackend.barrier
do; an lru_cache keyed by objects that hold it, as ZeRO-3's coordinator does) and check that shutdown
leaves no gloo thread. Each runs in a fresh process: a process group is process-global state.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PRELUDE = textwrap.dedent(
    """
    import functools, gc, json, os, tempfile
    import torch, torch.distributed as dist
    from tagtune import runtime

    class FakeState:  # what runtime.shutdown uses of accelerator.state
        def destroy_process_group(self):
            dist.destroy_process_group()

    class FakeAccelerator:
        state = FakeState()
        def free_memory(self):
            pass

    store = os.path.join(tempfile.mkdtemp(), "store")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    dist.all_reduce(torch.ones(4))
    """
)


def launch(body: str, *python_flags: str) -> tuple[dict, str]:
    """Run PRELUDE + body in a fresh interpreter; returns the JSON of its last stdout line, and its stderr."""
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, *python_flags, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return __import__("json").loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def run(body: str) -> dict:
    return launch(body)[0]


def test_a_group_pinned_in_a_default_argument_is_released():
    got = run(
        """
        def barrier(group=dist.group.WORLD):  # evaluated now, with the group alive: pinned
            return group
        dist.destroy_process_group(); gc.collect()
        pinned = runtime.live_comm_threads()  # destroy alone leaves the threads running
        left = runtime.shutdown(FakeAccelerator())
        print(json.dumps({"pinned": pinned, "left": left, "default": repr(barrier.__defaults__)}))
        """
    )
    assert "pt_gloo_runloop" in got["pinned"], got  # the pin is real: destroy_process_group() did not free it
    assert got["left"] == [] and got["default"] == "(None,)", got


def test_a_group_held_by_an_lru_cache_under_a_decorator_is_released():
    got = run(
        """
        class Holder:
            def __init__(self):
                self.group = dist.group.WORLD
        def instrument(fn):  # like DeepSpeed's instrument_w_nvtx: keeps fn in its closure, no __wrapped__
            def wrapped(*a):
                return fn(*a)
            return wrapped
        @instrument
        @functools.lru_cache(maxsize=None)
        def plan(holder, step):
            return step
        plan(Holder(), 1)  # the cache now holds the Holder, hence the group
        runtime._clear_lru_cache(plan)
        info = repr(plan.__closure__[0].cell_contents.cache_info())
        left = runtime.shutdown(FakeAccelerator())
        print(json.dumps({"info": info, "left": left}))
        """
    )
    assert "currsize=0" in got["info"] and got["left"] == [], got


def test_shutdown_without_a_pin_leaves_no_thread_and_reports_them_before():
    got = run(
        """
        before = runtime.live_comm_threads()
        left = runtime.shutdown(FakeAccelerator())
        print(json.dumps({"before": before, "left": left, "initialized": dist.is_initialized()}))
        """
    )
    assert "pt_gloo_runloop" in got["before"] and got["left"] == [] and not got["initialized"], got


def test_shutdown_warns_nothing_while_scanning_for_pinned_groups():
    """The scan for pinned defaults looks at every object in the process; it must not touch attributes that
    warn (torch.distributed.reduce_op warns on __class__, which isinstance() falls back to)."""
    got, stderr = launch(
        """
        import warnings
        warnings.simplefilter("always")
        held = torch.distributed.reduce_op  # the deprecated object, alive in gc's view as in a real run
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            left = runtime.shutdown(FakeAccelerator())
        print(json.dumps({"left": left, "warnings": [str(w.message) for w in caught]}))
        """,
        "-W",
        "always",
    )
    assert got == {"left": [], "warnings": []}, got
    assert "reduce_op" not in stderr, stderr[-2000:]
