"""Serving a by-reference shard: its bytes assembled from the pool as they are sent, with HTTP Range
(one range; a multi-range request gets the whole shard, as RFC 9110 allows)."""
from __future__ import annotations

import re
from typing import Optional

from fastapi.responses import Response, StreamingResponse

from curator.refshards import Segment, read_segments, total_size

from .deps import reject

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: Optional[str], size: int) -> Optional[tuple[int, int]]:
    """``[start, end)`` of a single ``bytes=`` range; None for no (or a multi-) range; 416 if unsatisfiable."""
    if not header:
        return None
    match = RANGE.match(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start, end = int(first), size if last == "" else min(size, int(last) + 1)
    if start >= size or start >= end:
        raise reject(416, f"range {header!r} is outside the shard's {size} bytes")
    return start, end


def assembled_response(segs: list[Segment], name: str, range_header: Optional[str]) -> Response:
    size = total_size(segs)
    span = parse_range(range_header, size)
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'attachment; filename="{name}"'}
    if span is None:
        return StreamingResponse(read_segments(segs), media_type="application/x-tar",
                                 headers=headers | {"Content-Length": str(size)})
    start, end = span
    headers |= {"Content-Range": f"bytes {start}-{end - 1}/{size}", "Content-Length": str(end - start)}
    return StreamingResponse(read_segments(segs, start, end), status_code=206, media_type="application/x-tar",
                             headers=headers)
