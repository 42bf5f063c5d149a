"""``curator curate``: retrieve a transfer set for target images."""
from __future__ import annotations

import argparse
import os

from ..formats import CurateParams, dump_doc
from .flags import add_model_flags, build_model

DESCRIPTION = """Select pool images for a target task and write them as a transfer set: webdataset shards
(original bytes), samples.parquet and manifest.json. 'balanced' (the paper's) gives every query image the
same number of unique neighbours; near-duplicates collapse; images close to --exclude are dropped."""


def add_parser(sub) -> None:
    from ..strategies import strategy_names

    p = sub.add_parser("curate", help="retrieve a transfer set for target images (query-balanced by default)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="a folder written by build-index")
    p.add_argument("--queries", required=True,
                   help="a folder of target images (sub-folders = labels), a CSV/parquet with path[,label], "
                        "or a .npy of precomputed query embeddings")
    p.add_argument("--out", required=True, help="folder that receives the transfer set (as OUT/SET_ID)")
    p.add_argument("--strategy", default=None, choices=strategy_names(),
                   help="balanced: the paper's query-balanced retrieval; random: a uniform draw of the same size "
                        "(the control) (default: balanced)")
    size = p.add_mutually_exclusive_group()
    add_model_flags(size, CurateParams, ("budget", "per_query"),
                    help={"per_query": "images per query image (default: 100 when no --budget)"})
    add_model_flags(p, CurateParams, ("threshold", "dedup", "exclude_threshold", "crops", "seed", "shard_size"))
    p.add_argument("--exclude", help="images that must not leak into the set (e.g. the target test set)")
    p.add_argument("--set-id", help="name of the set's folder (default: generated)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from ..curate import curate
    from ..queries import load_query_input, load_queries
    from ..retrieval import PoolIndex

    params = build_model(CurateParams, args)
    queries, vectors = load_query_input(args.queries)
    exclude = load_queries(args.exclude) if args.exclude else []
    index = PoolIndex.open(args.index)
    # a folder (or table) of queries goes on without an undecodable image; each is named in the manifest
    manifest = curate(index, queries, params, args.out, query_vectors=vectors, exclude=exclude, set_id=args.set_id,
                      skip_bad=True)
    if args.json:
        print(json.dumps(dump_doc(manifest), indent=2))
        return 0
    c = manifest.counts
    print(f"transfer set {manifest.id} in {os.path.join(args.out, manifest.id)}\n"
          f"  {c.emitted} images from {c.queries} queries in {len(manifest.shardlist)} shard(s); "
          f"candidates {c.candidates}, near-duplicates dropped {c.deduped}, excluded {c.excluded}")
    for item in manifest.skipped_queries:
        print(f"  skipped {item.key}: {item.reason} ({item.detail})")
    if manifest.dry_queries:
        print(f"  {len(manifest.dry_queries)} queries ran out of neighbours: the pool is too small for the quota")
    return 0
