"""Transfer sets by reference against copies: the same curation (100 queries x 1,000 per query on a 1M-vector
pool index, balanced, dedup and contamination control on) written both ways in the same run, per phase;
then one shard served by the service both ways (assembled from the pool vs its file).

The pool is bench_curate's: synthetic CLIP-like vectors whose rows point at real openclipart PNGs.
Both modes read and sha256-check every sample's bytes (the shard checksums in the manifest need them);
the copy writes them again as shards, the reference writes a row per sample.

    python benchmarks/bench_refsets.py [--n 1000000] [--queries 100] [--per-query 1000]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.curate import curate  # noqa: E402
from curator.formats import CurateParams  # noqa: E402
from curator.pool import list_folder_images  # noqa: E402
from curator.queries import Query  # noqa: E402
from curator.refshards import read_segments  # noqa: E402
from curator.retrieval import PoolIndex  # noqa: E402
from curator.samples import fetch_samples  # noqa: E402
from curator import transfer  # noqa: E402
from curator.transfer import shard_path_or_layout  # noqa: E402
from report import command, commit, machine, update_section  # noqa: E402
from synthetic import ClusteredVectors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def run(pool: PoolIndex, qv, per_query: int, out: Path, mode: str, one_process: bool = False,
        name: str = "") -> tuple[dict, float, int]:
    """One curation; ``one_process``: every shard written in this process (the writer before its pool)."""
    name = name or mode + ("-1proc" if one_process else "")
    shutil.rmtree(out / name, ignore_errors=True)
    queries = [Query(f"q{i}") for i in range(len(qv))]
    saved = transfer.PROCESS_MIN_SAMPLES
    transfer.PROCESS_MIN_SAMPLES = 10**12 if one_process else saved
    try:
        t0 = time.perf_counter()
        m = curate(pool, queries, CurateParams(per_query=per_query, materialize=mode), out, query_vectors=qv,
                   set_id=name)
        return m, time.perf_counter() - t0, folder_bytes(out / name)
    finally:
        transfer.PROCESS_MIN_SAMPLES = saved


def serve_shard(folder: Path, name: str) -> tuple[float, int]:
    """Seconds to produce one whole shard's bytes (finding it included): from its file, or assembled
    from the pool."""
    t0 = time.perf_counter()
    source = shard_path_or_layout(folder, name)
    if isinstance(source, Path):
        n = len(source.read_bytes())
    else:
        n = sum(len(b) for b in read_segments(source))
    return time.perf_counter() - t0, n


def add_links(index_dir: Path) -> tuple[float, PoolIndex]:
    """The index's near-duplicate links at curate's default dedup (``build-index --dedup-links``), timed."""
    from curator import atomic
    from curator.formats import INDEX_MANIFEST_NAME, IndexManifest, load_doc
    from index_builder.links import build_links

    manifest = load_doc(index_dir / INDEX_MANIFEST_NAME, IndexManifest)  # an earlier run's links: found again
    atomic.write_json(index_dir / INDEX_MANIFEST_NAME, manifest.model_copy(update={"links": None}).model_dump())
    t0 = time.perf_counter()
    build_links(index_dir, CurateParams().dedup, workers=os.cpu_count() or 1, progress=False)
    return time.perf_counter() - t0, PoolIndex.open(index_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--per-query", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=Path("bench-out/curate"), help="shared with bench_curate.py")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    src = fetch_samples(["openclipart"], ROOT / ".cache" / "samples")["openclipart"]
    files = [f for f in (Path(src) / f for f in list_folder_images(str(src))) if f.stat().st_size < 2_000_000]
    gen = ClusteredVectors()
    from bench_curate import make_index  # heavy (torch): not at the top, which every writer process re-imports

    index_dir, _ = make_index(args.work, args.n, None, gen.sample(args.n, seed=0), files)
    qv = gen.sample(args.queries, seed=321)
    pool = PoolIndex.open(index_dir)
    pool = PoolIndex(pool.root, pool.manifest.model_copy(update={"links": None}), pool.index, pool.items)  # searched
    out = args.work / "refsets"
    rows = {"reference (one process)": run(pool, qv, args.per_query, out, "reference", one_process=True)}
    rows.update({mode: run(pool, qv, args.per_query, out, mode) for mode in ("copy", "reference")})
    links_s, pool = add_links(index_dir)
    rows["reference, links"] = run(pool, qv, args.per_query, out, "reference", name="reference-links")
    shardlist = rows["copy"][0].shardlist
    shard = shardlist[len(shardlist) // 2].url
    served = {mode: serve_shard(out / mode, shard) for mode in ("copy", "reference")}
    write(args, rows, served, shard, links_s)


def write(args, rows, served, shard, links_s) -> None:
    def line(mode):
        m, wall, size = rows[mode]
        t = m.timings
        return (f"| {mode} | {wall:.1f} | {t['search']:.2f} | {t['select']:.2f} | {t['write']:.1f} | "
                f"{size / 1e6:,.1f} | {size / max(1, m.counts.emitted):,.0f} |")
    (mc, wc, _), (mr, wr, _), (ml, wl, _) = rows["copy"], rows["reference"], rows["reference, links"]
    same = mc.shardlist == mr.shardlist
    body = f"""## Transfer sets by reference vs copies: {args.queries} queries x {args.per_query:,} on {args.n:,} pool vectors

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`

The same curation written both ways in one run ({mc.counts.emitted:,} samples, real openclipart PNG bytes).
Both read and sha256-check every sample (the manifest's per-shard sha256 needs the bytes); only the copy
writes them again. Shard lists (names, sizes, sha256, md5) identical in both manifests: **{same}**.

| mode | wall s | search s | select s | write s | set on disk MB | bytes per sample |
|---|---|---|---|---|---|---|
{line("copy")}
{line("reference")}
{line("reference (one process)")}
{line("reference, links")}

By reference / copy: wall {wr / wc:.2f}x, write phase {mr.timings['write'] / max(1e-9, mc.timings['write']):.2f}x.
Shards written by {min(transfer.MAX_WRITE_PROCESSES, transfer.usable_cpus())} spawned processes against all in this process
(the writer before, the baseline of this run): write phase
{rows["reference (one process)"][0].timings['write'] / max(1e-9, mr.timings['write']):.2f}x faster. The floor here is
hashing: every sample's bytes are hashed three times (its sha256 check, the shard's sha256 and md5), about
6.3 s of one core for these {mc.counts.emitted:,} samples at this machine's 1.5 GB/s (sha256) and 0.66 GB/s
(md5); the rest is per-sample Python (opening the file, tar headers, JSON), which is why threads did not help
and processes do.
**Target (issue 14): < 5 s end to end, query embedding excluded. Not met on 2 cores: {wr:.1f} s by reference**
(search {mr.timings['search']:.1f}, select {mr.timings['select']:.1f}, write {mr.timings['write']:.1f}); the
hashing alone is ~3.2 s of both cores. The write phase scales with cores (up to {transfer.MAX_WRITE_PROCESSES}
writer processes); selection does not yet (near-duplicate cells and the walk are one core).

**With near-duplicate links** (`build-index --dedup-links {CurateParams().dedup}` on this index, {links_s:.0f} s once):
the same reference curation looks its candidates' near-duplicates up instead of searching for them: select
{ml.timings['select']:.2f} s against {mr.timings['select']:.2f} s searched, {wl:.1f} s in all against {wr:.1f} s. Same
selection and shard list: **{ml.shardlist == mr.shardlist}**. Target {'met' if wl < 5 else 'not met'} with the links.

Serving shard `{shard}` ({served['copy'][1] / 1e6:.1f} MB), finding it included: from its file {served['copy'][0]:.2f} s;
assembled from the pool with every sample sha256-checked {served['reference'][0]:.2f} s (its rows are one row group
of samples.parquet, read alone).
Page cache warm for both (the pool PNGs were just read by the curation); a cold pool on network storage
costs its reads in both the curation and the serving.
"""
    update_section("refsets", body)
    print(body)


if __name__ == "__main__":
    main()
