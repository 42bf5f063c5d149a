"""glibc's malloc kept from handing a batch's memory back to the kernel, for CPU inference.

Why: a convnet's activations at batch 64 and 260 px are 100+ MB each. glibc serves blocks that large
with ``mmap`` and returns them with ``munmap`` as soon as they are freed, so every batch faults its
activations in again, page by page. On 2 cores a third of EfficientNet-Lite2's inference time went to
the kernel that way, and the pool index of ``curator bench kt`` embedded at half the speed it does with
the freed memory kept (BENCHMARKS.md, *malloc*). PyTorch's CUDA allocator caches freed blocks; its CPU
allocator leaves that to malloc. Raising glibc's mmap and trim thresholds keeps up to
:data:`KEEP_BYTES` of freed memory in the heap, ready for the next batch.
"""
from __future__ import annotations

import ctypes
import os
import platform

#: Blocks up to this size come from (and go back to) the heap, and this much free heap is kept.
KEEP_BYTES = 1 << 30
#: ``CURATOR_MALLOC_TUNING=0`` leaves malloc as glibc set it.
ENV = "CURATOR_MALLOC_TUNING"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Raise glibc's thresholds for this process, once; True when they are raised. A no-op off glibc,
    with ``CURATOR_MALLOC_TUNING=0``, or where the user set glibc's own ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` (theirs wins)."""
    if "tuned" not in _state:
        _state["tuned"] = _tune()
    return _state["tuned"]


def _tune() -> bool:
    if os.environ.get(ENV, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    if any(f"MALLOC_{name}_THRESHOLD_" in os.environ for name in ("MMAP", "TRIM")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
