"""The service's database: SQLite (WAL) on the data folder by default, or a shared PostgreSQL.

The store writes one SQL text for both: ``?`` placeholders, ``IS NOT DISTINCT FROM`` for nullable
equality, ``DOUBLE PRECISION`` times. Each statement runs on its own (autocommit), and its rows are
read before the connection goes back, so a result never holds a connection. What differs is
behind ``dialect``: only PostgreSQL can ``SKIP LOCKED`` while replicas claim jobs.
"""
from __future__ import annotations

import re
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Protocol

from curator.errors import CuratorError

#: Held while a replica creates or migrates the schema (two replicas starting at once).
SCHEMA_LOCK_KEY = 0x63757261746F72


@dataclass
class Result:
    """A statement's rows (as dicts) and how many rows it changed."""
    rows: list[dict] = field(default_factory=list)
    rowcount: int = 0

    def fetchone(self) -> Optional[dict]:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)


class Database(Protocol):
    dialect: str

    def execute(self, sql: str, args: tuple = ()) -> Result: ...

    def columns(self, table: str) -> set[str]: ...

    def schema_lock(self): ...

    def close(self) -> None: ...


class SQLiteDatabase:
    """One connection per thread (sqlite3 objects are not shared across threads); WAL lets the event
    loop read while a job thread writes, and several processes on one host may share the file."""
    dialect = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()
        self.execute("PRAGMA journal_mode=WAL")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def execute(self, sql: str, args: tuple = ()) -> Result:
        cur = self._conn().execute(sql, args)
        rows = [dict(r) for r in cur.fetchall()] if cur.description else []
        return Result(rows, cur.rowcount)

    def columns(self, table: str) -> set[str]:
        return {row["name"] for row in self.execute(f"PRAGMA table_info({table})")}

    @contextmanager
    def schema_lock(self):
        yield  # SQLite serialises schema changes on its own write lock

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class PostgresDatabase:
    """A small connection pool shared by the request threads, the job threads and the dispatcher:
    a thread per connection would run a replica out of PostgreSQL's connection slots."""
    dialect = "postgresql"

    def __init__(self, url: str, max_connections: int = 8):
        try:
            import psycopg
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise CuratorError("--database postgresql://... needs the postgres extra: "
                               "pip install 'curator[postgres]'") from None
        try:  # one direct connection first: a wrong host or password fails now, with libpq's reason
            psycopg.connect(url, connect_timeout=10).close()
        except Exception as exc:
            raise CuratorError(f"--database {redact(url)}: cannot connect: {_first_line(exc)}") from None
        self.url = url
        self.pool = ConnectionPool(url, min_size=1, max_size=max_connections, open=True, name="curator",
                                   kwargs={"autocommit": True, "row_factory": dict_row})

    def execute(self, sql: str, args: tuple = ()) -> Result:
        with self.pool.connection() as conn:
            cur = conn.execute(_placeholders(sql), args)
            rows = list(cur.fetchall()) if cur.description else []
            return Result(rows, cur.rowcount)

    def columns(self, table: str) -> set[str]:
        return {r["column_name"] for r in self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,))}

    @contextmanager
    def schema_lock(self):
        with self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))

    def close(self) -> None:
        self.pool.close()


def open_database(url: Optional[str], default_path: Path) -> Database:
    """``url`` from ``--database``: None for SQLite at ``default_path``, ``sqlite:///PATH``, or
    ``postgresql://USER:PASSWORD@HOST:PORT/DB`` (also ``postgres://``, and libpq's ``?host=/socket/dir``)."""
    if url is None:
        return SQLiteDatabase(default_path)
    if url.startswith("sqlite:///"):
        return SQLiteDatabase(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    raise CuratorError(f"--database {redact(url)}: expected postgresql://USER@HOST:PORT/DB or sqlite:///PATH")


def redact(url: str) -> str:
    """A database URL as it may be shown: never its password."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _placeholders(sql: str) -> str:
    """``?`` to psycopg's ``%s`` (the store's SQL holds no literal ``?`` or ``%``)."""
    return sql.replace("?", "%s")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0]) if text else type(exc).__name__
