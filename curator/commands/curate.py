"""``curator curate``: retrieve a transfer set for target images."""
from __future__ import annotations

import argparse
import os

from ..errors import CuratorError
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
    p.add_argument("--queries",
                   help="a folder of target images (sub-folders = labels), a CSV/parquet with path[,label], "
                        "or a .npy of precomputed query embeddings (or use --text)")
    p.add_argument("--text", metavar="TEMPLATE",
                   help='query by text instead of images, one prompt per class, e.g. "a photo of a {}" '
                        "(REACT / SuS-X style; needs an open_clip index)")
    p.add_argument("--classes", help="comma-separated class names for --text (default: the sub-folder names "
                                     "of --queries)")
    p.add_argument("--out", required=True, help="folder that receives the transfer set (as OUT/SET_ID)")
    p.add_argument("--strategy", default=None, choices=strategy_names(),
                   help="balanced: the paper's query-balanced retrieval; random: a uniform draw of the same size "
                        "(the control) (default: balanced)")
    size = p.add_mutually_exclusive_group()
    add_model_flags(size, CurateParams, ("budget", "per_query"),
                    help={"per_query": "images per query image (default: 100 when no --budget)"})
    add_model_flags(p, CurateParams, ("threshold", "dedup", "exclude_threshold", "crops", "seed", "shard_size",
                                      "materialize"))
    p.add_argument("--exclude", help="images that must not leak into the set (e.g. the target test set)")
    p.add_argument("--set-id", help="name of the set's folder (default: generated)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--html", action="store_true", help="also write OUT/SET_ID.html, a self-contained gallery "
                                                      "(as curator report)")
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from ..curate import curate
    from ..queries import load_query_input, load_queries
    from ..retrieval import PoolIndex

    params = build_model(CurateParams, args)
    check_query_flags(args)
    exclude = load_queries(args.exclude) if args.exclude else []
    index = PoolIndex.open(args.index)
    if args.text:
        from ..queries import class_prompts, text_queries

        classes = class_names(args)
        queries, vectors = text_queries(index.encoder(), class_prompts(args.text, classes), classes)
    else:
        queries, vectors = load_query_input(args.queries)
    # a folder (or table) of queries goes on without an undecodable image; each is named in the manifest
    manifest = curate(index, queries, params, args.out, query_vectors=vectors, exclude=exclude, set_id=args.set_id,
                      on_bad="skip")
    if args.html:
        from .. import atomic
        from ..gallery import render

        atomic.write_text(os.path.join(args.out, manifest.id + ".html"), render(os.path.join(args.out, manifest.id)))
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
    if manifest.params.materialize == "reference":
        print(f"  by reference: no shard is on disk; for wids or webdataset run "
              f"curator materialize {os.path.join(args.out, manifest.id)} --out DIR")
    return 0


def check_query_flags(args) -> None:
    """Every query flag checked before the index or a model is opened."""
    from ..queries import class_prompts

    if not args.queries and not args.text:
        raise CuratorError("give the target task as --queries (images or embeddings) or --text TEMPLATE")
    if args.text:
        class_prompts(args.text, ["class"])
    if args.text and args.queries and not os.path.isdir(args.queries):
        raise CuratorError("--text takes its class names from --classes, or from the sub-folders of a --queries "
                           f"folder; {args.queries} is not a folder")


def class_names(args) -> list[str]:
    """--classes, else the sub-folder names of --queries (the target task's classes)."""
    if args.classes:
        names = [c.strip() for c in args.classes.split(",") if c.strip()]
    elif args.queries:
        names = sorted(p.name for p in os.scandir(args.queries) if p.is_dir() and not p.name.startswith("."))
    else:
        names = []
    if not names:
        raise CuratorError("--text needs class names: pass --classes a,b,c or a --queries folder with one "
                           "sub-folder per class")
    return names
