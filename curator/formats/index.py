"""The index builder's documents: the plan, shard done-markers, the index manifest, the report,
and the Arrow item schema that every shard and ``items.arrow`` share."""
from __future__ import annotations

import hashlib
import os
from typing import Literal, Optional, Union

import pyarrow as pa
from pydantic import Field, field_validator

from ..errors import CuratorError
from ..images import DEFAULT_MAX_PIXELS
from ..specs import DEFAULT_ENCODER
from .base import Doc, FiniteFloat, utcnow

PLAN_FORMAT = "curator.build-plan/1"
SHARD_FORMAT = "curator.embedding-shard/1"
INDEX_FORMAT = "curator.index/1"
REPORT_FORMAT = "curator.build-report/1"
GENERATION_START_FORMAT = "curator.generation-start/1"
#: The file that marks a complete index folder (written last).
INDEX_MANIFEST_NAME = "index.json"

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


class ShardTask(Doc):
    """One self-contained unit of embedding work: its inputs are fully named here."""
    shard_id: str
    kind: Literal["folder", "tar", "embeddings"]
    source: str                        # folder root, the tar's path/URL, or an embeddings .npy
    files: Optional[list[str]] = None  # folder shards: paths relative to ``source``; embeddings: its metadata

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class BuildPlan(Doc):
    format: Literal["curator.build-plan/1"] = PLAN_FORMAT
    inputs: list[str]
    encoder: str
    precision: str = "fp32"
    max_pixels: int
    shard_size: int
    keep_duplicates: bool = False
    seed: int = 0
    recall_queries: int = 1000
    tasks: list[ShardTask]


class SkippedItem(Doc):
    key: str
    source: str
    reason: str
    detail: str = ""


class ShardDone(Doc):
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


class EncoderInfo(Doc):
    spec: str
    dim: int
    image_size: int
    precision: str = "fp32"
    preprocess: dict = Field(default_factory=dict)


class LinksInfo(Doc):
    """Every pool item's near-duplicates at cosine >= ``threshold``, found once at build time
    (``curator build-index --dedup-links``) so that curations with ``--dedup`` at or above it look
    them up instead of searching for them. One CSR table of memory-mapped ``.npy`` files:
    ``indptr`` (ntotal + 1 offsets) into ``neighbours`` (pool ids) and ``cosines`` (float32, so a
    pair just under a curation's threshold is never rounded over it)."""
    threshold: FiniteFloat = Field(gt=0, lt=1)
    indptr_file: str
    neighbours_file: str
    cosines_file: str
    links: int                 # stored links: each near-duplicate pair twice, once from each end
    #: Of a sample's pairs found comparing whole cells (as a curation does), the share the links hold:
    #: large pools are split into finer sub-cells at build time to bound its cost.
    recall: FiniteFloat = 1.0
    seconds: float


class IndexManifest(Doc):
    format: Literal["curator.index/1"] = INDEX_FORMAT
    encoder: EncoderInfo
    dim: int
    metric: Literal["inner_product"] = "inner_product"
    index_factory: str                  # passed verbatim to faiss.index_factory
    #: ``memory``: one faiss file, read (or mapped) whole; ``on-disk``: IVF lists in ``lists_file``
    #: beside ``index_file``, memory-mapped, so the index never has to fit in RAM.
    layout: Literal["memory", "on-disk"] = "memory"
    #: Each build or append writes a new generation folder; this file switching is the commit.
    generation: int = 0
    index_file: str = "index.faiss"
    items_file: str = "items.arrow"
    lists_file: Optional[str] = None
    #: The trained, empty index (quantizer and codec): appends add to copies of it, never retrain.
    trained_file: Optional[str] = None
    #: Pool size when the quantizer was trained: appends warn when the pool has outgrown it.
    trained_ntotal: Optional[int] = None
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
    #: Where the vectors came from: ``images`` (embedded here) or ``embeddings`` (imported, --embeddings).
    source_kind: Literal["images", "embeddings"] = "images"
    #: Precomputed near-duplicate links of this generation, if built (``--dedup-links``).
    links: Optional[LinksInfo] = None
    created_at: str = Field(default_factory=utcnow)


class GenerationStart(Doc):
    """Written first into a new generation folder: what it is being built for. A killed build that is
    run again with the same inputs and settings resumes that folder (its trained quantizer, item table
    and finished index parts) instead of starting the hours-long fill of a large pool over; anything
    else it asks for starts the folder afresh."""
    format: Literal["curator.generation-start/1"] = GENERATION_START_FORMAT
    index_factory: str
    layout: Literal["memory", "on-disk"]
    ntotal: int
    dim: int
    train_size: int
    seed: int
    keep_duplicates: bool
    embedding_shards: list[str]
    #: Rows per index part, fixed when the fill first starts, so that resumed parts line up.
    part_rows: Optional[int] = None


class BuildReport(Doc):
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
    layout: Literal["memory", "on-disk"] = "memory"
    generation: int = 0
    peak_rss_bytes: Optional[int] = None
    appended: Optional[int] = None       # items added by --append (None for a full build)
    warnings: list[str] = Field(default_factory=list)
    created_at: str = Field(default_factory=utcnow)


