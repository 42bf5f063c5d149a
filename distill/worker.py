"""``curator worker``: claim distillation jobs from the service, one at a time, under a lease.

A heartbeat thread renews the lease while the job trains. A worker that dies stops renewing;
when the lease runs out the service hands the job to the next claimant, and a late result
from the dead worker is refused. Runs are resumable, so a retaken job on the same storage
continues from its checkpoints.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Optional

from curator.client import CuratorClient
from curator.errors import CuratorError
from curator.formats import DistillConfig, dump_doc
from curator.formats.protocol import DistillJobOut

from .run import run_distill

log = logging.getLogger(__name__)


def _heartbeat(client: CuratorClient, job_id: str, worker: str, lease: float, token: str, stop: threading.Event,
               lost: threading.Event) -> None:
    while not stop.wait(lease / 3):
        try:
            if not client.heartbeat(job_id, worker, lease, token):
                lost.set()
                return
        except Exception as exc:  # a network blip: try again at the next beat, the lease has slack
            log.warning("heartbeat for %s failed: %s", job_id, exc)


def run_one(client: CuratorClient, api: str, token: Optional[str], worker: str, work_dir: Path,
            lease: float, device: str = "cpu") -> Optional[DistillJobOut]:
    """Claim and run one job; returns the finished job, or None when the queue was empty."""
    job = client.claim_distill_job(worker, lease)
    if job is None:
        return None
    log.info("%s claimed %s (attempt %d)", worker, job.id, job.attempts)
    stop, lost = threading.Event(), threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(client, job.id, worker, lease, job.lease_token, stop, lost), daemon=True)
    beat.start()
    out = work_dir / job.id
    try:
        # progress bars go to this worker's stderr: an operator sees each stage's steps and loss
        cfg = DistillConfig(**job.config, transfer=f"{api.rstrip('/')}/transfer-sets/{job.transfer_set_id}",
                            out=str(out), token=token, device=device, progress=True)
        report = run_distill(cfg)
        state, fields = "succeeded", {"report": dump_doc(report), "student_url": str((out / "student.pt").resolve())}
    except (CuratorError, ValueError) as exc:
        state, fields = "failed", {"error": str(exc)}
    except Exception as exc:
        log.exception("job %s failed", job.id)
        state, fields = "failed", {"error": f"internal error: {type(exc).__name__}: {exc}"}
    finally:
        stop.set()
        beat.join()
    if lost.is_set():
        log.warning("lost the lease on %s; not reporting", job.id)
        return None
    return client.finish_distill_job(job.id, worker, state, job.lease_token, **fields)


def run_worker(api: str, token: Optional[str], work_dir: str, *, name: Optional[str] = None, lease: float = 60.0,
               poll: float = 5.0, once: bool = False, device: str = "cpu") -> list[DistillJobOut]:
    """Loop: claim, train, report. ``once`` stops after one job (or an empty queue); returns the
    jobs this worker finished (succeeded or failed), so the caller can tell how they went."""
    worker = name or f"{socket.gethostname()}-{time.time_ns() % 1_000_000}"
    finished: list[DistillJobOut] = []
    with CuratorClient(api, token) as client:
        while True:
            result = run_one(client, api, token, worker, Path(work_dir), lease, device)
            if result is not None:
                finished.append(result)
                if result.state == "failed":
                    log.error("%s: %s failed: %s", worker, result.id, result.error)
                else:
                    log.info("%s: %s %s", worker, result.id, result.state)
            if once:
                return finished
            if result is None:
                time.sleep(poll)
