"""The ``curator`` command: the front door to the core and, lazily, to each wing.

Subcommands import their wing only when run, so ``curator --help`` is instant and a
machine without a wing's extras can still use the others.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from typing import Callable, Optional

from .errors import CuratorError

EXAMPLES = """examples:
  curator samples fetch                                  # real labelled images, offline
  curator build-index --input ~/.cache/curator/samples/tuxpaint --out idx \\
      --encoder packaged:efficientnet-lite2
  curator search --index idx --image cat.png -k 5
"""


def _build_index_parser(sub) -> None:
    from .images import DEFAULT_MAX_PIXELS

    p = sub.add_parser(
        "build-index", help="embed an image pool and build a searchable FAISS index",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Embed every image of a pool with an encoder, then build, tune and save a FAISS index.\n"
        "Inputs: image folders (recursive), webdataset .tar shards (paths, fsspec URLs or brace\n"
        "patterns such as 'pool-{00000..00099}.tar'), or .csv/.parquet URL lists with a 'url' column\n"
        "(downloaded with img2dataset first). Re-running the same command resumes: finished shards are kept.")
    p.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH", help="pool inputs (any mix)")
    p.add_argument("--out", "-o", required=True, help="output folder (index, embeddings, metadata, report)")
    p.add_argument("--encoder", default=None,
                   help="encoder spec (default open_clip:ViT-B-32/laion2b_s34b_b79k; offline: packaged:efficientnet-lite2)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cuda without a GPU is an error)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="autocast precision for the encoder (bf16 helps on CPUs with AVX512-BF16/AMX)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="decode/resize worker processes (0 = in the main process; default: cores - 1)")
    p.add_argument("--worker-nice", type=int, default=None,
                   help="CPU priority of decode workers (default: 19 on --device cpu so the model keeps its "
                        "cores, 0 on cuda)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per work unit for folder inputs")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="skip (and report) images with more decoded pixels than this; JPEGs are decoded reduced first")
    p.add_argument("--max-index-memory", default="4G", help="memory budget for the index, e.g. 512M, 4G")
    p.add_argument("--target-recall", type=float, default=0.95,
                   help="raise nprobe until recall@10 vs exact search reaches this")
    p.add_argument("--index-factory", default=None, metavar="KEY",
                   help="force a faiss index_factory string (e.g. 'IVF4096,SQ8'); default: chosen from the pool "
                        "size and --max-index-memory")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="index exact duplicates (same bytes) as separate items, e.g. one image with several captions")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier build in --out")
    p.add_argument("--json", action="store_true", help="print the build report as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_build_index)


def _run_build_index(args) -> int:
    from index_builder.build import BuildOptions, build_index
    from index_builder.faiss_index import parse_bytes

    from .encoders import DEFAULT_ENCODER

    opts = BuildOptions(encoder=args.encoder or DEFAULT_ENCODER, device=args.device, precision=args.precision,
                        batch_size=args.batch_size, workers=args.workers, worker_nice=args.worker_nice,
                        shard_size=args.shard_size,
                        max_pixels=args.max_pixels, max_index_memory=parse_bytes(args.max_index_memory),
                        target_recall=args.target_recall, index_factory=args.index_factory,
                        keep_duplicates=args.keep_duplicates, overwrite=args.overwrite,
                        progress=not (args.quiet or args.json))
    report = build_index(args.input, args.out, opts)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        reasons = ", ".join(f"{k}: {v}" for k, v in report.skipped_by_reason.items()) or "none"
        print(f"indexed {report.items:,} images into {args.out} ({report.index_factory}, "
              f"recall@10 {report.recall_at_10:.3f})\n"
              f"skipped {report.skipped} ({reasons}); exact duplicates {report.duplicates}; "
              f"shards reused {report.shards_reused}/{report.shards_total}\n"
              f"embedding {report.embed_images_per_s:.1f} img/s; total {report.total_seconds:.1f} s; "
              f"details in {os.path.join(args.out, 'build-report.json')}")
    return 0


def _search_parser(sub) -> None:
    p = sub.add_parser("search", help="show the nearest pool images of a query image")
    p.add_argument("--index", required=True, help="a folder written by build-index")
    p.add_argument("--image", required=True, nargs="+", help="query image file(s)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_run_search)


def _run_search(args) -> int:
    from .retrieval import PoolIndex

    index = PoolIndex.open(args.index)
    blobs = []
    for path in args.image:
        try:
            with open(path, "rb") as fh:
                blobs.append(fh.read())
        except OSError as exc:
            raise CuratorError(f"cannot read query image {path}: {exc.strerror}") from None
    scores, ids = index.search(index.embed_images(blobs), args.k)
    results = [{"query": path, "hits": [h.as_dict() for h in index.hits(s, i)]}
               for path, s, i in zip(args.image, scores, ids)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for res in results:
            print(res["query"])
            for h in res["hits"]:
                print(f"  {h['id']:>8}  {h['score']:.3f}  {h['key']}  ({h['source']})")
    return 0


def _curate_parser(sub) -> None:
    p = sub.add_parser(
        "curate", help="retrieve a transfer set for target images (query-balanced by default)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Select pool images for a target task and write them as a transfer set: webdataset shards\n"
        "(original bytes), samples.parquet and manifest.json. 'balanced' (the paper's) gives every query image the\n"
        "same number of unique neighbours; near-duplicates collapse; images close to --exclude are dropped.")
    p.add_argument("--index", required=True, help="a folder written by build-index")
    p.add_argument("--queries", required=True,
                   help="a folder of target images (sub-folders = labels), a CSV/parquet with path[,label], "
                        "or a .npy of precomputed query embeddings")
    p.add_argument("--out", required=True, help="folder that receives the transfer set (as OUT/SET_ID)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--budget", type=int, help="total images; per-query quota = budget // queries")
    size.add_argument("--per-query", type=int, help="images per query image (default 100)")
    p.add_argument("--strategy", default="balanced", choices=["balanced", "class-balanced", "threshold", "random"],
                   help="balanced: the paper's query-balanced retrieval; "
                        "random: a uniform draw of the same size (the control)")
    p.add_argument("--threshold", type=float, help="minimum cosine for --strategy threshold")
    p.add_argument("--dedup", type=float, default=0.95, help="collapse near-duplicates at this cosine (1 = off)")
    p.add_argument("--exclude", help="images that must not leak into the set (e.g. the target test set)")
    p.add_argument("--exclude-threshold", type=float, default=0.95)
    p.add_argument("--crops", type=int, default=0, help="extra random crops per query image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--set-id", help="name of the set's folder (default: generated)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(run=_run_curate)


def _run_curate(args) -> int:
    from pydantic import ValidationError

    from .curate import curate
    from .formats import CurateParams
    from .queries import load_queries
    from .retrieval import PoolIndex

    try:
        params = CurateParams(strategy=args.strategy, budget=args.budget, per_query=args.per_query,
                              threshold=args.threshold, dedup=args.dedup, exclude_threshold=args.exclude_threshold,
                              crops=args.crops, seed=args.seed, shard_size=args.shard_size)
    except ValidationError as exc:
        raise CuratorError("; ".join(e["msg"] for e in exc.errors())) from None
    index = PoolIndex.open(args.index)
    exclude = load_queries(args.exclude) if args.exclude else []
    vectors = None
    if args.queries.endswith(".npy"):  # precomputed query embeddings, one row per query
        import numpy as np

        from .queries import Query

        vectors = np.load(args.queries)
        queries = [Query(f"embedding-{i}", b"") for i in range(len(vectors))]
    else:
        queries = load_queries(args.queries)
    manifest = curate(index, queries, params, args.out, query_vectors=vectors, exclude=exclude, set_id=args.set_id)
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        c = manifest["counts"]
        print(f"transfer set {manifest['id']} in {os.path.join(args.out, manifest['id'])}\n"
              f"  {c['emitted']} images from {c['queries']} queries in {len(manifest['shardlist'])} shard(s); "
              f"candidates {c['candidates']}, near-duplicates dropped {c['deduped']}, excluded {c['excluded']}")
        if manifest["dry_queries"]:
            print(f"  {len(manifest['dry_queries'])} queries ran out of neighbours: the pool is too small for the quota")
    return 0


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP service (POST /curate, transfer-set downloads)")
    p.add_argument("--index", required=True, help="a folder written by build-index")
    p.add_argument("--data", required=True, help="service state: SQLite, uploads, transfer sets")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-keys", help="file of name:scopes:secret lines (also: $CURATOR_API_KEYS)")
    p.add_argument("--no-auth", action="store_true", help="accept every caller (local development only)")
    p.add_argument("--job-workers", type=int, default=2, help="curation jobs run at once")
    p.add_argument("--max-files", type=int, default=256, help="images per request")
    p.add_argument("--max-file-bytes", type=int, default=20 << 20, help="bytes per image")
    p.add_argument("--max-request-bytes", type=int, default=256 << 20, help="bytes per request")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="decoded pixels per image")
    p.set_defaults(run=_run_serve)


def _run_serve(args) -> int:
    from pathlib import Path

    import uvicorn

    from api import Limits, Settings, create_app

    limits = Limits(max_files=args.max_files, max_file_bytes=args.max_file_bytes,
                    max_request_bytes=args.max_request_bytes, max_pixels=args.max_pixels)
    settings = Settings(index_dir=Path(args.index), data_dir=Path(args.data),
                        api_keys_file=Path(args.api_keys) if args.api_keys else None, no_auth=args.no_auth,
                        limits=limits, job_workers=args.job_workers)
    if args.no_auth:
        print("*" * 72 + "\nWARNING: --no-auth: every caller may curate and download. Local development only.\n"
              + "*" * 72, file=sys.stderr, flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


def _distill_parser(sub) -> None:
    p = sub.add_parser(
        "distill", help="train a small student from a VFM teacher on a transfer set (task-oriented KT)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="task-oriented (the paper): (a) adapt the teacher on the labelled set, (b) distil its task\n"
        "predictions into the student on the same augmented views of the transfer set, (c) finetune the student.\n"
        "task-agnostic: contrastive feature matching to the frozen teacher, then finetune. supervised: labels only.\n"
        "Re-running the same command resumes from the last checkpoint.")
    p.add_argument("--labelled", required=True,
                   help="folder with train/ (val/, test/) class folders; a folder of class folders (with "
                        "--labels-per-class); or a CSV path,label[,split]")
    p.add_argument("--transfer", help="transfer-set folder, or http://HOST:PORT/transfer-sets/ID")
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="task-oriented", choices=["task-oriented", "task-agnostic", "supervised"])
    p.add_argument("--teacher", default="packaged:efficientnet-lite2", help="encoder spec of the VFM")
    p.add_argument("--teacher-mode", default="linear", choices=["linear", "finetune"])
    p.add_argument("--student", default="mobilenetv3_small_100", help="any timm model name")
    p.add_argument("--student-init", default="scratch", metavar="scratch|imagenet|PATH",
                   help="from scratch, ImageNet weights (packaged, offline, for tf_efficientnet_lite0/2; else timm's hub), or a checkpoint (e.g. an earlier student.pt)")
    p.add_argument("--student-size", type=int, default=64, help="student input resolution")
    p.add_argument("--labels-per-class", type=int, help="seeded split of a flat class-folder set")
    p.add_argument("--steps-a", type=int, default=150)
    p.add_argument("--steps-b", type=int, default=600)
    p.add_argument("--steps-c", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--cache-teacher", type=int, default=0, metavar="V",
                   help="cache teacher outputs for V fixed views per transfer image (reused by later students)")
    p.add_argument("--cache-dir", help="where view caches go (default: beside the transfer set)")
    p.add_argument("--mix-labelled", type=float, default=0.0, metavar="SHARE",
                   help="share of each stage-(b) batch drawn from the labelled images (cross-entropy)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes per loader")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N; under torchrun, cuda is each rank's GPU")
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="on CUDA, train in fp32 without channels_last (default: bf16 autocast, channels_last)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--token", default=os.environ.get("CURATOR_TOKEN"), help="API key for a transfer-set URL")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_run_distill)


def _run_distill(args) -> int:
    from pydantic import ValidationError

    from distill import DistillConfig, run_distill

    fields = DistillConfig.model_fields
    try:
        cfg = DistillConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None},
                            progress=not args.json)
    except ValidationError as exc:
        raise CuratorError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    report = run_distill(cfg)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        final = report["student"]["final"].get("test") or {}
        teacher = (report.get("teacher") or {}).get("test") or {}
        print(f"{cfg.method}: student {cfg.student} test accuracy {final.get('accuracy')} "
              f"(mean per class {final.get('mean_per_class_accuracy')}); teacher {teacher.get('accuracy')}; "
              f"report in {os.path.join(cfg.out, 'report.json')}")
    return 0


def _worker_parser(sub) -> None:
    p = sub.add_parser("worker", help="claim distillation jobs from a curator service and run them")
    p.add_argument("--api", required=True, help="service URL, e.g. http://host:8000")
    p.add_argument("--token", default=os.environ.get("CURATOR_TOKEN"), help="API key with the curate scope")
    p.add_argument("--work-dir", default="worker-runs", help="where runs (checkpoints, students) are written")
    p.add_argument("--name", help="worker name (default: host name + a number)")
    p.add_argument("--lease", type=float, default=60.0, help="lease seconds, renewed every third of it")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between claims when the queue is empty")
    p.add_argument("--once", action="store_true", help="run at most one job, then exit")
    p.add_argument("--device", default="cpu", help="where this worker trains: cpu, cuda or cuda:N")
    p.set_defaults(run=_run_worker)


def _run_worker(args) -> int:
    from distill.worker import run_worker

    run_worker(args.api, args.token, args.work_dir, name=args.name, lease=args.lease, poll=args.poll, once=args.once,
               device=args.device)
    return 0


def _samples_parser(sub) -> None:
    from .samples import DEFAULT_SAMPLES, SAMPLE_SETS, default_cache

    p = sub.add_parser("samples", help="real labelled sample images, fetched from Debian packages")
    ssub = p.add_subparsers(dest="action", required=True)
    f = ssub.add_parser("fetch", help="download and unpack the sample sets (no root, no system changes)")
    f.add_argument("--dest", default=str(default_cache()), help="cache folder (default: %(default)s)")
    f.add_argument("--which", nargs="+", default=list(DEFAULT_SAMPLES), choices=sorted(SAMPLE_SETS))
    f.set_defaults(run=_run_samples_fetch)


def _run_samples_fetch(args) -> int:
    from .samples import fetch_samples

    for name, path in fetch_samples(args.which, args.dest).items():
        print(f"{name}: {path}")
    return 0


def _encoders_parser(sub) -> None:
    p = sub.add_parser("encoders", help="list the encoder spec schemes")
    p.set_defaults(run=_run_encoders)


def _run_encoders(args) -> int:
    from .encoders import list_encoder_schemes

    for scheme, text in sorted(list_encoder_schemes().items()):
        print(f"{scheme:10} {text}")
    return 0


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="fetch real sample images, index them, and show what searches find")
    p.add_argument("--out", default=".cache/demo", help="working folder (default: %(default)s)")
    p.add_argument("--encoder", default="packaged:efficientnet-lite2")
    p.add_argument("--queries", type=int, default=5, help="how many sample images to search with")
    p.add_argument("-k", type=int, default=5)
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    """The README's first command: real images in, an index out, searches shown."""
    import random
    from pathlib import Path

    from index_builder.build import BuildOptions, build_index

    from .retrieval import PoolIndex
    from .samples import fetch_samples

    out = Path(args.out)
    print("1/5 fetching the Tux Paint stamps (Debian package, unpacked into the cache) ...")
    pool = fetch_samples(["tuxpaint"], out / "samples")["tuxpaint"]
    print(f"2/5 building an index over {pool} with {args.encoder} ...")
    report = build_index([str(pool)], out / "index", BuildOptions(encoder=args.encoder, shard_size=200))
    print(f"    {report.items} images, {report.index_factory}, {report.embed_images_per_s:.1f} img/s, "
          f"skipped {report.skipped}, duplicates {report.duplicates}")
    index = PoolIndex.open(out / "index")
    keys = index.items.column("key").to_pylist()
    picks = random.Random(0).sample(range(len(keys)), min(args.queries, len(keys)))
    print(f"3/5 searching with {len(picks)} of the stamps (top {args.k}, the query itself excluded):")
    shares = []
    for item_id in picks:
        query = index.embed_images([index.fetch(item_id)])
        hits = [h for h in index.hits(*(a[0] for a in index.search(query, args.k + 1))) if h.id != item_id][:args.k]
        category = keys[item_id].split("/")[0]
        same = sum(h.key.split("/")[0] == category for h in hits)
        shares.append(same / max(1, len(hits)))
        print(f"  {keys[item_id]}  ->  {same}/{len(hits)} neighbours in '{category}'")
        for h in hits:
            print(f"      {h.score:.3f}  {h.key}")
    print(f"share of neighbours in the query's category: {sum(shares) / len(shares):.0%} "
          f"(15 categories; the index is in {out / 'index'})")
    _demo_service(out, pool, keys)
    _demo_distill(out, pool, index)
    return 0


