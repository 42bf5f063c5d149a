"""``curator report``: a transfer set as one self-contained HTML page. Each query's thumbnail, then
what it pulled in, in rank order, with scores and captions; then what the rules left out, and why.
Thumbnails are embedded (data: URLs) from the set's own shards and ``queries.parquet``, so the file
opens offline, anywhere, with no server."""
from __future__ import annotations

import base64
import html
import tarfile
from pathlib import Path
from typing import Iterator, Optional


from .errors import BadImageError, CuratorError
from .formats import SetView, ViewItem
from .refshards import SAMPLES_FILE, ref_of, shard_rows
from .setview import query_thumbnail, read_view
from .thumbs import thumbnail
from .transfer import MANIFEST_FILE, shard_path_or_layout

THUMB = 128
STYLE = """body{font:14px system-ui,sans-serif;margin:1.2rem;color:#1d2330}h1{font-size:1.3rem}
.q{display:flex;gap:1rem;border-top:1px solid #ccd;padding:.7rem 0}.q>div:first-child{width:150px;flex:none}
.g{display:flex;flex-wrap:wrap;gap:.4rem}.c{width:132px;font-size:.75em;color:#555}.c img{width:128px;height:128px;
object-fit:contain;background:#eee;display:block}.c b{color:#1d2330}.x{opacity:.7}.r{color:#b42318}
.qi{width:144px;height:144px;object-fit:contain;border:2px solid #2457c5;background:#eee}
code{white-space:pre-wrap;word-break:break-all}"""


def sample_images(folder: Path, shards: list[str]) -> Iterator[tuple[str, bytes]]:
    """(sample key, image bytes) for every sample of the set's shards, in shard order: read from the
    shard files, or from the pool (sha256-checked) for a set by reference."""
    for name in shards:
        source = shard_path_or_layout(folder, name)
        if isinstance(source, list):
            yield from ((row["key"], ref_of(row).read()) for row in shard_rows(folder / SAMPLES_FILE, name))
            continue
        with tarfile.open(source) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext in ("jpg", "jpeg", "png", "webp"):
                    yield key, tar.extractfile(member).read()


def _data_url(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode()


def _thumb(data: bytes) -> Optional[bytes]:
    try:
        return thumbnail(data, THUMB)
    except BadImageError:
        return None


def _card(item: ViewItem, src: Optional[str]) -> str:
    img = f'<img src="{src}" alt="">' if src else "<div>(no preview)</div>"
    score = f"{item.similarity:.3f}" if item.similarity is not None else ""
    reason = f'<div class="r">{html.escape(item.reason)}</div>' if item.reason else ""
    return (f'<div class="c{" x" if item.reason else ""}">{img}<b>#{item.rank} {score}</b>{reason}'
            f'<div>{html.escape(item.caption or "")}</div><div>pool #{item.pool_id}</div></div>')


def render(folder: str | Path) -> str:
    folder = Path(folder)
    if not (folder / MANIFEST_FILE).is_file():
        raise CuratorError(f"{folder}: not a transfer set (no {MANIFEST_FILE}); pass the set's own folder")
    view: SetView = read_view(folder)
    thumbs = {key: _data_url(_thumb(data)) for key, data in sample_images(folder, view.shards)}

    c = view.counts
    parts = [f"<!doctype html><meta charset=utf-8><title>{html.escape(view.id)}</title><style>{STYLE}</style>",
             f"<h1>Transfer set {html.escape(view.id)}</h1>",
             f"<p>{c.emitted} images from {c.queries} queries over index {html.escape(view.index_name)}; "
             f"{c.deduped} near-duplicates and {c.excluded} contaminated candidates left out.</p>",
             f"<p>Parameters: <code>{html.escape(view.params.model_dump_json())}</code></p>"]
    for q in view.queries:
        qsrc = _data_url(query_thumbnail(folder, q.index)) if q.thumbnail else None
        qimg = f'<img class="qi" src="{qsrc}" alt="">' if qsrc else "<div>(no image)</div>"
        label = f"<div>label: {html.escape(q.label)}</div>" if q.label else ""
        taken = "".join(_card(it, thumbs.get(it.sample_key)) for it in q.items)
        dropped = "".join(_card(it, None) for it in q.dropped)
        parts.append(f'<div class="q"><div>{qimg}<b>{html.escape(q.id)}</b>{label}<div>{q.taken} of {q.quota} '
                     f'taken</div></div><div><div class="g">{taken}</div>'
                     + (f'<h4>Left out</h4><div class="g">{dropped}</div>' if dropped else "") + "</div></div>")
    return "\n".join(parts) + "\n"
