"""Service settings: where things live, who may call, and how big a request may be."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from curator.formats import Limits


@dataclass
class Settings:
    index_dir: Path
    data_dir: Path
    api_keys_file: Optional[Path] = None
    no_auth: bool = False
    limits: Limits = field(default_factory=Limits)
    job_workers: int = 2
    wait_seconds: float = 120.0       # ?wait=true blocks at most this long, then answers 202
    body_timeout: float = 30.0        # a request body must arrive within this (a client cannot hold a worker)
    keep_alive_timeout: float = 5.0   # an idle connection is closed after this
    header_timeout: float = 10.0      # a request's headers must arrive within this (api.protocol)
    public_metrics: bool = False      # /metrics without an admin key
    public_docs: bool = False         # /docs and /openapi.json without a key (/docs exists only then)
    keep_sets_days: Optional[float] = None  # sets (and their jobs' rows) older than this are removed (None: kept)
    max_data_bytes: Optional[int] = None    # above this, the oldest sets go, then the thumbnail cache (None: no cap)
    database: Optional[str] = None          # postgresql://... shared by replicas (None: SQLite in data_dir)
    replica: str = field(default_factory=lambda: default_replica(None))  # who holds a job's lease
    job_lease_seconds: float = 30.0   # a job whose replica stopped renewing for this long is claimed again
    poll_seconds: float = 1.0         # how often an idle replica looks for jobs queued on another
    max_headers: int = 100
    max_header_bytes: int = 16 << 10

    @property
    def sets_dir(self) -> Path:
        return self.data_dir / "transfer-sets"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "curator.sqlite3"


def default_replica(port: Optional[int]) -> str:
    """A replica's name: the same after a restart (so it takes its own interrupted jobs back at once),
    distinct between replicas (host and port; the process id where no port is known)."""
    return f"{socket.gethostname()}:{port if port is not None else os.getpid()}"