def _demo_distill(out, pool, index) -> None:
    """Step 5: 5 labels per class, a transfer set curated for them, a distilled student."""
    from distill import DistillConfig, run_distill
    from distill.data import load_labelled

    from .curate import curate
    from .formats import CurateParams
    from .queries import Query

    labelled = out / "labelled"  # the categories with at least 20 stamps: 5 train, 2 val, the rest test
    labelled.mkdir(exist_ok=True)
    for cat in sorted(p for p in pool.iterdir() if p.is_dir() and len(list(p.glob("*.png"))) >= 20):
        if not (labelled / cat.name).exists():
            (labelled / cat.name).symlink_to(cat.resolve(), target_is_directory=True)
    data = load_labelled(labelled, labels_per_class=5, val_per_class=2, seed=0)
    as_queries = lambda split: [Query(p, open(p, "rb").read(), data.classes[y]) for p, y in data.splits[split]]
    print(f"5/5 distilling: {len(data.classes)} classes x 5 labels; transfer set of 10 pool images per labelled "
          f"image, val and test images excluded ...")
    curate(index, as_queries("train"), CurateParams(per_query=10), out / "demo-sets",
           exclude=as_queries("val") + as_queries("test"), set_id="demo") if not (out / "demo-sets" / "demo").exists() \
        else None
    report = run_distill(DistillConfig(
        labelled=str(labelled), labels_per_class=5, val_per_class=2, transfer=str(out / "demo-sets" / "demo"),
        out=str(out / "distill"), teacher="packaged:efficientnet-lite0", student="mobilenetv3_small_100",
        student_size=64, steps_a=60, steps_b=200, steps_c=60, cache_teacher=4, progress=False))
    t, st = report["teacher"], report["student"]
    print(f"    teacher {t['spec']}: test accuracy {t['test']['accuracy']:.3f}, {t['params'] / 1e6:.1f} M params, "
          f"{t['latency_ms_cpu_batch1']:.1f} ms/image on this CPU\n"
          f"    student {st['name']} @ {st['size']} px: test accuracy {st['final']['test']['accuracy']:.3f}, "
          f"{st['params'] / 1e6:.1f} M params, {st['latency_ms_cpu_batch1']:.1f} ms/image "
          f"(chance {1 / len(data.classes):.3f}; report in {out / 'distill' / 'report.json'})")


