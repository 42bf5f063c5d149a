"""Transfer sets by reference against copies: the same curation (100 queries x 1,000 per query on a 1M-vector
pool index, balanced, dedup and contamination control on) written both ways in the same run, per phase;
then one shard served by the service both ways (assembled from the pool vs its file).

The pool is bench_curate's: synthetic CLIP-like vectors whose rows point at real openclipart PNGs.
Both modes read and sha256-check every sample's bytes (the shard checksums in the manifest need them);
the copy writes them again as shards, the reference writes a row per sample.

    python benchmarks/bench_refsets.py [--n 1000000] [--queries 100] [--per-query 1000] [--baseline REV]
    python benchmarks/bench_refsets.py --n 2000000 --queries 1000 --modes links --work bench-out/curate2m \\
        --section refsets-1m          # a 1M-sample set
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.curate import curate  # noqa: E402
from curator.formats import CurateParams, save_doc  # noqa: E402
from curator.pool import list_folder_images  # noqa: E402
from curator.queries import Query  # noqa: E402
from curator.refshards import read_segments  # noqa: E402
from curator.retrieval import PoolIndex  # noqa: E402
from curator.samples import fetch_samples  # noqa: E402
from curator import transfer  # noqa: E402
from curator.transfer import shard_path_or_layout  # noqa: E402
from report import checkout, command, commit, machine, record_result  # noqa: E402
from synthetic import ClusteredVectors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def run(pool: PoolIndex, qv, per_query: int, out: Path, mode: str, one_process: bool,
        name: str) -> tuple[dict, float, int]:
    """One curation; ``one_process``: every shard written in this process (the writer before its pool)."""
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
    from curator.formats import INDEX_MANIFEST_NAME, IndexManifest, load_doc
    from index_builder.dedup_links import build_links

    manifest = load_doc(index_dir / INDEX_MANIFEST_NAME, IndexManifest)  # an earlier run's links: found again
    save_doc(index_dir / INDEX_MANIFEST_NAME, manifest.model_copy(update={"links": None}))
    t0 = time.perf_counter()
    build_links(index_dir, CurateParams().dedup, workers=os.cpu_count() or 1, progress=False)
    return time.perf_counter() - t0, PoolIndex.open(index_dir)


MODES = {"reference-1proc": ("reference", True), "copy": ("copy", False), "reference": ("reference", False)}
BASELINE_RUN = textwrap.dedent("""
    import json, sys, time
    sys.path[:0] = [sys.argv[1], sys.argv[2]]
    from synthetic import ClusteredVectors
    from curator.curate import curate
    from curator.formats import CurateParams
    from curator.queries import Query
    from curator.retrieval import PoolIndex
    import shutil
    from pathlib import Path
    n, per_query, out = int(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6])
    qv = ClusteredVectors().sample(n, seed=321)
    shutil.rmtree(out / "set", ignore_errors=True)
    pool = PoolIndex.open(sys.argv[3])  # open, as in the service: the curation alone is timed
    t0 = time.perf_counter()
    m = curate(pool, [Query(f"q{i}") for i in range(n)], CurateParams(per_query=per_query, materialize="reference"),
               out, query_vectors=qv, set_id="set")
    print(json.dumps(dict(m.timings, wall=time.perf_counter() - t0, sha=[s.sha256 for s in m.shardlist])))
