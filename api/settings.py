"""Service settings: where things live, who may call, and how big a request may be."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Limits:
    """Every upload is bounded: count, bytes per file, bytes per request, decoded pixels."""
    max_files: int = 256
    max_file_bytes: int = 20 << 20
    max_request_bytes: int = 256 << 20
    max_pixels: int = 40_000_000
    max_budget: int = 2_000_000
    max_k: int = 1000


@dataclass
class Settings:
    index_dir: Path
    data_dir: Path
    api_keys_file: Optional[Path] = None
    no_auth: bool = False
    limits: Limits = field(default_factory=Limits)
    job_workers: int = 2
    wait_seconds: float = 120.0       # ?wait=true blocks at most this long, then answers 202

    @property
    def sets_dir(self) -> Path:
        return self.data_dir / "transfer-sets"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "curator.sqlite3"
