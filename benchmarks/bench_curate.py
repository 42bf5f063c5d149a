"""Curation benchmark: 100 queries x 1,000 per query (balanced, dedup on, shards written) on a
1M-vector pool index, against the same curation over an exact (Flat) index in the same run;
plus warm-server latency of one query x k=100.

The pool's vectors are synthetic CLIP-like embeddings (benchmarks/synthetic.py); its rows point
at real openclipart PNGs (reused cyclically), so the shards hold real bytes. Queries are
precomputed embeddings from the same mixture; embedding 100 real query images with ViT-B-32 is
timed on its own and reported as the embed phase.

    python benchmarks/bench_curate.py [--n 1000000] [--queries 100] [--per-query 1000]
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.encoders import create_encoder  # noqa: E402
from curator.curate import curate  # noqa: E402
from curator.formats import ITEM_SCHEMA, CurateParams, dump_doc, EncoderInfo, ShardDone, ShardTask  # noqa: E402
from curator.pool import list_folder_images  # noqa: E402
from curator.queries import Query, embed_queries  # noqa: E402
from curator.retrieval import PoolIndex  # noqa: E402
from curator.samples import fetch_samples  # noqa: E402
from index_builder.build import BuildConfig  # noqa: E402
from index_builder.generation import build_generation  # noqa: E402
from index_builder.runners import make_runner  # noqa: E402
from curator.atomic import write_npy  # noqa: E402
from index_builder.embed_images import shard_paths  # noqa: E402
from report import command, commit, machine, record_result  # noqa: E402
from synthetic import ClusteredVectors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARD = 100_000


def make_index(work: Path, n: int, factory: str | None, x: np.ndarray, files: list[Path]) -> tuple[Path, float]:
    out = work / ("index-exact" if factory == "Flat" else "index-auto")
    if (out / "index.json").exists():
        return out, float("nan")
    shutil.rmtree(out, ignore_errors=True)
    sizes = [f.stat().st_size for f in files]
    shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    tasks, dones = [], {}
    for s, start in enumerate(range(0, n, SHARD)):
        rows = range(start, min(n, start + SHARD))
        task = ShardTask(shard_id=f"{s:05d}", kind="folder", source="synthetic", files=None)
        paths = shard_paths(out, task.shard_id)
        paths["npy"].parent.mkdir(parents=True, exist_ok=True)
        write_npy(paths["npy"], x[start:start + len(rows)].astype(np.float16))
        pick = [i % len(files) for i in rows]
        pq.write_table(pa.table({"key": [f"item{i:08d}.png" for i in rows], "source": [str(files[j]) for j in pick],
                                 "offset": [0] * len(rows), "size": [sizes[j] for j in pick],
                                 "sha256": [shas[j] for j in pick], "width": [0] * len(rows),
                                 "height": [0] * len(rows), "caption": [None] * len(rows),
                                 "meta": [None] * len(rows)}, schema=ITEM_SCHEMA), paths["parquet"])
        tasks.append(task)
        dones[task.shard_id] = ShardDone(shard_id=task.shard_id, task_digest=task.digest(), encoder="synthetic",
                                         dim=x.shape[1], n_items=len(rows), n_skipped=0, embeddings_file="",
                                         metadata_file="", seconds=0)
    enc = EncoderInfo(spec="open_clip:ViT-B-32/none", dim=x.shape[1], image_size=224)
    t0 = time.perf_counter()
    opts = BuildConfig(encoder=enc.spec, index_factory=factory, progress=False, keep_duplicates=True)
    runner = make_runner(opts, None)
    try:
        build_generation(out, tasks, enc, opts, runner)
    finally:
        runner.close()
    return out, time.perf_counter() - t0


def run_curation(index_dir: Path, qv: np.ndarray, per_query: int, out: Path, set_id: str) -> tuple[dict, float]:
    pool = PoolIndex.open(index_dir)
    queries = [Query(f"q{i}", b"") for i in range(len(qv))]
    shutil.rmtree(out / set_id, ignore_errors=True)
    t0 = time.perf_counter()
    manifest = curate(pool, queries, CurateParams(per_query=per_query), out, query_vectors=qv, set_id=set_id)
    return dump_doc(manifest), time.perf_counter() - t0


def server_latency(index_dir: Path, work: Path, image: Path, n: int = 60) -> dict:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "curator.cli", "serve", "--index", str(index_dir), "--data",
                             str(work / "svc"), "--port", str(port), "--no-auth"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        data = image.read_bytes()
        out = {}
        with httpx.Client(base_url=url, timeout=60) as client:
            for name, call in [("upload (embed + search)", lambda: client.post("/search?k=100",
                                                                               files={"file": ("q.png", data)})),
                               ("pool item (search only)", lambda: client.get("/search?item_id=12345&k=100"))]:
                for _ in range(5):
                    call().raise_for_status()  # warm
                lat = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    call().raise_for_status()
                    lat.append(time.perf_counter() - t0)
                q = statistics.quantiles(lat, n=20)
                out[name] = (statistics.median(lat) * 1000, q[18] * 1000)
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--per-query", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=Path("bench-out/curate"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    src = fetch_samples(["openclipart"], ROOT / ".cache" / "samples")["openclipart"]
    files = [Path(src) / f for f in list_folder_images(str(src))]
    files = [f for f in files if f.stat().st_size < 2_000_000]
    gen = ClusteredVectors()
    x = gen.sample(args.n, seed=0)
    qv = gen.sample(args.queries, seed=321)
    auto, t_auto = make_index(args.work, args.n, None, x, files)
    exact, t_exact = make_index(args.work, args.n, "Flat", x, files)
    del x

    enc = create_encoder("open_clip:ViT-B-32/none")
    imgs = [Query(f.name, f.read_bytes()) for f in files[:args.queries]]
    t0 = time.perf_counter()
    embed_queries(enc, imgs)
    t_embed = time.perf_counter() - t0

    m_auto, wall_auto = run_curation(auto, qv, args.per_query, args.work / "sets", "auto")
    m_exact, wall_exact = run_curation(exact, qv, args.per_query, args.work / "sets", "exact")
    ids = lambda m: set(pq.read_table(args.work / "sets" / m["id"] / "samples.parquet").column("pool_id").to_pylist())
    overlap = len(ids(m_auto) & ids(m_exact)) / max(1, len(ids(m_exact)))
    lat = server_latency(auto, args.work, files[0])
    auto_index = PoolIndex.open(auto).manifest
    write(args, m_auto, wall_auto, m_exact, wall_exact, overlap, t_embed, lat, auto_index)


def write(args, m_auto, wall_auto, m_exact, wall_exact, overlap, t_embed, lat, manifest) -> None:
    def row(name, m, wall):
        t, c = m["timings"], m["counts"]
        return (f"| {name} | {wall:.1f} | {t['search']:.2f} | {t['select']:.2f} | {t['write']:.1f} | {c['candidates']:,} | "
                f"{c['deduped']:,} | {c['emitted']:,} | {c['search_depth']} |")
    body = f"""## Curation: {args.queries} queries x {args.per_query:,} per query on {args.n:,} pool vectors

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`

Balanced strategy, dedup 0.95, contamination control on, shards written (real PNG bytes,
{m_auto['counts']['emitted']:,} samples). The same curation over an exact `Flat` index of the same
vectors runs beside it. Queries are precomputed embeddings; embedding {args.queries} real query
images with open_clip ViT-B-32 on this CPU took {t_embed:.1f} s ({args.queries / t_embed:.1f} img/s), the embed phase.

| index | wall s | search s | select s (gather, dedup, walk) | write s | candidates | near-dups dropped | emitted | search depth k |
|---|---|---|---|---|---|---|---|---|
{row(f"curator's choice `{manifest.index_factory}`, nprobe {manifest.nprobe}", m_auto, wall_auto)}
{row("exact `Flat`", m_exact, wall_exact)}

Selection overlap with the exact run: {overlap:.1%} of the exact set's items. Ratio exact / curator wall time:
{wall_exact / wall_auto:.2f}x; search phase {m_exact['timings']['search'] / max(1e-9, m_auto['timings']['search']):.1f}x.

Warm server, one query x k=100, {60} requests each (`curator serve`, loopback HTTP):

| request | p50 ms | p95 ms |
|---|---|---|
""" + "\n".join(f"| {k} | {v[0]:.1f} | {v[1]:.1f} |" for k, v in lat.items()) + "\n"
    record_result("curate", body)
    print(body)


if __name__ == "__main__":
    main()
