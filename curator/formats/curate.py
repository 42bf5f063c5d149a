"""Curation's documents: the parameters of a selection, the transfer-set manifest, and a
service job's saved inputs."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import ConfigDict, Field, model_serializer, model_validator

from .base import Doc, FiniteFloat, utcnow
from .index import DEFAULT_DEDUP, SkippedItem

TRANSFER_FORMAT = "curator.transfer-set/1"
JOB_INPUTS_FORMAT = "curator.job-inputs/1"
#: Neither a quota nor a budget may exceed this: far beyond any pool, far below an overflow.
MAX_IMAGES = 10_000_000


#: The selection strategies; ``curator.strategies`` registers one implementation for each.
Strategy = Literal["balanced", "class-balanced", "threshold", "random"]


class CurateParams(Doc):
    """How a transfer set is selected; the same model for the CLI, the API and the manifest."""
    strategy: Strategy = Field("balanced", description="balanced (the paper's query-balanced retrieval), "
                                                       "class-balanced, threshold, or random (the paper's control)")
    budget: Optional[int] = Field(None, ge=1, le=MAX_IMAGES,
                                  description="total images; the per-query quota follows from it")
    per_query: Optional[int] = Field(None, ge=1, le=MAX_IMAGES, description="images per query image (balanced)")
    threshold: Optional[FiniteFloat] = Field(None, ge=-1.0, le=1.0, description="minimum cosine (threshold strategy)")
    dedup: FiniteFloat = Field(DEFAULT_DEDUP, gt=0.0, le=1.0,
                               description="near-duplicates at or above this cosine collapse; 1 = off")
    exclude_threshold: FiniteFloat = Field(0.95, gt=0.0, le=1.0,
                                           description="pool items this close to a query or --exclude image are dropped")
    crops: int = Field(0, ge=0, le=16, description="extra random crops per query image")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    shard_size: int = Field(1000, ge=1, le=100_000, description="samples per webdataset shard")
    materialize: Literal["reference", "copy"] = Field(
        "reference", description="reference: the set is samples.parquet (pool source, offset, size, sha256 per "
                                 "sample) and its shards are assembled from the pool when read; copy: the shards "
                                 "are written out")

    @model_validator(mode="after")
    def _one_size(self) -> "CurateParams":
        if self.strategy == "threshold":
            if self.threshold is None:
                raise ValueError("the threshold strategy needs 'threshold'")
            if self.per_query is not None:
                raise ValueError("'per_query' does not apply to the threshold strategy; use 'budget'")
        elif self.budget is not None and self.per_query is not None:
            raise ValueError("give 'budget' or 'per_query', not both")
        elif self.budget is None and self.per_query is None:
            self.per_query = 100
        return self


class IndexRef(Doc):
    """The pool index a set was curated from, by name and content hash (never a server path)."""
    name: str
    manifest_sha256: str
    encoder: str
    index_factory: str
    ntotal: int
    generation: int = 0   # the index generation the set was searched on (each --append makes one)


class QueryEntry(Doc):
    id: str
    label: Optional[str] = None
    quota: int
    taken: int


class ShardEntry(Doc):
    """One shard in webdataset's ``wids-shard-index-v1`` form, plus its sha256.

    ``md5sum`` is optional in wids and no reader checks it. New sets leave it out: md5 runs at half
    sha256's speed, and was a third of a by-reference set's write. Older sets keep theirs."""
    url: str
    nsamples: int
    filesize: int
    md5sum: Optional[str] = None
    sha256: str

    @model_serializer(mode="wrap")
    def _omit_absent_md5(self, handler):
        """Absent, not null: a wids tool that reads ``md5sum`` expects a string when the key is there."""
        data = handler(self)
        if data.get("md5sum") is None:
            data.pop("md5sum", None)
        return data


class TransferCounts(Doc):
    queries: int = 0
    query_views: int = 0
    exclude_vectors: int = 0
    candidates: int = 0
    excluded: int = 0
    deduped: int = 0
    search_depth: int = 0
    emitted: int = 0
    unreadable: int = 0


class TransferManifest(Doc):
    """``manifest.json`` of a transfer set; a webdataset ``wids`` shard index as it stands."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    format: Literal["curator.transfer-set/1"] = TRANSFER_FORMAT
    kind: Literal["wids-shard-index-v1"] = Field("wids-shard-index-v1", alias="__kind__")
    wids_version: int = 1
    id: str
    created_at: str = Field(default_factory=utcnow)
    index: IndexRef
    params: CurateParams
    queries: list[QueryEntry]
    dry_queries: list[str] = Field(default_factory=list)
    skipped_queries: list[SkippedItem] = Field(default_factory=list,
                                               description="query images left out (undecodable), with the reason")
    counts: TransferCounts
    timings: dict[str, float] = Field(default_factory=dict)
    shardlist: list[ShardEntry] = Field(default_factory=list)
    url_list: Optional[str] = Field(None, description="a set of pool items known only by URL: this file (urls.parquet) "
                                                      "lists them for img2dataset, and curator materialize downloads "
                                                      "them into shards")
    packed: Optional[dict] = Field(None, description="set by benchmarks/pack_kt.py: how the images were re-encoded")


class JobInputs(Doc):
    """``uploads/JOB/inputs.json``: a curation job's saved queries, so it survives a restart."""
    format: Literal["curator.job-inputs/1"] = JOB_INPUTS_FORMAT
    ids: list[str]
    labels: list[Optional[str]]
    files: list[Optional[str]]
    vectors: bool = False
