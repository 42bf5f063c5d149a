"""``curator build-index``: embed an image pool and build a searchable FAISS index."""
from __future__ import annotations

import argparse
import os

from ..formats import BuildConfig
from .flags import add_model_flags, build_model

DESCRIPTION = """Embed every image of a pool with an encoder, then build, tune and save a FAISS index.
Inputs: image folders (recursive), webdataset .tar shards (paths, fsspec URLs or brace
patterns such as 'pool-{00000..00099}.tar'), or .csv/.parquet URL lists with a 'url' column
(downloaded with img2dataset first). Or --embeddings DIR: vectors computed elsewhere, in clip-retrieval's
layout (img_emb/*.npy + metadata/*.parquet, as LAION publishes them) or a curator build folder's.
Re-running the same command resumes: finished shards are kept. --append adds new inputs to an existing
index as a new generation (a running `curator serve` switches to it); --runner ray scales out."""
FLAGS = ("encoder", "device", "precision", "batch_size", "workers", "worker_nice", "shard_size", "max_pixels",
         "max_index_memory", "max_build_memory", "layout", "index_workers", "target_recall", "index_factory",
         "keep_duplicates", "dedup_links", "recall_queries", "seed", "runner", "ray_address", "append", "retrain",
         "overwrite")


def add_parser(sub) -> None:
    p = sub.add_parser("build-index", help="embed an image pool and build a searchable FAISS index",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", "-i", nargs="+", metavar="PATH", help="pool inputs (any mix)")
    source.add_argument("--embeddings", nargs="+", metavar="DIR",
                        help="precomputed embeddings folder(s) or fsspec URL(s) (s3://, gs://, hf://, where fsspec "
                             "has the driver; their npy files are downloaded): img_emb/*.npy + metadata/*.parquet, "
                             "or a curator build folder; --encoder must name the model that computed them")
    p.add_argument("--out", "-o", required=True,
                   help="output folder (index, embeddings, metadata, report): a local disk or a shared mount such "
                        "as NFS, which Ray workers on other nodes also see; the index and vectors are "
                        "memory-mapped from it, so it cannot be an object store")
    add_model_flags(p, BuildConfig, FLAGS)
    p.add_argument("--json", action="store_true", help="print the build report as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    from index_builder.build import build_index

    cfg = build_model(BuildConfig, args, progress=not (args.quiet or args.json))
    report = build_index(args.embeddings or args.input, args.out, cfg, embeddings=bool(args.embeddings))
    if args.json:
        print(report.model_dump_json(indent=2))
        return 0
    reasons = ", ".join(f"{k}: {v}" for k, v in report.skipped_by_reason.items()) or "none"
    added = f"appended {report.appended:,}, " if report.appended is not None else ""
    print(f"indexed {report.items:,} images into {args.out} ({added}{report.index_factory}, {report.layout}, "
          f"generation {report.generation}, recall@10 {report.recall_at_10:.3f})\n"
          f"skipped {report.skipped} ({reasons}); exact duplicates {report.duplicates}; "
          f"shards reused {report.shards_reused}/{report.shards_total}\n"
          f"embedding {report.embed_images_per_s:.1f} img/s; total {report.total_seconds:.1f} s; "
          f"details in {os.path.join(args.out, 'build-report.json')}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    return 0
