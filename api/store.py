"""Service state: jobs, distillation jobs and transfer sets, in SQLite or a shared PostgreSQL.

Every replica of ``curator serve`` on one database sees the same rows. Work is handed out by
claims under a lease (a replica renews it while it works): whoever holds the lease may finish the
job, and a job whose lease ran out, because its replica died, is claimed again by another.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from .database import Database

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, owner TEXT,
  params TEXT NOT NULL, phase TEXT, progress DOUBLE PRECISION DEFAULT 0, counts TEXT, error TEXT,
  transfer_set_id TEXT, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
  worker TEXT, lease_expires DOUBLE PRECISION, attempts INTEGER DEFAULT 0, request_key TEXT)""",
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state)",
    """CREATE TABLE IF NOT EXISTS distill_jobs (
  id TEXT PRIMARY KEY, state TEXT NOT NULL, owner TEXT, config TEXT NOT NULL, transfer_set_id TEXT NOT NULL,
  worker TEXT, lease_expires DOUBLE PRECISION, attempts INTEGER DEFAULT 0, report TEXT, student_url TEXT,
  error TEXT, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL, lease_token TEXT,
  lease_key TEXT)""",
    "CREATE INDEX IF NOT EXISTS distill_state ON distill_jobs(state, created_at)",
    """CREATE TABLE IF NOT EXISTS transfer_sets (
  id TEXT PRIMARY KEY, job_id TEXT, path TEXT NOT NULL, counts TEXT NOT NULL,
  manifest_sha256 TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)""",
)
#: Columns added since the first release: a database made before them gains them at start-up.
ADDED_COLUMNS = {"distill_jobs": {"lease_token": "TEXT", "lease_key": "TEXT"},
                 "jobs": {"worker": "TEXT", "lease_expires": "DOUBLE PRECISION", "attempts": "INTEGER DEFAULT 0",
                          "request_key": "TEXT"}}
#: Indexes on added columns: made once the columns exist.
LATE_INDEXES = ("CREATE UNIQUE INDEX IF NOT EXISTS jobs_request_key ON jobs(request_key)",)
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
#: A job whose replica died this many times is failed rather than handed out again: it may be what
#: kills them.
MAX_ATTEMPTS = 3
#: Jobs claimable now: queued, or running under a lease that ran out (a NULL lease is a job left
#: running by a server from before leases).
CLAIMABLE = "state = 'queued' OR (state = 'running' AND (lease_expires IS NULL OR lease_expires < ?))"


@dataclass(frozen=True)
class JobRow:
    """A curation job as stored (times are epoch seconds; the JSON columns parsed)."""
    id: str
    kind: str
    state: str
    owner: Optional[str]
    params: dict
    phase: Optional[str]
    progress: float
    counts: Optional[dict]
    error: Optional[str]
    transfer_set_id: Optional[str]
    created_at: float
    updated_at: float
    worker: Optional[str] = None
    lease_expires: Optional[float] = None
    attempts: int = 0
    set_exists: bool = False   # whether the set it made is still there (a deleted set's job keeps its id)


@dataclass(frozen=True)
class DistillJobRow:
    """A distillation job as stored, less its lease secrets (they never leave the store)."""
    id: str
    state: str
    owner: Optional[str]
    config: Any
    transfer_set_id: str
    worker: Optional[str]
    lease_expires: Optional[float]
    attempts: int
    report: Optional[Any]
    student_url: Optional[str]
    error: Optional[str]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ClaimedJob:
    """A distillation job just claimed, and the lease's secret (returned once, stored hashed)."""
    job: DistillJobRow
    lease_token: str


@dataclass(frozen=True)
class SetRow:
    """A transfer set as stored; ``owner`` is its job's."""
    id: str
    job_id: Optional[str]
    path: str
    counts: dict
    manifest_sha256: str
    created_at: float
    owner: Optional[str] = None


#: A job row's extra column: whether its set is still there.
SET_EXISTS = "EXISTS (SELECT 1 FROM transfer_sets WHERE transfer_sets.id = jobs.transfer_set_id) AS set_exists"


def new_job_id() -> str:
    return "job-" + uuid.uuid4().hex[:12]


