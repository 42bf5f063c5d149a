"""A pool given as URL lists: downloaded through img2dataset (``curator.downloads``), and what it
could not fetch reported with the build."""
from __future__ import annotations

from pathlib import Path

from curator.formats import SkippedItem


def download_failures(out: Path) -> list[SkippedItem]:
    """The URLs img2dataset could not fetch (from its per-shard status tables under ``out/download``),
    as skipped items: a build over a URL list reports them beside the files that did not decode."""
    import pyarrow.parquet as pq

    failed = []
    for table in sorted((out / "download").glob("*/*.parquet")):
        rows = pq.read_table(table, columns=["url", "status", "error_message"]).to_pylist()
        failed += [SkippedItem(key=r["url"], source=table.parent.name, reason="download_failed",
                               detail=(r["error_message"] or r["status"] or "")[:500])
                   for r in rows if r["status"] != "success"]
    return failed
