"""The service's HTTP documents: what a client sends and what it gets back.

They live in the core beside the documents on disk, so that the service answers with them and the
client and the distill worker parse into them: one model per message, typed to the last field, and
a field renamed on one side fails the other's tests rather than a user's job.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .base import FiniteFloat
from .curate import CurateParams, TransferCounts
from .distill import DistillReport

#: A job's states; the first two are active (it may still change).
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")


class _Body(BaseModel):
    """A request body: an unknown key is a 422 that names it."""
    model_config = ConfigDict(extra="forbid")


class _Answer(BaseModel):
    """A response: a client reads the fields it knows, so a newer server may add some."""
    model_config = ConfigDict(extra="ignore")


class DistillJobIn(_Body):
    """A distillation job: which transfer set, where the labelled set is (as the worker sees it), and any
    ``curator distill`` options (DistillConfig fields, less those the worker's machine fills in)."""
    transfer_set_id: str = Field(max_length=128)
    labelled: str = Field(max_length=4096)
    config: dict[str, Any] = Field(default_factory=dict, description="DistillConfig fields, validated at submit")


class LeaseIn(_Body):
    """Claim a job, or renew the lease on one: who asks, and for how long."""
    worker: str = Field(min_length=1, max_length=128)
    lease_seconds: FiniteFloat = Field(60.0, ge=5.0, le=3600.0)


class HeartbeatIn(LeaseIn):
    """Renew a lease: the token that the claim returned proves the caller holds it."""
    lease_token: str = Field(min_length=8, max_length=128)


class FinishIn(_Body):
    """A worker's result: the report of a run that succeeded, or the error of one that failed."""
    worker: str = Field(min_length=1, max_length=128)
    lease_token: str = Field(min_length=8, max_length=128)
    state: Literal["succeeded", "failed"]
    report: Optional[DistillReport] = None
    student_url: Optional[str] = Field(None, max_length=4096)
    error: Optional[str] = Field(None, max_length=8192)


class JobOut(_Answer):
    """A curation job as the service shows it."""
    id: str
    kind: str
    state: JobState
    phase: Optional[str] = None
    progress: float = 0.0
    params: CurateParams
    counts: Optional[TransferCounts] = None
    error: Optional[str] = None
    transfer_set_id: Optional[str] = None
    transfer_set_url: Optional[str] = None
    created_at: str = Field(description="ISO 8601, UTC")
    updated_at: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class DistillJobOut(_Answer):
    """A distillation job as the service shows it."""
    id: str
    state: JobState
    owner: Optional[str] = None
    config: dict[str, Any] = Field(description="DistillConfig fields the worker runs, 'labelled' included")
    transfer_set_id: str
    worker: Optional[str] = None
    lease_expires: Optional[str] = None
    attempts: int = 0
    report: Optional[DistillReport] = None
    student_url: Optional[str] = None
    error: Optional[str] = None
    created_at: str
    updated_at: str


class ClaimOut(DistillJobOut):
    lease_token: str = Field(description="the lease's secret: heartbeat and finish must present it")


class SetSummary(_Answer):
    """A transfer set in a listing: its counts and where its manifest is."""
    id: str
    job_id: Optional[str] = None
    counts: TransferCounts
    created_at: str
    manifest_sha256: str
    manifest_url: str
    wids_url: Optional[str] = Field(None, description="the set's wids index, signed for the caller: readers "
                                                      "that send no header (wids, webdataset) start here")


class WidsShard(_Answer):
    url: str = Field(description="absolute, signed: a reader fetches it with no header until it expires")
    nsamples: int
    filesize: int
    sha256: str


class WidsIndex(_Answer):
    """``GET /transfer-sets/ID/wids.json``: the set as a wids shard index whose shard URLs are signed for
    the caller, so ``wids.ShardListDataset(url)`` and ``webdataset.WebDataset(urls)`` read it as they are."""
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    kind: Literal["wids-shard-index-v1"] = Field("wids-shard-index-v1", alias="__kind__")
    wids_version: Literal[1] = 1
    name: str
    shardlist: list[WidsShard]