def _demo_service(out, pool, keys: list[str]) -> None:
    """Start the service on a free loopback port, POST target images to /curate, show the set."""
    import secrets
    import socket
    import threading
    import time
    from collections import Counter

    import pyarrow.parquet as pq
    import uvicorn

    from api import Settings, create_app

    from .client import CuratorClient

    token = secrets.token_hex(16)
    (out / "api-keys.txt").write_text(f"demo:curate:{token}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Settings(index_dir=out / "index", data_dir=out / "service", api_keys_file=out / "api-keys.txt"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        sizes = Counter(k.split("/")[0] for k in keys)
        targets = [c for c, _ in sizes.most_common(3)]  # a neutral rule: the three largest categories
        queries = [pool / k for c in targets for k in [k for k in keys if k.startswith(c + "/")][::7][:3]]
        print(f"4/5 serving on http://127.0.0.1:{port}; POST /curate with {len(queries)} stamps of "
              f"{', '.join(targets)} (balanced, 8 per query) ...")
        with CuratorClient(f"http://127.0.0.1:{port}", token) as client:
            job = client.wait(client.curate(queries, {"per_query": 8}, labels=[q.parent.name for q in queries])["id"])
            manifest = client.manifest(job["transfer_set_id"])
        folder = out / "service" / "transfer-sets" / job["transfer_set_id"]
        rows = pq.read_table(folder / "samples.parquet").to_pylist()
        cats = Counter(r["pool_key"].split("/")[0] for r in rows)
        share = sum(r["pool_key"].split("/")[0] == r["query_label"] for r in rows) / max(1, len(rows))
        base = sum(sizes[q.parent.name] for q in queries) / len(queries) / len(keys)
        c = manifest["counts"]
        print(f"    transfer set {manifest['id']}: {c['emitted']} images, {c['deduped']} near-duplicates dropped, "
              f"{c['excluded']} excluded (too close to a query)\n"
              f"    {share:.0%} of it shares its query's category (a random draw would give {base:.0%}): "
              f"{dict(cats.most_common(5))}\n"
              f"    shards: {folder} ({len(manifest['shardlist'])} x webdataset tar, sha256 in manifest.json)")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="reproducible experiments of the whole pipeline")
    bsub = p.add_subparsers(dest="bench", required=True)
    k = bsub.add_parser(
        "kt", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the paper's comparison: supervised, task-agnostic, task-oriented on random vs retrieved sets, teacher",
        description="Split the target (few labels per class, val, test), index the pool, curate a retrieved and a "
                    "random transfer set of the same size (val/test excluded), train every arm over several seeds, "
                    "and write results.json, results.md and chart.png. Every step resumes.",
        epilog="Without --target/--pool it runs the public protocol: the Tux Paint stamps (15 categories) against "
               "openclipart + Oxygen icons (~10k images), fetched with 'curator samples fetch'.")
    k.add_argument("--target", help="folder with one sub-folder of images per class")
    k.add_argument("--pool", nargs="+", metavar="PATH", help="unlabelled pool inputs (folders or shards)")
    k.add_argument("--index", help="an existing build-index folder for the pool (default: OUT/index, built once)")
    k.add_argument("--index-encoder", default="packaged:efficientnet-lite0", help="encoder of the pool index")
    k.add_argument("--out", default="bench-out/kt", help="working folder (default: %(default)s)")
    # defaults live in distill.kt.KTConfig (not imported here: --help stays fast)
    for flag, kind, text in (
            ("--labels-per-class", int, "labelled train images per class (5)"),
            ("--val-per-class", int, "val images per class; val picks checkpoints, never test (2)"),
            ("--split-seed", int, "seed of the train/val/test split (0)"),
            ("--budget", int, "transfer-set size, retrieved and random alike (1600)"),
            ("--seeds", int, "training seeds per arm (3); more seeds on the same --out reuse the finished ones"),
            ("--teacher", str, "encoder spec of the VFM (packaged:efficientnet-lite2)"),
            ("--teacher-mode", str, "linear or finetune (linear)"),
            ("--student", str, "timm student, the same in every arm (mobilenetv3_small_100)"),
            ("--student-init", str, "scratch, imagenet (packaged weights for tf_efficientnet_lite0/2 work offline) "
                                    "or a checkpoint path (scratch)"),
            ("--student-size", int, "student resolution (64)"),
            ("--cache-views", int, "fixed augmented views per transfer image (2)"),
            ("--steps-a", int, "teacher adaptation steps (300)"),
            ("--steps-b", int, "distillation steps (500)"),
            ("--steps-c", int, "student finetuning steps; the supervised arm's only stage (200)"),
            ("--batch-size", int, "(64)"), ("--lr-student", float, "(2e-3)"), ("--lr-finetune", float, "(5e-4)"),
            ("--temperature", float, "KD temperature (1.0)"),
            ("--mix-labelled", float, "share of each distillation batch from the labelled images (0.25)"),
            ("--exclude-threshold", float, "cosine at which a pool image counts as a val/test image (0.95)"),
            ("--device", str, "where every arm trains: cpu, cuda, cuda:N (cpu)"),
            ("--workers", int, "image-decoding processes per loader (0)")):
        k.add_argument(flag, type=kind, help=text)
    k.add_argument("--json", action="store_true", help="print results.json")
    k.set_defaults(run=_run_bench_kt)


