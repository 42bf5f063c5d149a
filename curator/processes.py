"""Worker processes that never outlive the process that started them.

A killed ``curator build-index`` or ``curator serve`` must not leave its part-filling or shard-writing
processes running on as orphans, holding cores, memory and half-written files: each worker asks the
kernel to kill it when its parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere it is a no-op).
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run first in each worker: SIGKILL this process when its parent goes."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (never forked: the parent may hold OpenMP, torch or
    server threads), each dying with this process."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent)
