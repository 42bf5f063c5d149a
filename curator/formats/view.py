"""What a person looks at in a transfer set: each query beside what it pulled in (rank order) and
what the rules kept out, with the reason; and a 2-D map of the queries and their set. The service's
UI, its ``/transfer-sets/{id}/view`` and ``/map`` answers, and ``curator report`` all read these."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import Doc
from .curate import CurateParams, TransferCounts

VIEW_FORMAT = "curator.set-view/1"
MAP_FORMAT = "curator.set-map/1"


class ViewItem(Doc):
    pool_id: int
    key: Optional[str] = Field(None, description="the pool item's key (its name in the pool, never a server path)")
    sample_key: Optional[str] = Field(None, description="the sample's key in the shards (None: dropped)")
    rank: int = Field(description="0-based rank in the query's merged neighbour list (-1: a random draw)")
    similarity: Optional[float] = None
    caption: Optional[str] = None
    reason: Optional[Literal["near-duplicate", "query", "contamination"]] = Field(
        None, description="why it was left out: a near-duplicate of one taken, a query's own image, or close to an "
                          "--exclude image")


class ViewQuery(Doc):
    index: int
    id: str
    label: Optional[str] = None
    quota: int = 0
    taken: int = 0
    thumbnail: bool = Field(False, description="the set holds a thumbnail of this query image")
    items: list[ViewItem] = Field(default_factory=list, description="taken, in rank order")
    dropped: list[ViewItem] = Field(default_factory=list, description="left out, in rank order")


class SetView(Doc):
    format: Literal["curator.set-view/1"] = VIEW_FORMAT
    id: str
    params: CurateParams
    counts: TransferCounts
    index_name: str
    shards: list[str]
    queries: list[ViewQuery]
    unattributed: list[ViewItem] = Field(default_factory=list,
                                         description="dropped items of a random draw (no query found them)")


class MapPoint(Doc):
    x: float
    y: float
    kind: Literal["query", "item"]
    query: int = Field(description="the query's index (for an item: the query it came from)")
    label: Optional[str] = None
    pool_id: Optional[int] = None


class SetMap(Doc):
    format: Literal["curator.set-map/1"] = MAP_FORMAT
    id: str
    method: Literal["pca"] = "pca"
    points: list[MapPoint]
