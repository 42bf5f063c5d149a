"""``curator materialize``: write out the shards of a by-reference transfer set."""
from __future__ import annotations

import argparse

from .flags import add_set_dir

DESCRIPTION = """A by-reference set (curate's default) is its manifest and samples.parquet: each sample's pool
source, byte offset, size and sha256. This writes its webdataset shards, reading every sample from the pool
and checking its sha256 and every shard's against the manifest. A pool item that vanished or changed is an
error that names it; nothing is left half-written."""


def add_parser(sub) -> None:
    p = sub.add_parser("materialize", help="write out the shards of a by-reference transfer set",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_dir(p)
    p.add_argument("--out", required=True, help="folder that receives the materialized set (as OUT/SET_ID)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..progress import progress_bar
    from ..transfer import materialize, read_manifest

    manifest = read_manifest(args.set_dir)
    with progress_bar(total=len(manifest.shardlist), desc="materialize", unit="shard") as bar:
        final = materialize(args.set_dir, args.out, progress=lambda f: bar.update(1))
    print(f"materialized {manifest.id}: {manifest.counts.emitted} samples in {len(manifest.shardlist)} shard(s) "
          f"at {final}")
    return 0
