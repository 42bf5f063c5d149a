"""Curation jobs: persisted inputs, a thread pool, progress in SQLite, cooperative cancel.

Inputs (query images, labels, embeddings) are saved under ``uploads/<job_id>/`` before the
job is queued, so a queued job survives a restart and runs when the server comes back.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

from curator import atomic
from curator.curate import curate
from curator.errors import CuratorError
from curator.formats import CurateParams, JobInputs, load_doc, save_doc
from curator.queries import Query
from curator.retrieval import LivePool

from .retention import prune
from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)


def input_file(n: int) -> str:
    return f"{n:05d}.bin"


def save_inputs(folder: Path, queries: list[Query], vectors: Optional[np.ndarray],
                stored: Optional[list[str]] = None) -> None:
    """Persist a job's inputs (atomically, manifest last) so it can run after a restart. ``stored``:
    the query files already written into ``folder`` as they were uploaded (streamed, not held)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = stored or []
    for n, q in enumerate(queries if stored is None else []):
        if q.data:
            atomic.write_bytes(folder / input_file(n), q.data)
            files.append(input_file(n))
        else:
            files.append(None)
    if vectors is not None:
        atomic.write_npy(folder / "vectors.npy", vectors)
    save_doc(folder / "inputs.json", JobInputs(ids=[q.id for q in queries], labels=[q.label for q in queries],
                                               files=files, vectors=vectors is not None))


def load_inputs(folder: Path) -> tuple[list[Query], Optional[np.ndarray]]:
    meta = load_doc(folder / "inputs.json", JobInputs)
    queries = [Query(i, label=lab, path=folder / f if f else None)
               for i, lab, f in zip(meta.ids, meta.labels, meta.files)]
    vectors = np.load(folder / "vectors.npy") if meta.vectors else None
    return queries, vectors


class JobRunner:
    def __init__(self, settings: Settings, store: Store, pool: LivePool):
        self.settings, self.store, self.pool = settings, store, pool
        self.executor = ThreadPoolExecutor(max_workers=settings.job_workers, thread_name_prefix="curate")
        self._cancel: dict[str, threading.Event] = {}
        self._futures: dict[str, Future] = {}

    def submit(self, job_id: str) -> Future:
        self._cancel[job_id] = threading.Event()
        future = self.executor.submit(self._run, job_id)
        self._futures[job_id] = future
        future.add_done_callback(lambda _: self._forget(job_id))
        return future

    def _forget(self, job_id: str) -> None:
        """A finished job's event and future go (its outcome is in the store): the maps stay the size
        of the work in flight, not of every job ever run."""
        self._cancel.pop(job_id, None)
        self._futures.pop(job_id, None)

    def cancel(self, job_id: str) -> bool:
        event = self._cancel.get(job_id)
        if event is not None:
            event.set()
        return self.store.finish_job(job_id, "cancelled", error="cancelled by the caller")

    def wait(self, job_id: str, timeout: float) -> None:
        future = self._futures.get(job_id)
        if future is not None:
            try:
                future.result(timeout=timeout)
            except Exception:  # the outcome is in the store; a timeout means "answer 202"
                pass

    def shutdown(self) -> None:
        for event in self._cancel.values():
            event.set()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _run(self, job_id: str) -> None:
        try:
            self._curate(job_id)
        finally:  # a finished job's inputs are of no more use: uploads never pile up
            shutil.rmtree(self.settings.uploads_dir / job_id, ignore_errors=True)
            prune(self.settings, self.store)

    def _curate(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job is None or job["state"] != "queued":
            return
        self.store.update_job(job_id, state="running", phase="embed", progress=0.0)
        cancelled = self._cancel[job_id].is_set if job_id in self._cancel else (lambda: False)
        last = [0.0]

        def progress(phase: str, fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] > 0.5 or fraction >= 1.0:
                last[0] = now
                weights = {"embed": 0.0, "search": 0.1, "write": 0.5, "done": 1.0}
                self.store.update_job(job_id, phase=phase, progress=round(weights.get(phase, 0) + 0.5 * fraction
                                                                          if phase == "write" else weights.get(phase, 0), 3))

        try:
            queries, vectors = load_inputs(self.settings.uploads_dir / job_id)
            params = CurateParams.model_validate(job["params"])
            manifest = curate(self.pool.current(), queries, params, self.settings.sets_dir, query_vectors=vectors,
                              set_id="ts-" + job_id.removeprefix("job-"), progress=progress, cancelled=cancelled)
            folder = self.settings.sets_dir / manifest.id
            sha = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
            counts = manifest.counts.model_dump()
            self.store.add_transfer_set(manifest.id, job_id, str(folder), counts, sha)
            self.store.finish_job(job_id, "succeeded", phase="done", progress=1.0, counts=counts,
                                  transfer_set_id=manifest.id)
        except InterruptedError:
            self.store.finish_job(job_id, "cancelled", error="cancelled by the caller")
        except CuratorError as exc:
            self.store.finish_job(job_id, "failed", error=str(exc))
        except Exception as exc:  # never leave a job "running": record what broke
            self.store.finish_job(job_id, "failed", error=failure(job_id, exc))


#: What a write gets when the disk (or this process's share of it) is full.
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def failure(job_id: str, exc: Exception) -> str:
    """A failed job's reason: a full disk says so and what to do (the half-written set is already gone:
    it was only ever a hidden temp folder); anything else is an internal error, logged with its trace."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        log.error("job %s: the data disk is full (%s)", job_id, os.strerror(exc.errno))
        return (f"the data disk is full ({os.strerror(exc.errno)}): nothing of this set was kept; free space, "
                f"or lower --keep-sets-days / --max-data-bytes")
    log.exception("job %s failed", job_id)
    return f"internal error: {type(exc).__name__}: {exc}"


def clean_uploads(uploads: Path, store: Store) -> int:
    """At start-up: staging folders of requests cut off mid-upload, and the inputs of jobs that are
    over (their folders are removed as each ends; a kill can leave one). Returns how many went."""
    gone = 0
    for folder in uploads.iterdir():
        job = None if folder.name.startswith(".") else store.get_job(folder.name)
        if job is None or job["state"] not in ("queued", "running"):
            shutil.rmtree(folder, ignore_errors=True)
            gone += 1
    return gone
