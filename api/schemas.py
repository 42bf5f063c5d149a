"""Request and response models of the HTTP API (the documents themselves live in ``curator.formats``)."""
from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from curator.formats import CurateParams, FiniteFloat, iso


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageIn(_Body):
    name: str = Field(max_length=256)
    data: str = Field(description="base64-encoded image bytes")
    label: Optional[str] = Field(None, max_length=256)


class CurateRequest(_Body):
    """JSON form of POST /curate: base64 images, precomputed embeddings, or texts (one per query; texts
    need an index whose encoder has a text tower)."""
    params: CurateParams = Field(default_factory=CurateParams)
    images: Optional[list[ImageIn]] = None
    embeddings: Optional[list[list[FiniteFloat]]] = None
    texts: Optional[list[Annotated[str, Field(min_length=1, max_length=1000)]]] = Field(
        None, description='e.g. ["a photo of a cat", "a photo of a dog"]')
    labels: Optional[list[Optional[str]]] = None


class CurateForm(BaseModel):
    """Multipart form of POST /curate (described for the OpenAPI schema; parsed by hand, bounded)."""
    files: list[bytes] = Field(description="query images, one file each")
    params: Optional[str] = Field(None, description="CurateParams as a JSON string")
    labels: Optional[str] = Field(None, description="a JSON list of labels, one per file")


class DistillJobIn(_Body):
    """A distillation job: which transfer set, where the labelled set is (as the worker sees it), and any
    ``curator distill`` options (DistillConfig fields, less those the worker's machine fills in)."""
    transfer_set_id: str = Field(max_length=128)
    labelled: str = Field(max_length=4096)
    config: dict[str, Any] = Field(default_factory=dict)


class LeaseIn(_Body):
    """Claim a job, or renew the lease on one: who asks, and for how long."""
    worker: str = Field(min_length=1, max_length=128)
    lease_seconds: FiniteFloat = Field(60.0, ge=5.0, le=3600.0)


class HeartbeatIn(LeaseIn):
    """Renew a lease: the token that the claim returned proves the caller holds it."""
    lease_token: str = Field(min_length=8, max_length=128)


class FinishIn(_Body):
    worker: str = Field(min_length=1, max_length=128)
    lease_token: str = Field(min_length=8, max_length=128)
    state: str = Field(pattern="^(succeeded|failed)$")
    report: Optional[dict[str, Any]] = None
    student_url: Optional[str] = Field(None, max_length=4096)
    error: Optional[str] = Field(None, max_length=8192)


class JobOut(BaseModel):
    id: str
    kind: str
    state: str
    phase: Optional[str] = None
    progress: float = 0.0
    params: dict[str, Any]
    counts: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    transfer_set_id: Optional[str] = None
    transfer_set_url: Optional[str] = None
    created_at: str = Field(description="ISO 8601, UTC")
    updated_at: str

    @classmethod
    def from_row(cls, job: dict) -> "JobOut":
        url = f"/transfer-sets/{job['transfer_set_id']}" if job.get("transfer_set_id") else None
        return cls(**{k: job[k] for k in cls.model_fields if k in job} | _times(job), transfer_set_url=url)


class DistillJobOut(BaseModel):
    id: str
    state: str
    owner: Optional[str] = None
    config: dict[str, Any]
    transfer_set_id: str
    worker: Optional[str] = None
    lease_expires: Optional[str] = None
    attempts: int = 0
    report: Optional[dict[str, Any]] = None
    student_url: Optional[str] = None
    error: Optional[str] = None
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, job: dict) -> "DistillJobOut":
        return cls(**{k: job[k] for k in cls.model_fields if k in job} | _times(job))


def _times(row: dict) -> dict:
    return {k: iso(row[k]) for k in ("created_at", "updated_at", "lease_expires") if k in row}


class ClaimOut(DistillJobOut):
    lease_token: str = Field(description="the lease's secret: heartbeat and finish must present it")


class SetSummary(BaseModel):
    id: str
    job_id: Optional[str] = None
    counts: dict[str, Any]
    created_at: str
    manifest_sha256: str
    manifest_url: str

    @classmethod
    def from_row(cls, row: dict) -> "SetSummary":
        return cls(id=row["id"], job_id=row["job_id"], counts=row["counts"], created_at=iso(row["created_at"]),
                   manifest_sha256=row["manifest_sha256"], manifest_url=f"/transfer-sets/{row['id']}/manifest")


class HitOut(BaseModel):
    """A search result as the service shows it: the pool item by id and key, never by a server path."""
    id: int
    score: float
    key: str
    caption: Optional[str] = None


class TextQuery(BaseModel):
    """``POST /search`` by text: a caption-like phrase, embedded by the index's own text tower."""
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=1000)


class SearchOut(BaseModel):
    k: int
    hits: list[HitOut]


class HealthOut(BaseModel):
    status: str
    index_items: int
    encoder: Optional[str] = None


class OkOut(BaseModel):
    ok: bool = True


class ErrorItem(BaseModel):
    loc: list[Union[str, int]] = Field(default_factory=list)
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every error body: a sentence, or (a validation error) one item per offending field."""
    detail: Union[str, list[ErrorItem]]


#: Documented on every route, so a client (and schemathesis) knows every error's shape.
ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 415, 422)}
