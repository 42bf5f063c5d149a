"""The HTTP API's own request models, and the store's rows as the protocol's documents (those live in
``curator.formats.protocol``, where the client and the worker parse them too)."""
from __future__ import annotations

from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curator.formats import CurateParams, DistillReport, FiniteFloat, iso
from curator.formats.protocol import ClaimOut, DistillJobOut, JobOut, SetSummary

from .store import DistillJobRow, JobRow, SetRow


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


def job_out(row: JobRow) -> JobOut:
    url = f"/transfer-sets/{row.transfer_set_id}" if row.transfer_set_id and row.set_exists else None
    return JobOut(id=row.id, kind=row.kind, state=row.state, phase=row.phase, progress=row.progress or 0.0,
                  params=row.params, counts=row.counts, error=row.error, transfer_set_id=row.transfer_set_id,
                  transfer_set_url=url, created_at=iso(row.created_at), updated_at=iso(row.updated_at))


def distill_job_out(row: DistillJobRow, lease_token: Optional[str] = None) -> DistillJobOut:
    """The job as the protocol shows it, whatever its row holds: a config that is not an object, or a
    report that no longer validates (written by an older server), reads as empty, never as a 500."""
    fields = dict(id=row.id, state=row.state, owner=row.owner, config=row.config if isinstance(row.config, dict) else {},
                  transfer_set_id=row.transfer_set_id, worker=row.worker, lease_expires=iso(row.lease_expires),
                  attempts=row.attempts or 0, report=_report(row.report), student_url=row.student_url,
                  error=row.error, created_at=iso(row.created_at), updated_at=iso(row.updated_at))
    return DistillJobOut(**fields) if lease_token is None else ClaimOut(**fields, lease_token=lease_token)


def _report(raw) -> Optional[DistillReport]:
    try:
        return DistillReport.model_validate(raw) if raw is not None else None
    except ValidationError:
        return None


def set_summary(row: SetRow, wids_url: Optional[str] = None) -> SetSummary:
    return SetSummary(id=row.id, job_id=row.job_id, counts=row.counts, created_at=iso(row.created_at),
                      manifest_sha256=row.manifest_sha256, manifest_url=f"/transfer-sets/{row.id}/manifest",
                      wids_url=wids_url)


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