""")


def baseline_runs(rev: str, index_dir: Path, args, work: Path) -> dict[str, list[dict]]:
    """The by-reference curation with links at commit ``rev`` and at this tree, alternating, each in its
    own process on its own checkout."""
    times: dict[str, list[dict]] = {"baseline": [], "current": []}
    work = work.resolve()
    with checkout(rev, work / "baseline-tree") as old:
        for r in range(args.repeats):
            for name, tree in (("baseline", old), ("current", ROOT))[:: 1 if r % 2 == 0 else -1]:
                out = subprocess.run([sys.executable, "-c", BASELINE_RUN, str(tree), str(tree / "benchmarks"),
                                      str(index_dir.resolve()), str(args.queries), str(args.per_query), str(work / name)],
                                     cwd=tree, check=True, stdout=subprocess.PIPE, text=True).stdout
                times[name].append(json.loads(out.strip().splitlines()[-1]))
                print(name, {k: v for k, v in times[name][-1].items() if k != "sha"}, flush=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="pool vectors (default: %(default)s)")
    ap.add_argument("--queries", type=int, default=100, help="(default: %(default)s)")
    ap.add_argument("--per-query", type=int, default=1000, help="(default: %(default)s)")
    ap.add_argument("--work", type=Path, default=Path("bench-out/curate"), help="shared with bench_curate.py")
    ap.add_argument("--modes", nargs="+", default=[*MODES, "links"], choices=[*MODES, "links"],
                    help="which curations to run; links: by reference with the pool's near-duplicate links, "
                         "added first (default: all)")
    ap.add_argument("--baseline", help="also time the by-reference curation with links at this commit and at "
                                       "this tree, alternating, each in its own process")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs for --baseline (default: %(default)s)")
    ap.add_argument("--changed", default="shards hashed with md5 as well as sha256",
                    help="what the baseline does differently, for the write-up (default: %(default)s)")
    ap.add_argument("--section", default="refsets", help="the bench record (default: %(default)s)")
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
    rows = {}
    for mode in (m for m in MODES if m in args.modes):
        rows[mode] = run(pool, qv, args.per_query, out, *MODES[mode], name=mode)
    links_s = None
    if "links" in args.modes:
        links_s, pool = add_links(index_dir)
        rows["reference, links"] = run(pool, qv, args.per_query, out, "reference", False, "reference-links")
    served = {}
    if "copy" in rows and "reference" in rows:
        shard = rows["copy"][0].shardlist[len(rows["copy"][0].shardlist) // 2].url
        served = {mode: (shard, *serve_shard(out / mode, shard)) for mode in ("copy", "reference")}
    versus = baseline_runs(args.baseline, index_dir, args, args.work / "baseline") if args.baseline else None
    write(args, rows, served, links_s, versus)


LABELS = {"copy": "copy", "reference": "reference", "reference-1proc": "reference (one process)",
          "reference, links": "reference, links"}


def write(args, rows: dict, served: dict, links_s, versus) -> None:
    def line(mode):
        m, wall, size = rows[mode]
        t = m.timings
        return (f"| {LABELS[mode]} | {wall:.1f} | {t['search']:.2f} | {t['select']:.2f} | {t['write']:.1f} | "
                f"{size / 1e6:,.1f} | {size / max(1, m.counts.emitted):,.0f} |")
    first = next(iter(rows.values()))[0]
    parts = [f"""## Transfer sets by reference vs copies: {args.queries:,} queries x {args.per_query:,} on {args.n:,} pool vectors

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`

{first.counts.emitted:,} samples a set, real openclipart PNG bytes (bench_curate's pool: synthetic vectors whose
rows point at 8k real files). Every mode reads and sha256-checks every sample against the pool, and hashes the
shards it lays out (the manifest's per-shard sha256); only the copy writes the bytes again.

| mode | wall s | search s | select s | write s | set on disk MB | bytes per sample |
|---|---|---|---|---|---|---|
""" + "\n".join(line(mode) for mode in rows)]
    if "copy" in rows and "reference" in rows:
        (mc, wc, _), (mr, wr, _) = rows["copy"], rows["reference"]
        parts.append(f"By reference / copy: wall {wr / wc:.2f}x, write phase "
                     f"{mr.timings['write'] / max(1e-9, mc.timings['write']):.2f}x. Shard lists (names, sizes, sha256) "
                     f"identical in both manifests: **{mc.shardlist == mr.shardlist}**.")
    if "reference-1proc" in rows and "reference" in rows:
        one, many = rows["reference-1proc"][0].timings["write"], rows["reference"][0].timings["write"]
        parts.append(f"Shards written by {min(transfer.MAX_WRITE_PROCESSES, transfer.usable_cpus())} spawned "
                     f"processes against all in this process: write phase {one / max(1e-9, many):.2f}x faster.")
    if "reference, links" in rows:
        ml, wl, _ = rows["reference, links"]
        parts.append(f"**With near-duplicate links** (what `build-index` makes by default for a pool of 100,000 "
                     f"items or more, at {CurateParams().dedup}; {links_s:.0f} s once) the curation looks its candidates' near-duplicates up instead of "
                     f"searching for them: **{wl:.1f} s** end to end (search {ml.timings['search']:.2f}, select "
                     f"{ml.timings['select']:.2f}, write {ml.timings['write']:.2f})."
                     + (f" Same selection and shard list as searched: **{ml.shardlist == rows['reference'][0].shardlist}**."
                        if "reference" in rows else ""))
    if versus:
        parts.append(baseline_text(args, versus))
    if served:
        shard = served["copy"][0]
        parts.append(f"Serving shard `{shard}` ({served['copy'][2] / 1e6:.1f} MB), finding it included: from its file "
                     f"{served['copy'][1]:.2f} s; assembled from the pool with every sample sha256-checked "
                     f"{served['reference'][1]:.2f} s (its rows are one row group of samples.parquet, read alone). "
                     f"Page cache warm for both (the curation just read the pool's files); a cold pool on network "
                     f"storage costs its reads in both the curation and the serving.")
    body = "\n\n".join(parts) + "\n"
    summary = ""
    if "reference, links" in rows and "reference" in rows:  # what a user gets: links are the default from 100k items
        wl, ws = rows["reference, links"][1], rows["reference"][1]
        summary = (f"{args.queries} x {args.per_query:,} on {args.n:,}: {wl:.1f} s with the index's default links, "
                   f"{ws:.1f} s searched ({ws / wl:.1f}x)")
    record_result(args.section, body, summary=summary)
    print(body)


def baseline_text(args, versus: dict) -> str:
    def best(name: str, key: str) -> float:
        return min(t[key] for t in versus[name])
    def each(name: str) -> str:
        return ", ".join(f"{t['wall']:.2f}" for t in versus[name])
    rows = "\n".join(f"| {name} | {each(name)} | {best(name, 'wall'):.2f} | {best(name, 'write'):.2f} | "
                     f"{best(name, 'select'):.2f} |" for name in versus)
    same = versus["baseline"][0]["sha"] == versus["current"][0]["sha"]
    return f"""Against commit {args.baseline} ({args.changed}), the same by-reference
curation with links, each in its own process on its own checkout, alternating:

| code | wall s (each run) | best wall s | best write s | best select s |
|---|---|---|---|---|
{rows}

Current / baseline: **{best('current', 'wall') / best('baseline', 'wall'):.2f}x the wall time**, write phase
{best('current', 'write') / best('baseline', 'write'):.2f}x. Shard sha256 identical: **{same}**."""


if __name__ == "__main__":
    main()
