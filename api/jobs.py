"""Curation jobs: persisted inputs, claims under a lease, progress in the store, cooperative cancel.

Inputs (query images, labels, embeddings) are saved under ``uploads/<job_id>/`` before the job
is queued, so a queued job survives a restart, and any replica sharing the data folder can run it.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
from .store import ACTIVE, JobRow, Store

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
    if not (folder / "inputs.json").exists():  # the error a caller sees names no server path
        raise CuratorError("this job's inputs were lost (the server stopped before they were kept, or the "
                           "data folder is not shared by every replica); submit it again")
    meta = load_doc(folder / "inputs.json", JobInputs)
    queries = [Query(i, label=lab, path=folder / f if f else None)
               for i, lab, f in zip(meta.ids, meta.labels, meta.files)]
    vectors = np.load(folder / "vectors.npy") if meta.vectors else None
    return queries, vectors


#: Requests waiting at once (``?wait=true``) on one replica; more are answered at once with 202.
MAX_WAITERS = 64


class JobRunner:
    """Runs curation jobs claimed from the store, at most ``job_workers`` at once.

    Jobs are not run where they were submitted but claimed: a dispatcher thread claims the oldest
    claimable job whenever a worker is free, and renews the leases of the jobs running here. So
    replicas on one database share the queue, a job whose replica died is claimed again when its
    lease runs out, and a job cancelled on any replica stops here at the next renewal.
    """

    def __init__(self, settings: Settings, store: Store, pool: LivePool):
        self.settings, self.store, self.pool = settings, store, pool
        self.replica = settings.replica
        self.executor = ThreadPoolExecutor(max_workers=settings.job_workers, thread_name_prefix="curate")
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._waiters = 0  # requests waiting (?wait=true) on this replica's event loop
        self._dispatcher = threading.Thread(target=self._dispatch, name="curate-dispatch", daemon=True)

    def start(self) -> None:
        self._dispatcher.start()

    def submit(self, job_id: str) -> None:
        """A job was queued: claim it now rather than at the next poll (any replica may still win it)."""
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Cancel a job; a queued one's inputs go at once (no replica holds them), a running one's as it stops."""
        event = self._cancel.get(job_id)
        if event is not None:
            event.set()
        before = self.store.get_job(job_id)
        done = self.store.finish_job(job_id, "cancelled", error="cancelled by the caller")
        if done and before is not None and before.state == "queued":
            shutil.rmtree(self.settings.uploads_dir / job_id, ignore_errors=True)
        return done

    async def wait(self, job_id: str, timeout: float) -> None:
        """Until the job is over, whichever replica runs it, or ``timeout`` (then the caller gets 202).
        It waits on the event loop, never on a thread: a waiter holds no thread that searches, uploads
        and thumbnails share. At most MAX_WAITERS wait at once; others are answered at once (202)."""
        if self._waiters >= MAX_WAITERS:
            return
        self._waiters += 1
        try:
            deadline, delay = time.monotonic() + timeout, 0.05
            while time.monotonic() < deadline and not self._stop.is_set():
                job = await asyncio.to_thread(self.store.get_job, job_id)  # one short read
                if job is None or job.state not in ACTIVE:
                    return
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 1.5, 0.5)
        finally:
            self._waiters -= 1

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            for event in self._cancel.values():
                event.set()
        if self._dispatcher.is_alive():
            self._dispatcher.join()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _dispatch(self) -> None:
        lease = self.settings.job_lease_seconds
        renew_every, renewed = lease / 3, time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - renewed >= renew_every:
                    self._renew(lease)
                    renewed = time.monotonic()
                if self._claim(lease):
                    continue
            except Exception:  # the database is briefly unreachable: try again at the next tick
                log.exception("job dispatcher: claiming or renewing failed")
            self._wake.wait(min(self.settings.poll_seconds, renew_every))
            self._wake.clear()

    def _claim(self, lease: float) -> bool:
        """Claim one job when a worker is free; whether one was started. Jobs whose replicas died
        MAX_ATTEMPTS times are failed first, and what they left on disk goes with them."""
        for job_id in self.store.fail_abandoned_jobs():
            self._remove_leftovers(job_id)
        with self._lock:
            if len(self._cancel) >= self.settings.job_workers:
                return False
        job = self.store.claim_job(self.replica, lease)
        if job is None:
            return False
        with self._lock:
            if job.id in self._cancel:  # ours, still running: its lease ran out in a stall and we took it
                return True                # back, which renewed it; a second run would delete the first's work
            self._cancel[job.id] = threading.Event()
        self.executor.submit(self._run, job)
        return True

    def _renew(self, lease: float) -> None:
        with self._lock:
            mine = list(self._cancel)
        held = self.store.renew_jobs(self.replica, mine, lease)
        for job_id in set(mine) - held:  # cancelled, or taken over after a stall: stop working on it
            event = self._cancel.get(job_id)
            if event is not None:
                event.set()

    def _run(self, job: JobRow) -> None:
        job_id = job.id
        try:
            self._curate(job)
        finally:
            with self._lock:
                self._cancel.pop(job_id, None)
            self._wake.set()  # a worker is free
            now = self.store.get_job(job_id)
            if now is None or now.state not in ACTIVE:  # inputs of a job over are of no more use
                shutil.rmtree(self.settings.uploads_dir / job_id, ignore_errors=True)
            prune(self.settings, self.store)

    def _curate(self, job: JobRow) -> None:
        job_id, me = job.id, self.replica
        set_id = set_of(job_id)
        if job.attempts > 1 and self._resume(job_id, set_id):
            return
        self.store.update_job(job_id, me, phase="embed", progress=0.0)
        event = self._cancel[job_id]
        last = [0.0]

        def progress(phase: str, fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] > 0.5 or fraction >= 1.0:
                last[0] = now
                weights = {"embed": 0.0, "search": 0.1, "write": 0.5, "done": 1.0}
                self.store.update_job(job_id, me, phase=phase, progress=round(
                    weights.get(phase, 0) + 0.5 * fraction if phase == "write" else weights.get(phase, 0), 3))

        try:
            queries, vectors = load_inputs(self.settings.uploads_dir / job_id)
            params = CurateParams.model_validate(job.params)
            manifest = curate(self.pool.current(), queries, params, self.settings.sets_dir, query_vectors=vectors,
                              set_id=set_id, progress=progress, cancelled=event.is_set)
            folder = self.settings.sets_dir / manifest.id
            sha = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
            counts = manifest.counts.model_dump()
            if not self.store.add_transfer_set(manifest.id, job_id, str(folder), counts, sha, worker=me):
                return  # no longer ours: the replica that took it over records its own
            self.store.finish_job(job_id, "succeeded", me, phase="done", progress=1.0, counts=counts,
                                  transfer_set_id=manifest.id)
        except InterruptedError:
            self.store.finish_job(job_id, "cancelled", me, error="cancelled by the caller")
        except CuratorError as exc:
            self.store.finish_job(job_id, "failed", me, error=str(exc))
        except Exception as exc:  # never leave a job "running": record what broke
            self.store.finish_job(job_id, "failed", me, error=failure(job_id, exc))

    def _remove_leftovers(self, job_id: str) -> None:
        """A failed job's inputs and the set it half-wrote (never recorded, so never served)."""
        shutil.rmtree(self.settings.uploads_dir / job_id, ignore_errors=True)
        self._remove_partials(set_of(job_id))

    def _remove_partials(self, set_id: str) -> None:
        for partial in self.settings.sets_dir.glob(f".{set_id}.tmp-*"):
            shutil.rmtree(partial, ignore_errors=True)

    def _resume(self, job_id: str, set_id: str) -> bool:
        """A job taken over from a replica that died: if that replica recorded the set before it
        died, the job is done (never made twice); otherwise what it left half-written goes."""
        done = self.store.get_transfer_set(set_id)
        if done is not None:
            self.store.finish_job(job_id, "succeeded", self.replica, phase="done", progress=1.0,
                                  counts=done.counts, transfer_set_id=set_id)
            return True
        self._remove_partials(set_id)
        shutil.rmtree(self.settings.sets_dir / set_id, ignore_errors=True)  # renamed in, never recorded
        return False


