"""``curator materialize``: write out the shards of a by-reference transfer set."""
from __future__ import annotations

import argparse
from pathlib import Path

from .flags import add_set_dir

DESCRIPTION = """A by-reference set (curate's default) is its manifest and samples.parquet: each sample's pool
source, byte offset, size and sha256. This writes its webdataset shards, reading every sample from the pool
and checking its sha256 and every shard's against the manifest. A pool item that vanished or changed is an
error that names it; nothing is left half-written.

A set of URL-only pool items (an index built from published embeddings) is a URL list, urls.parquet: this
downloads it with img2dataset (pip install 'curator[ingest]') and writes the shards, with the same manifest
as any set; images that could not be fetched are counted as unreadable."""


def add_parser(sub) -> None:
    p = sub.add_parser("materialize", help="write out the shards of a by-reference transfer set",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_dir(p)
    p.add_argument("--out", required=True, help="folder that receives the materialized set (as OUT/SET_ID)")
    p.add_argument("--download-threads", type=int, default=16,
                   help="img2dataset threads, for a set of URLs (default: %(default)s)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..progress import progress_bar
    from ..transfer import materialize, read_manifest

    manifest = read_manifest(args.set_dir)
    if manifest.url_list:
        from ..urlsets import materialize_urls

        final = materialize_urls(Path(args.set_dir), Path(args.out), manifest, threads=args.download_threads)
    else:
        with progress_bar(total=len(manifest.shardlist), desc="materialize", unit="shard") as bar:
            final = materialize(args.set_dir, args.out, progress=lambda f: bar.update(1))
    done = read_manifest(final)
    print(f"materialized {done.id}: {done.counts.emitted} samples in {len(done.shardlist)} shard(s) at {final}"
          + (f"; {done.counts.unreadable} could not be fetched" if done.counts.unreadable else ""))
    return 0