def _run_bench_kt(args) -> int:
    from distill.kt import KTConfig, run_kt
    from index_builder.build import BuildOptions, build_index

    from .samples import KT_POOL, fetch_samples

    if bool(args.target) != bool(args.pool):
        raise CuratorError("give both --target and --pool, or neither (the public protocol)")
    target, pool = args.target, args.pool
    if not target:
        fetched = fetch_samples(("tuxpaint",) + KT_POOL)
        target, pool = str(fetched["tuxpaint"]), [str(fetched[name]) for name in KT_POOL]
    index = args.index
    if not index:
        index = os.path.join(args.out, "index")
        build_index(pool, index, BuildOptions(encoder=args.index_encoder, device=args.device or "cpu",
                                              progress=not args.json))
    given = {k: v for k, v in vars(args).items() if k in KTConfig.model_fields and v is not None
             and k not in ("target", "index", "out")}
    cfg = KTConfig(target=target, index=index, out=args.out, progress=not args.json, **given)
    results = run_kt(cfg, command="curator " + " ".join(map(shlex.quote, args.argv)))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        with open(os.path.join(args.out, "results.md"), encoding="utf-8") as fh:
            print(fh.read())
        print(f"results: {os.path.join(args.out, 'results.json')}, chart: {os.path.join(args.out, 'chart.png')}")
    return 0


COMMANDS: list[Callable] = [_demo_parser, _build_index_parser, _search_parser, _curate_parser, _serve_parser,
                            _distill_parser, _worker_parser, _bench_parser,
                            _samples_parser,
                            _encoders_parser]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curator", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Curate task-specific transfer sets from a web-scale image pool, and distil vision "
                    "foundation models into small task-specific models.")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = make_parser().parse_args(argv)
    args.argv = argv  # the exact command, for reports that must be reproducible
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss.loader", "httpx"):  # optional-AVX-build notes; one line per client request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args)
    except CuratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