def set_of(job_id: str) -> str:
    """The id of the set a job writes: one per job, so a retaken job finds what its first run left."""
    return "ts-" + job_id.removeprefix("job-")


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
    """At start-up: the inputs of jobs that are over (their folders are removed as each ends; a kill
    can leave one), and folders without a job (staging, or inputs whose request was cut off before its
    job was queued) an hour old (a younger one may be another replica's request in flight). Returns
    how many went."""
    gone = 0
    for folder in uploads.iterdir():
        job = None if folder.name.startswith(".") else store.get_job(folder.name)
        if job is None:  # staging, or inputs whose job row is not written yet (maybe another replica's)
            stale = _age(folder) > STALE_SECONDS
        else:
            stale = job.state not in ACTIVE
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            gone += 1
    return gone


def clean_partial_sets(sets_dir: Path, store: Store) -> int:
    """At start-up: sets whose writer was killed (never complete), unless their job is still active,
    which on a shared data folder means another replica is writing it."""
    gone = 0
    for partial in sets_dir.glob(".*.tmp-*"):
        set_id = partial.name[1:].split(".tmp-")[0]
        job = store.get_job("job-" + set_id.removeprefix("ts-"))
        if job is None or job.state not in ACTIVE:
            shutil.rmtree(partial, ignore_errors=True)
            gone += 1
    return gone


#: A staging upload this old is abandoned (a request body must arrive within --body-timeout).
STALE_SECONDS = 3600.0


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
