"""glibc's malloc, one policy per process: a batch job keeps freed memory, a service gives large buffers
back, the first policy chosen wins, and the user can opt out. Policies that call mallopt run in their
own process, so this suite's process keeps glibc's defaults."""
import os
import platform
import subprocess
import sys

import pytest

from curator import allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

#: Frees a touched 200 MB block and prints how much of it is still resident (MB).
FREED_STILL_RESIDENT = """
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
before = rss()
p = libc.malloc(200 << 20)
ctypes.memset(p, 1, 200 << 20)
libc.free(ctypes.c_void_p(p))
print(round(rss() - before))
"""


def run(code: str, *args: str) -> str:
    """``code`` in a fresh interpreter without the user's malloc settings; its output."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.ENV}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                          env=environ).stdout.strip()


@glibc
@pytest.mark.parametrize("first, chosen, keeps", [
    ("", "batch True", True),  # a batch job: the encoder chooses, and freed memory stays
    ("assert allocator.release_large_buffers();", "service False", False),  # a service chose first: kept
])
def test_the_first_policy_chosen_holds_and_decides_what_freed_memory_does(first, chosen, keeps):
    code = ("from curator import allocator; assert allocator.policy() is None;" + first
            + "from curator.encoders import create_encoder; create_encoder('packaged:efficientnet-lite0');"
            "print(allocator.policy(), allocator.keep_freed_memory())" + FREED_STILL_RESIDENT)
    said, resident = run(code).splitlines()
    assert said == chosen and (int(resident) > 150) == keeps and (int(resident) < 20) != keeps


@glibc
def test_glibcs_defaults_unmap_a_large_block_too():
    """The baseline that makes the first test fail without the batch policy."""
    assert int(run(FREED_STILL_RESIDENT)) < 20


@pytest.mark.parametrize("policy", ["batch", "service"])
@pytest.mark.parametrize("env", [{allocator.ENV: "0"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"MALLOC_TRIM_THRESHOLD_": "131072"}])
def test_the_user_opts_out_or_sets_glibcs_own_variables(monkeypatch, env, policy):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert allocator._apply(policy) is False  # returns before any mallopt: safe in this process


#: Under the batch policy with 64 MB thresholds: a 120 MB free hole below a live block (top-trimming
#: cannot reach it) is handed back by bound_freed_memory, and stays without it. Prints: trimmed, MB of
#: the hole still resident.
HOLE = """
import ctypes, sys
from curator import allocator
allocator.KEEP_BYTES = 64 << 20
assert allocator.keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
blocks = [libc.malloc(4 << 20) for _ in range(30)]
for p in blocks:
    ctypes.memset(p, 1, 4 << 20)
live = libc.malloc(4 << 20)
before = rss()
for p in blocks:
    libc.free(ctypes.c_void_p(p))
trimmed = allocator.bound_freed_memory() if sys.argv[1] == "bound" else False
print(trimmed, round(before - rss()))
"""


@glibc
@pytest.mark.parametrize("mode, trimmed, released", [("bound", "True", True), ("keep", "False", False)])
def test_the_batch_policy_bounds_the_free_heap_it_keeps(mode, trimmed, released):
    said, freed = run(HOLE, mode).split()
    assert said == trimmed and (int(freed) > 100) == released