def parse_bytes(text: str | int) -> int:
    """``"4G"``, ``"512M"``, ``"1.5GB"`` or a plain integer, in bytes."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if s and s[-1] in units:
            return int(float(s[:-1]) * units[s[-1]])
        return int(s)
    except ValueError:
        raise CuratorError(f"cannot read {text!r} as a size; use e.g. 512M or 4G") from None


def default_workers() -> int:
    """One core for the model's main thread, the rest decode (at least one worker)."""
    return max(1, (os.cpu_count() or 2) - 1)


#: Curation's near-duplicate cosine when none is given (``CurateParams.dedup``), and so the cosine an
#: index links its items at by default.
DEFAULT_DEDUP = 0.95
#: From this many items up a build links near-duplicates by default: below it a curation's own search for
#: them takes well under a second.
LINKS_AUTO_MIN = 100_000


class BuildConfig(Doc):
    """``curator build-index``'s settings; the CLI's flags and defaults are generated from here."""
    encoder: str = Field(DEFAULT_ENCODER, description="encoder spec (offline: packaged:efficientnet-lite2)")
    device: str = Field("cpu", description="cpu, cuda or cuda:N (cuda without a GPU is an error)")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast precision for the encoder (bf16 helps on CPUs with AVX512-BF16/AMX)")
    batch_size: int = Field(64, ge=1, le=65_536)
    workers: int = Field(default_factory=default_workers, ge=0, le=1024,
                         description="decode/resize worker processes (0 = in the main process; default: cores - 1)")
    worker_nice: Optional[int] = Field(None, ge=0, le=19, description="CPU priority of decode workers (default: 19 "
                                                                      "on --device cpu so the model keeps its cores, 0 on cuda)")
    shard_size: int = Field(1000, ge=1, le=10_000_000, description="images per work unit for folder inputs")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="skip (and report) images with more decoded pixels "
                                                                   "than this; JPEGs are decoded reduced first")
    max_index_memory: int = Field(4 << 30, ge=1, description="memory budget for the index, e.g. 512M, 4G",
                                  json_schema_extra={"bytes": True})
    max_build_memory: int = Field(8 << 30, ge=64 << 20, description="peak memory of the index build, all its "
                                                                   "processes together; past it the index is built "
                                                                   "out of core (on-disk lists)",
                                  json_schema_extra={"bytes": True})
    layout: Literal["auto", "memory", "on-disk"] = Field(
        "auto", description="index layout: on-disk IVF lists are memory-mapped and never loaded whole; auto picks "
                            "on-disk when the index would not fit half of --max-build-memory")
    index_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024,
                               description="processes that fill the index's parts in parallel (out-of-core builds)")
    runner: Literal["local", "ray"] = Field("local", description="where shards are embedded and index parts filled: "
                                                                  "this process, or a Ray cluster")
    ray_address: Optional[str] = Field(None, description="Ray cluster to join (auto, ray://HOST:PORT); default: "
                                                         "start a local Ray instance")
    append: bool = Field(False, description="add new --input to the existing index in --out with its trained "
                                            "quantizer (a new generation; nothing is re-embedded)")
    retrain: bool = Field(False, description="with --append: retrain the quantizer on the whole pool")
    target_recall: FiniteFloat = Field(0.95, gt=0, le=1, description="raise nprobe until recall@10 vs exact search "
                                                                     "reaches this")
    index_factory: Optional[str] = Field(None, description="force a faiss index_factory string (e.g. 'IVF4096,SQ8'); "
                                                           "default: chosen from the pool size and --max-index-memory")
    keep_duplicates: bool = Field(False, description="index exact duplicates (same bytes) as separate items, e.g. one "
                                                     "image with several captions")
    dedup_links: Union[Literal["auto", "off"], float] = Field(
        "auto", description="also find every item's near-duplicates at this cosine or above: curations with --dedup at "
                            "or above it look them up instead of searching, most of a deep curation's time; costs "
                            f"about one more pass over the pool. auto: at curate's default --dedup ({DEFAULT_DEDUP}) "
                            f"for pools of {LINKS_AUTO_MIN:,} items or more; off: never")

    @field_validator("dedup_links", mode="before")
    @classmethod
    def _links(cls, value):
        """auto, off, or a cosine in (0, 1): one error that the flag's name goes with."""
        if value in ("auto", "off"):
            return value
        try:
            cosine = float(value)
        except (TypeError, ValueError):
            cosine = float("nan")
        if not 0 < cosine < 1:
            raise ValueError(f"{value!r}: use auto, off, or a cosine between 0 and 1 (exclusive)")
        return cosine

    def links_threshold(self, ntotal: int) -> Optional[float]:
        """The cosine to link the pool's near-duplicates at, or None for no links."""
        if self.dedup_links == "off":
            return None
        if self.dedup_links == "auto":
            return DEFAULT_DEDUP if ntotal >= LINKS_AUTO_MIN else None
        return float(self.dedup_links)
    recall_queries: int = Field(1000, ge=1, description="pool vectors used to measure recall@10")
    seed: int = Field(0, ge=0, description="seed of the training sample and the recall queries")
    overwrite: bool = Field(False, description="discard an earlier build in --out")
    progress: bool = True
    download: dict = Field(default_factory=dict, description="img2dataset options for URL-list inputs")

    @field_validator("max_index_memory", "max_build_memory", mode="before")
    @classmethod
    def _bytes(cls, value):
        return parse_bytes(value) if isinstance(value, str) else value
