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
from typing import Optional

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


def usable_cpus() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _start_worker(torch_threads: Optional[int]) -> None:
    die_with_parent()
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)


def spawn_pool(workers: int, torch_threads: Optional[int] = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (never forked: the parent may hold OpenMP, torch or
    server threads), each dying with this process; ``torch_threads`` caps each one's intra-op threads,
    so that workers sharing the cores do not oversubscribe them."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(torch_threads,))


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and kill what has, now: leaving the pool's ``with`` block would
    otherwise wait for every running task (minutes of training, after a Ctrl-C or a failed run).
    The processes are read from the executor's ``_processes`` (no public way before Python 3.14)."""
    pool.shutdown(wait=False, cancel_futures=True)
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