class Store:
    def __init__(self, db: Database):
        self.db = db
        with db.schema_lock():
            for statement in SCHEMA:
                db.execute(statement)
            for table, added in ADDED_COLUMNS.items():
                have = db.columns(table)
                for column, kind in added.items():
                    if column not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            for statement in LATE_INDEXES:
                db.execute(statement)

    # -- jobs ---------------------------------------------------------------------------
    def create_job(self, kind: str, params: dict, owner: Optional[str],
                   request_key: Optional[str] = None, job_id: Optional[str] = None) -> tuple[str, bool]:
        """A new queued job, or, when ``request_key`` (the caller's Idempotency-Key) was seen before
        from the same owner, the job that request made; the flag says whether it is new. A retried
        request, e.g. after a replica died mid-answer, then never makes a second job. ``job_id``
        (from ``new_job_id``): a job whose inputs were put in place under its id before it is queued,
        since a queued job can be claimed at once."""
        job_id, now = job_id or new_job_id(), time.time()
        scoped = None if request_key is None else f"{owner or ''}/{request_key}"
        cur = self.db.execute("INSERT INTO jobs (id, kind, state, owner, params, created_at, updated_at, request_key) "
                              "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?) ON CONFLICT (request_key) DO NOTHING",
                              (job_id, kind, owner, json.dumps(params), now, now, scoped))
        if cur.rowcount == 1:
            return job_id, True
        return self.db.execute("SELECT id FROM jobs WHERE request_key = ?", (scoped,)).fetchone()["id"], False

    def update_job(self, job_id: str, worker: str, **fields: Any) -> bool:
        """Progress of a running job, written only while ``worker`` still holds it."""
        cols, args = _assignments(fields)
        cur = self.db.execute(f"UPDATE jobs SET {cols} WHERE id = ? AND worker = ? AND state = 'running'",
                              (*args, job_id, worker))
        return cur.rowcount == 1

    def finish_job(self, job_id: str, state: str, worker: Optional[str] = None, **fields: Any) -> bool:
        """Move an active job to a final state; False if it was already final (e.g. cancelled), or,
        with ``worker``, if that replica no longer holds it (another took it over)."""
        cols, args = _assignments(dict(fields, state=state))
        mine = " AND worker = ?" if worker is not None else ""
        cur = self.db.execute(f"UPDATE jobs SET {cols} WHERE id = ? AND state IN ('queued', 'running'){mine}",
                              (*args, job_id, *([worker] if worker is not None else [])))
        return cur.rowcount == 1

    def fail_abandoned_jobs(self) -> list[str]:
        """Jobs whose replicas died MAX_ATTEMPTS times are failed rather than handed out again (they may be
        what kills them); returns their ids, so their leftovers can go."""
        now = time.time()
        rows = self.db.execute("UPDATE jobs SET state = 'failed', updated_at = ?, error = ? WHERE state = 'running' "
                               "AND (lease_expires IS NULL OR lease_expires < ?) AND attempts >= ? RETURNING id",
                               (now, f"the server running this job stopped {MAX_ATTEMPTS} times; submit it again",
                                now, MAX_ATTEMPTS))
        return [r["id"] for r in rows]

    def claim_job(self, worker: str, lease_seconds: float) -> Optional[JobRow]:
        """Hand the oldest claimable job to replica ``worker`` under a lease, atomically (after
        ``fail_abandoned_jobs``, a job past MAX_ATTEMPTS is not claimable)."""
        now = time.time()
        row = self._claim("jobs", "", (), worker, lease_seconds, now)
        return _job(row) if row else None

    def release_jobs(self, worker: str) -> int:
        """At start-up: jobs this replica held when it stopped cannot be running anywhere, so they are
        claimable at once rather than when their lease runs out."""
        return self.db.execute("UPDATE jobs SET lease_expires = 0 WHERE worker = ? AND state = 'running'",
                               (worker,)).rowcount

    def renew_jobs(self, worker: str, job_ids: list[str], lease_seconds: float) -> set[str]:
        """Extend ``worker``'s leases; the ids it still holds (a cancelled or taken-over job is not)."""
        if not job_ids:
            return set()
        now = time.time()
        marks = ", ".join("?" * len(job_ids))
        rows = self.db.execute(f"UPDATE jobs SET lease_expires = ? WHERE worker = ? AND state = 'running' AND "
                               f"id IN ({marks}) RETURNING id", (now + lease_seconds, worker, *job_ids))
        return {r["id"] for r in rows}

    def get_job(self, job_id: str) -> Optional[JobRow]:
        row = self.db.execute(f"SELECT jobs.*, {SET_EXISTS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list_jobs(self, state: Optional[str] = None, limit: int = 100, owner: Optional[str] = None) -> list[JobRow]:
        """Newest first; ``owner`` (a key's name) shows that key's jobs only (None: everyone's)."""
        where, args = _where(("state", state), ("owner", owner))
        rows = self.db.execute(f"SELECT jobs.*, {SET_EXISTS} FROM jobs{where} ORDER BY created_at DESC LIMIT ?",
                               (*args, limit))
        return [_job(r) for r in rows]

    def count_jobs(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for row in self.db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts

    # -- distillation jobs (claimed by workers under a lease) ---------------------------------
    def create_distill_job(self, config: dict, transfer_set_id: str, owner: Optional[str]) -> str:
        job_id = "dj-" + uuid.uuid4().hex[:12]
        now = time.time()
        self.db.execute("INSERT INTO distill_jobs (id, state, owner, config, transfer_set_id, created_at, "
                             "updated_at) VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                             (job_id, owner, json.dumps(config), transfer_set_id, now, now))
        return job_id

    def claim_distill_job(self, worker: str, lease_seconds: float, key: Optional[str]) -> Optional[ClaimedJob]:
        """Atomically hand the oldest queued job, or one whose lease ran out, to ``worker``. The
        lease is a fresh secret token (returned here only, stored hashed) bound to the claiming key:
        a worker's name is no credential, and another key cannot renew or finish the job."""
        now, token = time.time(), secrets.token_urlsafe(24)
        row = self._claim("distill_jobs", "lease_token = ?, lease_key = ?", (_hash(token), key), worker,
                          lease_seconds, now)
        return ClaimedJob(_distill(row), token) if row else None

    def _claim(self, table: str, extra: str, extra_args: tuple, worker: str, lease_seconds: float,
               now: float) -> Optional[dict]:
        """The one claim both job kinds use. On PostgreSQL the candidate row is locked and rows other
        replicas are claiming are skipped (SKIP LOCKED); the outer re-check makes a row claimed
        meanwhile match nothing rather than be claimed twice. SQLite has one writer at a time."""
        skip = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        return self.db.execute(
            f"UPDATE {table} SET state = 'running', worker = ?, lease_expires = ?, attempts = attempts + 1, "
            f"updated_at = ?{', ' + extra if extra else ''} WHERE id = (SELECT id FROM {table} WHERE {CLAIMABLE} "
            f"ORDER BY created_at, id LIMIT 1{skip}) AND ({CLAIMABLE}) RETURNING *",
            (worker, now + lease_seconds, now, *extra_args, now, now)).fetchone()

    def heartbeat_distill_job(self, job_id: str, token: str, key: Optional[str], lease_seconds: float) -> bool:
        """Extend the lease; False when the caller no longer holds it (it must stop)."""
        now = time.time()
        cur = self.db.execute("UPDATE distill_jobs SET lease_expires = ?, updated_at = ? WHERE id = ? AND "
                                   "lease_token = ? AND lease_key IS NOT DISTINCT FROM ? AND state = 'running' AND lease_expires >= ?",
                                   (now + lease_seconds, now, job_id, _hash(token), key, now))
        return cur.rowcount == 1

    def finish_distill_job(self, job_id: str, token: str, key: Optional[str], state: str, **fields: Any) -> bool:
        """Record the result of a lease still held: an expired lease is refused, as a heartbeat is."""
        cols, args = _assignments(dict(fields, state=state))
        cur = self.db.execute(f"UPDATE distill_jobs SET {cols} WHERE id = ? AND lease_token = ? AND "
                              "lease_key IS NOT DISTINCT FROM ? AND state = 'running' AND lease_expires >= ?",
                              (*args, job_id, _hash(token), key, time.time()))
        return cur.rowcount == 1

    def fail_distill_job(self, job_id: str, error: str) -> None:
        self.db.execute("UPDATE distill_jobs SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                             (error, time.time(), job_id))

    def cancel_distill_job(self, job_id: str) -> bool:
        """A queued or running job becomes cancelled (a running worker loses its lease at its next beat)."""
        now = time.time()
        cur = self.db.execute("UPDATE distill_jobs SET state = 'cancelled', error = 'cancelled by the caller', "
                                   "updated_at = ? WHERE id = ? AND state IN ('queued', 'running')", (now, job_id))
        return cur.rowcount == 1

    def get_distill_job(self, job_id: str) -> Optional[DistillJobRow]:
        row = self.db.execute("SELECT * FROM distill_jobs WHERE id = ?", (job_id,)).fetchone()
        return _distill(row) if row else None

    def list_distill_jobs(self, limit: int = 100, owner: Optional[str] = None) -> list[DistillJobRow]:
        where, args = _where(("owner", owner))
        rows = self.db.execute(f"SELECT * FROM distill_jobs{where} ORDER BY created_at DESC LIMIT ?",
                                    (*args, limit))
        return [_distill(r) for r in rows]

    # -- transfer sets ---------------------------------------------------------------------
    def add_transfer_set(self, set_id: str, job_id: Optional[str], path: str, counts: dict, sha: str,
                         worker: Optional[str] = None) -> bool:
        """Record a written set; with ``worker``, only while that replica still holds its job, so a
        replica that stalled past its lease never records a set beside its successor's."""
        values = (set_id, job_id, path, json.dumps(counts), sha, time.time())
        if worker is None:
            cur = self.db.execute("INSERT INTO transfer_sets (id, job_id, path, counts, manifest_sha256, created_at) "
                                  "VALUES (?, ?, ?, ?, ?, ?)", values)
        else:
            cur = self.db.execute("INSERT INTO transfer_sets (id, job_id, path, counts, manifest_sha256, created_at) "
                                  "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ? AND "
                                  "worker = ? AND state = 'running')", (*values, job_id, worker))
        return cur.rowcount == 1

    def get_transfer_set(self, set_id: str) -> Optional[SetRow]:
        row = self.db.execute("SELECT transfer_sets.*, jobs.owner AS owner FROM transfer_sets LEFT JOIN jobs "
                                   "ON jobs.id = transfer_sets.job_id WHERE transfer_sets.id = ?", (set_id,)).fetchone()
        return _set(row) if row else None

    def delete_transfer_set(self, set_id: str) -> None:
        self.db.execute("DELETE FROM transfer_sets WHERE id = ?", (set_id,))

    def old_transfer_sets(self, before: float) -> list[str]:
        """Ids of the sets made before ``before``, oldest first."""
        return [r["id"] for r in self.db.execute(
            "SELECT id FROM transfer_sets WHERE created_at < ? ORDER BY created_at, id", (before,))]

    def delete_old_jobs(self, before: float) -> int:
        """Finished jobs last touched before ``before`` whose set is gone (a set's owner is its job's)."""
        cur = self.db.execute(
            "DELETE FROM jobs WHERE state NOT IN ('queued', 'running') AND updated_at < ? AND id NOT IN "
            "(SELECT job_id FROM transfer_sets WHERE job_id IS NOT NULL)", (before,))
        return cur.rowcount

    def list_transfer_sets(self, limit: int = 100, owner: Optional[str] = None) -> list[SetRow]:
        """A set belongs to the key whose job made it."""
        where, args = _where(("jobs.owner", owner))
        rows = self.db.execute(f"SELECT transfer_sets.*, jobs.owner AS owner FROM transfer_sets LEFT JOIN jobs "
                                    f"ON jobs.id = transfer_sets.job_id{where} ORDER BY transfer_sets.created_at DESC "
                                    f"LIMIT ?", (*args, limit))
        return [_set(r) for r in rows]


def _where(*conditions: tuple[str, Optional[str]]) -> tuple[str, tuple]:
    """A WHERE clause of the given (column, value) equalities, skipping None values."""
    used = [(col, val) for col, val in conditions if val is not None]
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(f"{col} = ?" for col, _ in used), tuple(val for _, val in used)


def _assignments(fields: dict[str, Any]) -> tuple[str, tuple]:
    """``SET`` text and its values; the dict columns (counts, report) are stored as JSON, and every write
    stamps ``updated_at``."""
    for column in ("counts", "report"):
        if fields.get(column) is not None:
            fields[column] = json.dumps(fields[column])
    fields["updated_at"] = time.time()
    return ", ".join(f"{k} = ?" for k in fields), tuple(fields.values())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _row(cls: type, row: Any, **parsed: Any) -> Any:
    """A row dataclass from a database row: its own columns only (secrets and extras stay behind)."""
    return cls(**{f.name: parsed[f.name] if f.name in parsed else row[f.name]
                  for f in dataclasses.fields(cls) if f.name in parsed or f.name in row.keys()})


def _json(text: Optional[str]) -> Any:
    return json.loads(text) if text else None


def _job(row: Any) -> JobRow:
    return _row(JobRow, row, params=_json(row["params"]) or {}, counts=_json(row["counts"]),
                set_exists=bool(row["set_exists"]) if "set_exists" in row.keys() else False)


def _distill(row: Any) -> DistillJobRow:
    return _row(DistillJobRow, row, config=_json(row["config"]), report=_json(row["report"]))


def _set(row: Any) -> SetRow:
    return _row(SetRow, row, counts=_json(row["counts"]) or {})
