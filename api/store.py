"""Service state in SQLite (WAL): jobs and transfer sets survive a restart.

One connection per thread (sqlite3 objects are not shared across threads); WAL lets the
event loop read while a job thread writes.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, owner TEXT,
  params TEXT NOT NULL, phase TEXT, progress REAL DEFAULT 0, counts TEXT, error TEXT,
  transfer_set_id TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS distill_jobs (
  id TEXT PRIMARY KEY, state TEXT NOT NULL, owner TEXT, config TEXT NOT NULL, transfer_set_id TEXT NOT NULL,
  worker TEXT, lease_expires REAL, attempts INTEGER DEFAULT 0, report TEXT, student_url TEXT, error TEXT,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, lease_token TEXT, lease_key TEXT
);
CREATE INDEX IF NOT EXISTS distill_state ON distill_jobs(state, created_at);
CREATE TABLE IF NOT EXISTS transfer_sets (
  id TEXT PRIMARY KEY, job_id TEXT, path TEXT NOT NULL, counts TEXT NOT NULL,
  manifest_sha256 TEXT NOT NULL, created_at REAL NOT NULL
);
"""
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")


class Store:
    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()
        with self._conn() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            have = {row["name"] for row in db.execute("PRAGMA table_info(distill_jobs)")}
            for column in ("lease_token", "lease_key"):  # a database made before leases carried tokens
                if column not in have:
                    db.execute(f"ALTER TABLE distill_jobs ADD COLUMN {column} TEXT")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    # -- jobs ---------------------------------------------------------------------------
    def create_job(self, kind: str, params: dict, owner: Optional[str]) -> str:
        job_id = "job-" + uuid.uuid4().hex[:12]
        now = time.time()
        self._conn().execute("INSERT INTO jobs (id, kind, state, owner, params, created_at, updated_at) "
                             "VALUES (?, ?, 'queued', ?, ?, ?, ?)", (job_id, kind, owner, json.dumps(params), now, now))
        return job_id

    def update_job(self, job_id: str, **fields: Any) -> None:
        if "counts" in fields and fields["counts"] is not None:
            fields["counts"] = json.dumps(fields["counts"])
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._conn().execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def finish_job(self, job_id: str, state: str, **fields: Any) -> bool:
        """Move an active job to a final state; False if it was already final (e.g. cancelled)."""
        fields.update(state=state, updated_at=time.time())
        if "counts" in fields and fields["counts"] is not None:
            fields["counts"] = json.dumps(fields["counts"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        cur = self._conn().execute(f"UPDATE jobs SET {cols} WHERE id = ? AND state IN ('queued', 'running')",
                                   (*fields.values(), job_id))
        return cur.rowcount == 1

    def get_job(self, job_id: str) -> Optional[dict]:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list_jobs(self, state: Optional[str] = None, limit: int = 100, owner: Optional[str] = None) -> list[dict]:
        """Newest first; ``owner`` (a key's name) shows that key's jobs only (None: everyone's)."""
        where, args = _where(("state", state), ("owner", owner))
        rows = self._conn().execute(f"SELECT * FROM jobs{where} ORDER BY created_at DESC LIMIT ?", (*args, limit))
        return [_job(r) for r in rows]

    def count_jobs(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for row in self._conn().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts

    def recover(self) -> tuple[list[str], list[str]]:
        """After a restart: running jobs fail with a reason; queued ones are run again."""
        db = self._conn()
        running = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE state = 'running'")]
        for job_id in running:
            self.finish_job(job_id, "failed", error="the server stopped while this job was running; submit it again")
        queued = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at")]
        return running, queued

    # -- distillation jobs (claimed by workers under a lease) ---------------------------------
    def create_distill_job(self, config: dict, transfer_set_id: str, owner: Optional[str]) -> str:
        job_id = "dj-" + uuid.uuid4().hex[:12]
        now = time.time()
        self._conn().execute("INSERT INTO distill_jobs (id, state, owner, config, transfer_set_id, created_at, "
                             "updated_at) VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                             (job_id, owner, json.dumps(config), transfer_set_id, now, now))
        return job_id

    def claim_distill_job(self, worker: str, lease_seconds: float, key: Optional[str]) -> Optional[dict]:
        """Atomically hand the oldest queued job, or one whose lease ran out, to ``worker``. The
        lease is a fresh secret token (returned here only, stored hashed) bound to the claiming key:
        a worker's name is no credential, and another key cannot renew or finish the job."""
        now, token = time.time(), secrets.token_urlsafe(24)
        row = self._conn().execute(
            "UPDATE distill_jobs SET state = 'running', worker = ?, lease_expires = ?, attempts = attempts + 1, "
            "lease_token = ?, lease_key = ?, updated_at = ? WHERE id = (SELECT id FROM distill_jobs WHERE "
            "state = 'queued' OR (state = 'running' AND lease_expires < ?) ORDER BY created_at LIMIT 1) RETURNING *",
            (worker, now + lease_seconds, _hash(token), key, now, now)).fetchone()
        return dict(_distill(row), lease_token=token) if row else None

    def heartbeat_distill_job(self, job_id: str, token: str, key: Optional[str], lease_seconds: float) -> bool:
        """Extend the lease; False when the caller no longer holds it (it must stop)."""
        now = time.time()
        cur = self._conn().execute("UPDATE distill_jobs SET lease_expires = ?, updated_at = ? WHERE id = ? AND "
                                   "lease_token = ? AND lease_key IS ? AND state = 'running' AND lease_expires >= ?",
                                   (now + lease_seconds, now, job_id, _hash(token), key, now))
        return cur.rowcount == 1

    def finish_distill_job(self, job_id: str, token: str, key: Optional[str], state: str, **fields: Any) -> bool:
        """Record the result of a lease still held: an expired lease is refused, as a heartbeat is."""
        if "report" in fields and fields["report"] is not None:
            fields["report"] = json.dumps(fields["report"])
        now = time.time()
        fields.update(state=state, updated_at=now)
        cols = ", ".join(f"{k} = ?" for k in fields)
        cur = self._conn().execute(f"UPDATE distill_jobs SET {cols} WHERE id = ? AND lease_token = ? AND "
                                   "lease_key IS ? AND state = 'running' AND lease_expires >= ?",
                                   (*fields.values(), job_id, _hash(token), key, now))
        return cur.rowcount == 1

    def fail_distill_job(self, job_id: str, error: str) -> None:
        self._conn().execute("UPDATE distill_jobs SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                             (error, time.time(), job_id))

    def cancel_distill_job(self, job_id: str) -> bool:
        """A queued or running job becomes cancelled (a running worker loses its lease at its next beat)."""
        now = time.time()
        cur = self._conn().execute("UPDATE distill_jobs SET state = 'cancelled', error = 'cancelled by the caller', "
                                   "updated_at = ? WHERE id = ? AND state IN ('queued', 'running')", (now, job_id))
        return cur.rowcount == 1

    def get_distill_job(self, job_id: str) -> Optional[dict]:
        row = self._conn().execute("SELECT * FROM distill_jobs WHERE id = ?", (job_id,)).fetchone()
        return _distill(row) if row else None

    def list_distill_jobs(self, limit: int = 100, owner: Optional[str] = None) -> list[dict]:
        where, args = _where(("owner", owner))
        rows = self._conn().execute(f"SELECT * FROM distill_jobs{where} ORDER BY created_at DESC LIMIT ?",
                                    (*args, limit))
        return [_distill(r) for r in rows]

    # -- transfer sets ---------------------------------------------------------------------
    def add_transfer_set(self, set_id: str, job_id: Optional[str], path: str, counts: dict, sha: str) -> None:
        self._conn().execute("INSERT INTO transfer_sets (id, job_id, path, counts, manifest_sha256, created_at) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (set_id, job_id, path, json.dumps(counts), sha, time.time()))

    def get_transfer_set(self, set_id: str) -> Optional[dict]:
        row = self._conn().execute("SELECT transfer_sets.*, jobs.owner AS owner FROM transfer_sets LEFT JOIN jobs "
                                   "ON jobs.id = transfer_sets.job_id WHERE transfer_sets.id = ?", (set_id,)).fetchone()
        return _set(row) if row else None

    def delete_transfer_set(self, set_id: str) -> None:
        self._conn().execute("DELETE FROM transfer_sets WHERE id = ?", (set_id,))

    def old_transfer_sets(self, before: float) -> list[str]:
        """Ids of the sets made before ``before``, oldest first."""
        return [r["id"] for r in self._conn().execute(
            "SELECT id FROM transfer_sets WHERE created_at < ? ORDER BY created_at, id", (before,))]

    def delete_old_jobs(self, before: float) -> int:
        """Finished jobs last touched before ``before`` whose set is gone (a set's owner is its job's)."""
        cur = self._conn().execute(
            "DELETE FROM jobs WHERE state NOT IN ('queued', 'running') AND updated_at < ? AND id NOT IN "
            "(SELECT job_id FROM transfer_sets WHERE job_id IS NOT NULL)", (before,))
        return cur.rowcount

    def list_transfer_sets(self, limit: int = 100, owner: Optional[str] = None) -> list[dict]:
        """A set belongs to the key whose job made it."""
        where, args = _where(("jobs.owner", owner))
        rows = self._conn().execute(f"SELECT transfer_sets.*, jobs.owner AS owner FROM transfer_sets LEFT JOIN jobs "
                                    f"ON jobs.id = transfer_sets.job_id{where} ORDER BY transfer_sets.created_at DESC "
                                    f"LIMIT ?", (*args, limit))
        return [_set(r) for r in rows]


def _where(*conditions: tuple[str, Optional[str]]) -> tuple[str, tuple]:
    """A WHERE clause of the given (column, value) equalities, skipping None values."""
    used = [(col, val) for col, val in conditions if val is not None]
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(f"{col} = ?" for col, _ in used), tuple(val for _, val in used)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _job(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["params"] = json.loads(d["params"])
    d["counts"] = json.loads(d["counts"]) if d["counts"] else None
    return d


def _distill(row: sqlite3.Row) -> dict:
    d = {k: row[k] for k in row.keys() if k not in ("lease_token", "lease_key")}  # secrets never leave the store
    d["config"] = json.loads(d["config"])
    d["report"] = json.loads(d["report"]) if d["report"] else None
    return d


def _set(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["counts"] = json.loads(d["counts"])
    return d
