"""Versioned on-disk formats, validated with pydantic at every boundary.

Each JSON document carries ``format: "curator.<name>/<version>"``. Readers refuse a
major version they do not know instead of guessing. ``docs/formats.md`` describes the
same models in prose; keep the two in step.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Literal, Optional, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import CuratorError

PLAN_FORMAT = "curator.build-plan/1"
SHARD_FORMAT = "curator.embedding-shard/1"
INDEX_FORMAT = "curator.index/1"
REPORT_FORMAT = "curator.build-report/1"
TRANSFER_FORMAT = "curator.transfer-set/1"

#: Columns of every per-shard metadata parquet and of the index's ``items.arrow``.
#: ``source`` + ``offset`` + ``size`` locate the original bytes: one ranged read.
ITEM_SCHEMA = pa.schema([
    ("key", pa.string()),        # webdataset sample key, or path relative to the input folder
    ("source", pa.string()),     # tar URL/path, or absolute image file path
    ("offset", pa.int64()),      # byte offset of the image inside ``source``
    ("size", pa.int64()),        # byte length of the image
    ("sha256", pa.string()),     # of the original image bytes
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("caption", pa.string()),    # the sample's .txt, if any
    ("meta", pa.string()),       # the sample's .json, verbatim, if any
])
#: ``row`` is the item's row in ``shards/<shard_id>.npy``: its embedding, without a second copy.
INDEX_ITEM_SCHEMA = pa.schema([("id", pa.int64()), ("shard_id", pa.string()), ("row", pa.int64())]
                              + list(ITEM_SCHEMA))


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShardTask(_Doc):
    """One self-contained unit of embedding work: its inputs are fully named here."""
    shard_id: str
    kind: Literal["folder", "tar"]
    source: str                        # folder root, or the tar's path/URL
    files: Optional[list[str]] = None  # folder shards: paths relative to ``source``

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class BuildPlan(_Doc):
    format: Literal["curator.build-plan/1"] = PLAN_FORMAT
    inputs: list[str]
    encoder: str
    max_pixels: int
    shard_size: int
    tasks: list[ShardTask]


class SkippedItem(_Doc):
    key: str
    source: str
    reason: str
    detail: str = ""


class ShardDone(_Doc):
    """The done-marker, written atomically after the shard's embeddings and metadata."""
    format: Literal["curator.embedding-shard/1"] = SHARD_FORMAT
    shard_id: str
    task_digest: str
    encoder: str
    dim: int
    n_items: int
    n_skipped: int
    skipped: list[SkippedItem] = Field(default_factory=list)
    embeddings_file: str
    metadata_file: str
    seconds: float
    created_at: str = Field(default_factory=utcnow)


class EncoderInfo(_Doc):
    spec: str
    dim: int
    image_size: int
    precision: str = "fp32"
    preprocess: dict = Field(default_factory=dict)


class IndexManifest(_Doc):
    format: Literal["curator.index/1"] = INDEX_FORMAT
    encoder: EncoderInfo
    dim: int
    metric: Literal["inner_product"] = "inner_product"
    index_factory: str                  # passed verbatim to faiss.index_factory
    index_file: str = "index.faiss"
    items_file: str = "items.arrow"
    nprobe: Optional[int] = None
    ntotal: int
    n_duplicates: int
    recall_at_10: float
    recall_queries: int
    target_recall: float
    train_size: int
    index_bytes: int
    max_index_memory: int
    build_seconds: float
    embedding_shards: list[str]
    created_at: str = Field(default_factory=utcnow)


class BuildReport(_Doc):
    format: Literal["curator.build-report/1"] = REPORT_FORMAT
    items: int
    skipped: int
    skipped_by_reason: dict[str, int]
    skipped_items: list[SkippedItem]
    duplicates: int
    shards_total: int
    shards_reused: int
    embed_seconds: float
    embed_images_per_s: float
    index_seconds: float
    total_seconds: float
    index_factory: str
    recall_at_10: float
    created_at: str = Field(default_factory=utcnow)


class CurateParams(_Doc):
    """How a transfer set is selected; the same model for the CLI, the API and the manifest."""
    strategy: Literal["balanced", "class-balanced", "threshold", "random"] = "balanced"
    budget: Optional[int] = Field(None, ge=1, description="total images; the per-query quota follows from it")
    per_query: Optional[int] = Field(None, ge=1, description="images per query image (balanced)")
    threshold: Optional[float] = Field(None, ge=-1.0, le=1.0, description="minimum cosine (threshold strategy)")
    dedup: float = Field(0.95, gt=0.0, le=1.0, description="near-duplicates at or above this cosine collapse; 1 = off")
    exclude_threshold: float = Field(0.95, gt=0.0, le=1.0,
                                     description="pool items this close to a query or --exclude image are dropped")
    crops: int = Field(0, ge=0, le=16, description="extra random crops per query image")
    seed: int = 0
    shard_size: int = Field(1000, ge=1, le=100_000, description="samples per webdataset shard")

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


M = TypeVar("M", bound=BaseModel)


def load_doc(path: str | Path, model: type[M]) -> M:
    """Read and validate a JSON document; errors name the file and the field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CuratorError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise CuratorError(f"{path} is not valid JSON: {exc}") from None
    want = model.model_fields.get("format")
    if want is not None and isinstance(raw, dict):
        fmt = str(raw.get("format", ""))
        expected = want.default
        if fmt.split("/")[0] != expected.split("/")[0] or fmt != expected:
            raise CuratorError(f"{path} has format {fmt!r}; this curator reads {expected!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise CuratorError(f"{path} is not a valid {model.__name__}: {exc}") from None
