"""Transfer-set shards as exact byte layouts, so a set can live by reference.

A shard is a plain USTAR tar of ``KEY.EXT`` (the pool image's original bytes) and ``KEY.json`` (the
sample's metadata) members, with zero mtimes and fixed modes. Its bytes are therefore a function of
the samples alone: the same layout is written to disk by the copy path, hashed at curation time by
the by-reference path, assembled on the fly by the service (any byte range), and written out by
``curator materialize``. Headers come from the standard library's own ``TarInfo.tobuf``, so every tar
reader, webdataset's and wids' included, reads them unchanged.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from .errors import CuratorError
from .pool import read_range

BLOCK, RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE
#: A transfer set's table of samples: with ``source``/``offset``/``size``, what its shards are made of.
SAMPLES_FILE = "samples.parquet"


@dataclass(frozen=True)
class Ref:
    """A pool item's bytes where they live: read with one ranged read, checked against ``sha256``."""
    source: str
    offset: int
    size: int
    sha256: str
    name: str          # the pool key, for errors

    def read(self, start: int = 0, end: Optional[int] = None) -> bytes:
        end = self.size if end is None else end
        try:
            data = read_range(self.source, self.offset + start, end - start)
        except OSError:
            raise CuratorError(f"pool item {self.name!r} is gone or shorter than indexed: the set cannot be "
                               f"served or materialized as it was curated") from None
        if start == 0 and end == self.size and hashlib.sha256(data).hexdigest() != self.sha256:
            raise CuratorError(f"pool item {self.name!r} changed since it was indexed (sha256 mismatch): the set "
                               f"cannot be served or materialized as it was curated")
        return data


Segment = Union[bytes, Ref]


def sample_meta(row: dict) -> bytes:
    """A sample's ``.json`` member, from its samples.parquet row (or the writer's dict): one way."""
    meta = {"pool_id": row["pool_id"], "pool_key": row["pool_key"], "query_id": row["query_id"],
            "query_label": row["query_label"], "rank": int(row["rank"]),
            "similarity": round(float(row["similarity"]), 6), "caption": row["caption"]}
    return json.dumps(meta).encode()


def _stdlib_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    return info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")


#: The standard library's header of a member with an empty name and size, its checksum field blanked.
_TEMPLATE = bytearray(_stdlib_header("", 0))
_TEMPLATE[148:156] = b" " * 8
#: The template's byte sum less its size field: a header's checksum adds only what differs.
_TEMPLATE_BASE = sum(_TEMPLATE) - sum(_TEMPLATE[124:136])


def header(name: str, size: int) -> bytes:
    """The USTAR header ``tarfile`` writes for ``name`` (mode 0444, mtime 0), built by patching a template:
    the standard library's own builder was a third of a by-reference set's write time. Names that need
    USTAR's prefix field, and sizes past its 11 octal digits, go to the standard library."""
    raw = name.encode("utf-8")
    if len(raw) > 100 or size >= 8 ** 11:
        return _stdlib_header(name, size)
    size_field = b"%011o\0" % size
    buf = bytearray(_TEMPLATE)
    buf[0:len(raw)] = raw
    buf[124:136] = size_field
    buf[148:156] = b"%06o\0 " % (_TEMPLATE_BASE + sum(raw) + sum(size_field))  # the checksum, summed in parts
    return bytes(buf)


def member(name: str, body: Segment, size: int) -> list[Segment]:
    parts: list[Segment] = [header(name, size), body]
    if size % BLOCK:
        parts.append(b"\0" * (BLOCK - size % BLOCK))
    return parts


def sample_segments(key: str, ext: str, image: Segment, image_size: int, meta: bytes) -> list[Segment]:
    return member(f"{key}.{ext}", image, image_size) + member(f"{key}.json", meta, len(meta))


def end_of_archive(length: int) -> bytes:
    """Two zero blocks, then zeros to a whole record: what ``tarfile`` writes on close."""
    length += 2 * BLOCK
    return b"\0" * (2 * BLOCK + (-length) % RECORD)


def seg_len(seg: Segment) -> int:
    return seg.size if isinstance(seg, Ref) else len(seg)


def ref_of(row: dict) -> Ref:
    """Where a samples.parquet row's image lives in the pool."""
    return Ref(row["source"], row["offset"], row["size"], row["sha256"], row["pool_key"])


def layout(rows: Iterable[dict]) -> list[Segment]:
    """The segments of one shard from its samples.parquet rows, in order."""
    segs: list[Segment] = []
    for row in rows:
        ref = ref_of(row)
        segs += sample_segments(row["key"], row["ext"], ref, ref.size, sample_meta(row))
    return segs + [end_of_archive(sum(seg_len(s) for s in segs))]


def total_size(segs: list[Segment]) -> int:
    return sum(seg_len(s) for s in segs)


def read_segments(segs: list[Segment], start: int = 0, end: Optional[int] = None) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of the layout; a whole pool item is sha256-checked as it is read."""
    end = total_size(segs) if end is None else end
    pos = 0
    for seg in segs:
        n = seg_len(seg)
        lo, hi = max(start, pos), min(end, pos + n)
        if lo < hi:
            yield seg.read(lo - pos, hi - pos) if isinstance(seg, Ref) else seg[lo - pos:hi - pos]
        pos += n
        if pos >= end:
            break


def shard_layout(folder: Path, name: str) -> Optional[list[Segment]]:
    """The layout of shard ``name`` of a by-reference set in ``folder`` (None: no such shard)."""
    path = Path(folder) / SAMPLES_FILE
    rows = shard_rows(path, name)
    return layout(rows) if rows else None


def shard_rows(samples: Path, name: str) -> list[dict]:
    """The samples.parquet rows of shard ``name`` (none for a set from before sets by reference, which
    always holds its shards). The writer puts each shard in a row group of its own: only that one is read."""
    import pyarrow.parquet as pq

    if "offset" not in pq.read_schema(samples).names:
        return []
    return pq.read_table(samples, filters=[("shard", "==", name)]).to_pylist()
