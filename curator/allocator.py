"""glibc's malloc, set once per process for the work it does: a batch job keeps freed memory, a service
hands large buffers back.

Why two policies:

- **Batch inference** (index build, teacher caches, distillation): a convnet's activations at batch 64 and
  260 px are 100+ MB each. glibc serves blocks that large with ``mmap`` and unmaps them as soon as they
  are freed, so every batch faults its activations in again, page by page. On 2 cores a third of
  EfficientNet-Lite2's inference time went to the kernel that way, and the pool index of
  ``curator bench kt`` embedded at half the speed it does with the freed memory kept (docs/benchmarks.md,
  *malloc*). PyTorch's CUDA allocator caches freed blocks; its CPU allocator leaves that to malloc.
  :func:`keep_freed_memory` raises glibc's mmap and trim thresholds to :data:`KEEP_BYTES`.
- **A service** (``curator serve``): uploads of 20 MB pass through many threads. glibc's dynamic mmap
  threshold rises to the largest block freed so far, so after the first large upload every later one
  comes from the heap of whichever thread handled it, and those heaps keep what they grew to. Measured on
  4 concurrent requests of 6 x 20 MB: +114 MB peak RSS with the default, +22 MB with a fixed 1 MB
  threshold (tests/api/test_resources.py). :func:`release_large_buffers` fixes it at
  :data:`RELEASE_BYTES`, and the encoder a service loads later leaves that as it is.

The first policy a process chooses is its policy: an encoder asks for the batch policy on every
construction, and gets it only where nothing else was chosen.
"""
from __future__ import annotations

import ctypes
import os
import platform
from typing import Literal, Optional

#: Batch policy: blocks up to this size come from (and go back to) the heap, and this much free heap is kept.
KEEP_BYTES = 1 << 30
#: Service policy: blocks above this size are mapped on their own and unmapped when freed.
RELEASE_BYTES = 1 << 20
#: ``CURATOR_MALLOC_TUNING=0`` leaves malloc as glibc set it, under either policy.
ENV = "CURATOR_MALLOC_TUNING"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
Policy = Literal["batch", "service"]
#: The policy this process chose, and whether glibc took it.
_state: dict[str, object] = {}


def keep_freed_memory() -> bool:
    """The batch policy for this process, unless it already chose one; True when glibc's thresholds
    are raised (now or before)."""
    return _choose("batch")


def release_large_buffers() -> bool:
    """The service policy for this process, unless it already chose one; True when glibc's mmap
    threshold is fixed at :data:`RELEASE_BYTES`."""
    return _choose("service")


def policy() -> Optional[Policy]:
    """The policy this process chose, if any (whether or not glibc could take it)."""
    return _state.get("policy")  # type: ignore[return-value]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def bound_freed_memory() -> bool:
    """Under the batch policy, give the free heap back to the kernel once it holds over :data:`KEEP_BYTES`;
    True when it did. Why: with large blocks on the heap, a block that lives on between batches (a
    decoded batch, a result) splits the free space, later batches cannot reuse the pieces, and the heap
    grows with every batch (2,000 images through EfficientNet-Lite2: 6.2 GB private memory against 2.3
    GB with glibc's defaults). Called after each batch, this keeps what the next batch reuses and returns
    the rest."""
    libc = _state.get("libc")
    if libc is None or _state.get("policy") != "batch":
        return False
    if libc.mallinfo2().fordblks <= KEEP_BYTES:
        return False
    libc.malloc_trim(0)
    return True


def _choose(wanted: Policy) -> bool:
    if "policy" not in _state:
        _state["policy"] = wanted
        _state["applied"] = _apply(wanted)
    return _state["policy"] == wanted and bool(_state["applied"])


def _apply(wanted: Policy) -> bool:
    """mallopt for the policy; False (nothing changed) off glibc, with ``CURATOR_MALLOC_TUNING=0``, or
    where the user set glibc's own ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` (theirs wins)."""
    if os.environ.get(ENV, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    if any(f"MALLOC_{name}_THRESHOLD_" in os.environ for name in ("MMAP", "TRIM")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
    except (OSError, AttributeError):  # no glibc, or one older than 2.33 (no mallinfo2)
        return False
    if wanted == "service":
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, RELEASE_BYTES))
    _state["libc"] = libc
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
