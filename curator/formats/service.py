"""The service's settings and bounds, as models: ``curator serve``'s flags and their defaults come from here."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional

from pydantic import ConfigDict, Field, field_validator

from ..errors import CuratorError
from ..images import DEFAULT_MAX_PIXELS
from .base import Doc, FiniteFloat
from .curate import MAX_IMAGES
from .index import parse_bytes


class Limits(Doc):
    """Every upload is bounded: count, bytes per file, bytes per request, decoded pixels."""
    max_files: int = Field(256, ge=1, le=100_000, description="images per request")
    max_file_bytes: int = Field(20 << 20, ge=1, description="bytes per image")
    max_request_bytes: int = Field(256 << 20, ge=1, description="bytes per request")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="decoded pixels per image")
    max_request_pixels: int = Field(400_000_000, ge=1, description="decoded pixels per request, all images together")
    max_budget: int = Field(2_000_000, ge=1, le=MAX_IMAGES, description="images per transfer set")
    max_k: int = Field(1000, ge=1, le=100_000, description="neighbours per search")


class ServiceSettings(Doc):
    """``curator serve``'s settings: where things live, who may call, and how long anything may take.
    The command's flags and their defaults are generated from here; the service reads this model."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    index_dir: Path = Field(description="a folder written by build-index")
    data_dir: Path = Field(description="service state: SQLite, uploads, transfer sets")
    api_keys_file: Optional[Path] = Field(None, description="file of name:scopes:secret lines (also: $CURATOR_API_KEYS)")
    no_auth: bool = Field(False, description="accept every caller (local development only)")
    limits: Limits = Field(default_factory=Limits)
    job_workers: int = Field(2, ge=1, le=256, description="curation jobs run at once")
    wait_seconds: FiniteFloat = Field(120.0, gt=0, description="?wait=true blocks at most this long, then answers 202")
    body_timeout: FiniteFloat = Field(30.0, gt=0, description="seconds a request body may take to arrive; a client "
                                                              "that sends less than it promised is cut off")
    keep_alive_timeout: FiniteFloat = Field(5.0, gt=0, description="an idle connection is closed after this")
    header_timeout: FiniteFloat = Field(10.0, gt=0, description="seconds a request's headers may take to arrive")
    public_metrics: bool = Field(False, description="serve /metrics without an admin key")
    public_docs: bool = Field(False, description="serve the /docs page, and /openapi.json without a key (the schema "
                                                 "otherwise needs a read key)")
    keep_sets_days: Optional[FiniteFloat] = Field(None, gt=0, description="remove transfer sets (and their jobs' "
                                                                          "rows) older than this many days (default: "
                                                                          "keep them)")
    max_data_bytes: Optional[int] = Field(None, gt=0, json_schema_extra={"bytes": True},
                                          description="keep --data under this size (e.g. 200G): the oldest sets go "
                                                      "first, then the thumbnail cache (default: no cap)")
    database: Optional[str] = Field(None, description="state shared by several serve replicas: "
                                                      "postgresql://USER:PASSWORD@HOST:PORT/DB; the replicas must also "
                                                      "share --data (also: $CURATOR_DATABASE, which keeps the password "
                                                      "out of the process list; default: SQLite in --data)")
    replica: str = Field(default_factory=lambda: default_replica(None),
                         description="this replica's name, which must differ between replicas and stay the same "
                                     "across a restart, so it takes back at once the jobs it was running (default: "
                                     "HOST:PORT)")
    signed_url_seconds: FiniteFloat = Field(3600.0, gt=0, le=7 * 86400,
                                            description="how long a signed shard or wids-index URL stays valid")
    job_lease_seconds: FiniteFloat = Field(30.0, gt=0, description="a job whose replica stopped renewing its lease "
                                                                   "for this long is run by another")
    poll_seconds: FiniteFloat = Field(1.0, gt=0, description="how often an idle replica looks for jobs queued on "
                                                             "another")
    max_headers: int = Field(100, ge=1, description="header lines per request")
    max_header_bytes: int = Field(16 << 10, ge=1, description="header bytes per request")

    @field_validator("max_data_bytes", mode="before")
    @classmethod
    def _bytes(cls, value):
        if not isinstance(value, str):
            return value
        try:
            return parse_bytes(value)
        except CuratorError:
            raise ValueError(f"{value!r} is not a size: expected e.g. 500M, 200G or 1T") from None

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
