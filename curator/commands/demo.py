"""``curator demo``: the README's first command. Real sample images in, an index out, searches
shown, a transfer set curated through the service, and a student distilled from it."""
from __future__ import annotations

from ..specs import OFFLINE_ENCODER, SMALL_ENCODER


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="fetch real sample images, index them, and show what searches find",
                       description="Fetch the Tux Paint stamps, index them, search with some of them, curate a "
                                   "transfer set through the service, and distil a student: the whole flow offline.")
    p.add_argument("--out", default=".cache/demo", help="working folder (default: %(default)s)")
    p.add_argument("--encoder", default=OFFLINE_ENCODER, help="encoder of the index (default: %(default)s)")
    p.add_argument("--queries", type=int, default=5, help="how many sample images to search with (default: %(default)s)")
    p.add_argument("-k", type=int, default=5, help="neighbours shown per search (default: %(default)s)")
    p.set_defaults(run=run)


def run(args) -> int:
    """The README's first command: real images in, an index out, searches shown."""
    import random
    from pathlib import Path

    from index_builder import BuildConfig, build_index

    from ..retrieval import PoolIndex
    from ..samples import default_cache, fetch_samples

    out = Path(args.out)
    print(f"1/5 fetching the Tux Paint stamps (Debian package, unpacked into {default_cache()}, the one cache "
          f"curator samples fetch also uses) ...")
    pool = fetch_samples(["tuxpaint"], default_cache())["tuxpaint"]
    print(f"2/5 building an index over {pool} with {args.encoder} ...")
    report = build_index([str(pool)], out / "index", BuildConfig(encoder=args.encoder, shard_size=200))
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
    serve_and_curate(out, pool, keys)
    distill_student(out, pool, index)
    return 0


def distill_student(out, pool, index) -> None:
    """Step 5: 5 labels per class, a transfer set curated for them, a distilled student."""
    from distill import run_distill
    from distill.data import load_labelled

    from ..curate import curate
    from ..formats import CurateParams, DistillConfig
    from ..queries import Query

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
        out=str(out / "distill"), teacher=SMALL_ENCODER, student="mobilenetv3_small_100",
        student_size=64, steps_a=60, steps_b=200, steps_c=60, cache_teacher=4, progress=False))
    t, st = report.teacher, report.student
    print(f"    teacher {t.spec}: test accuracy {t.test.accuracy:.3f}, {t.params / 1e6:.1f} M params, "
          f"{t.latency_ms_batch1:.1f} ms/image on this {t.latency_device.upper()}\n"
          f"    student {st.name} @ {st.size} px: test accuracy {st.final['test'].accuracy:.3f}, "
          f"{st.params / 1e6:.1f} M params, {st.latency_ms_cpu_batch1:.1f} ms/image "
          f"(chance {1 / len(data.classes):.3f}; report in {out / 'distill' / 'report.json'})")


def serve_and_curate(out, pool, keys: list[str]) -> None:
    """Start the service on a free loopback port, POST target images to /curate, show the set."""
    import secrets
    import socket
    import threading
    import time
    from collections import Counter

    import pyarrow.parquet as pq
    import uvicorn

    from api import Settings, create_app

    from ..client import CuratorClient

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
            job = client.wait(client.curate(queries, {"per_query": 8}, labels=[q.parent.name for q in queries]).id)
            manifest = client.manifest(job.transfer_set_id)
        folder = out / "service" / "transfer-sets" / job.transfer_set_id
        rows = pq.read_table(folder / "samples.parquet").to_pylist()
        cats = Counter(r["pool_key"].split("/")[0] for r in rows)
        share = sum(r["pool_key"].split("/")[0] == r["query_label"] for r in rows) / max(1, len(rows))
        base = sum(sizes[q.parent.name] for q in queries) / len(queries) / len(keys)
        c = manifest.counts
        print(f"    transfer set {manifest.id}: {c.emitted} images, {c.deduped} near-duplicates dropped, "
              f"{c.excluded} excluded (too close to a query)\n"
              f"    {share:.0%} of it shares its query's category (a random draw would give {base:.0%}): "
              f"{dict(cats.most_common(5))}\n"
              f"    set: {folder} (by reference: {len(manifest.shardlist)} webdataset shard(s) assembled from the "
              f"pool when read, sha256 in manifest.json; curator materialize writes them out)")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
