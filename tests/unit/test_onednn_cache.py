"""Bounded oneDNN kernel caches: bf16 matmuls of ever new shapes no longer leave their kernels in
memory for the whole run; a user's own sizes are kept."""

import subprocess
import sys

import pytest
import torch
from conftest import subprocess_env

from tagtune import TrainConfig
from tagtune.config import parse
from tagtune.onednn_cache import VARIABLES, bound_kernel_caches
from tagtune.runtime import cpu_bf16_supported

# bf16 forward and backward of one Linear for 100 row counts, each new; prints the growth of glibc's
# bytes in use (mallinfo2: every arena, plus mmapped blocks) from after the first shape to the end
NEW_SHAPES = """
import ctypes, sys
if sys.argv[1] == "bound":
    from tagtune.onednn_cache import bound_kernel_caches
    print(bound_kernel_caches())
else:
    print("defaults")
import torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def in_use():
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd

lin = torch.nn.Linear(384, 1536)

def step(rows):
    x = torch.randn(rows, 384, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
    y.float().sum().backward()

step(8)
before = in_use()
for rows in range(9, 109):
    step(rows)
print((in_use() - before) / 2**20)
"""


def _growth_mib(mode: str) -> tuple[str, float]:
    out = subprocess.run(  # subprocess_env drops the variables: the libraries' defaults
        [sys.executable, "-c", NEW_SHAPES, mode], capture_output=True, text=True, check=True, env=subprocess_env()
    ).stdout.split("\n")
    return out[0], float(out[-2])


@pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="bf16 matmuls run through oneDNN only on such CPUs"
)
def test_new_shapes_leave_no_kernels_behind():
    said, bounded = _growth_mib("bound")
    _, default = _growth_mib("defaults")
    assert said == "bounded (ONEDNN_PRIMITIVE_CACHE_CAPACITY=64, LRU_CACHE_CAPACITY=1)"
    # measured with native bf16 (AVX512-BF16): 165 MiB with the defaults (1.6 MiB per new shape, kept), 17.6 MiB
    # bounded (64 kernels); with oneDNN's AVX-512 emulation of bf16 (Cascade Lake): 13.1 against 1.3 MiB
    assert bounded < 40, bounded
    assert default > 4 * bounded, (default, bounded)
    if cpu_bf16_supported():  # the kernels tagtune's CPU bf16 runs build are the large ones
        assert default > 100, default


def test_the_users_sizes_are_kept():
    env = {"LRU_CACHE_CAPACITY": "16"}
    assert bound_kernel_caches(env) == (
        "bounded (ONEDNN_PRIMITIVE_CACHE_CAPACITY=64); the user's LRU_CACHE_CAPACITY=16 kept"
    )
    assert env == {"LRU_CACHE_CAPACITY": "16", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}
    env = {"DNNL_PRIMITIVE_CACHE_CAPACITY": "0", "LRU_CACHE_CAPACITY": "1024"}  # oneDNN's older name
    assert (
        bound_kernel_caches(env)
        == "left as is; the user's DNNL_PRIMITIVE_CACHE_CAPACITY=0, LRU_CACHE_CAPACITY=1024 kept"
    )
    assert env == {"DNNL_PRIMITIVE_CACHE_CAPACITY": "0", "LRU_CACHE_CAPACITY": "1024"}


def test_empty_values_count_as_unset_and_a_second_run_knows_its_own_setting(monkeypatch):
    env = {"LRU_CACHE_CAPACITY": "", "DNNL_PRIMITIVE_CACHE_CAPACITY": ""}  # the libraries read empty as unset
    assert bound_kernel_caches(env) == "bounded (ONEDNN_PRIMITIVE_CACHE_CAPACITY=64, LRU_CACHE_CAPACITY=1)"
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("tagtune.onednn_cache._SET_HERE", {})
    first = bound_kernel_caches()
    assert first == "bounded (ONEDNN_PRIMITIVE_CACHE_CAPACITY=64, LRU_CACHE_CAPACITY=1)"
    # a second run in this process (the Python API, a notebook): its own setting, not the user's
    assert bound_kernel_caches() == (
        "bounded earlier in this process (ONEDNN_PRIMITIVE_CACHE_CAPACITY=64, LRU_CACHE_CAPACITY=1)"
    )
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "8")  # the user changed one since
    assert bound_kernel_caches() == (
        "bounded earlier in this process (ONEDNN_PRIMITIVE_CACHE_CAPACITY=64); the user's LRU_CACHE_CAPACITY=8 kept"
    )


def test_on_by_default_and_switchable():
    base = ["--model_name_or_path", "m", "--train_file", "t.conllu"]
    assert TrainConfig(model_name_or_path="m", train_file="t.conllu").cpu_kernel_cache_bound is True
    assert parse(TrainConfig, base + ["--cpu_kernel_cache_bound", "false"]).cpu_kernel_cache_bound is False
