"""Selection (search + the balanced walk with dedup and contamination control) against an earlier
commit, in the same run: 100 queries x 1,000 on bench_curate's 1M-vector pool, the two alternating,
each in its own process on its own checkout (a git worktree), with identical output checked.

    python benchmarks/bench_select.py [--baseline d803745] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE)]

from report import checkout, command, commit, machine, record_result  # noqa: E402

CHANGED_SINCE_D803745 = ("near-duplicate cells come from the list each item is stored in and that list's "
                         "neighbouring centroids instead of a search against all 2,048 centroids; near-duplicates "
                         "are one CSR array; the round-robin walk runs on plain Python lists.")
RUN = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    sys.path[:0] = [sys.argv[1], sys.argv[2]]
    from synthetic import ClusteredVectors
    from curator.curate import select_items
    from curator.formats import CurateParams
    from curator.retrieval import PoolIndex
    pool = PoolIndex.open(sys.argv[3])
    qv = ClusteredVectors().sample(100, seed=321)
    t = {}
    select_items(pool, qv, np.arange(100), [None] * 100, qv, CurateParams(per_query=1000, dedup=float(sys.argv[5])), {})  # warm
    s = select_items(pool, qv, np.arange(100), [None] * 100, qv, CurateParams(per_query=1000, dedup=float(sys.argv[5])),
                     t)
    np.savez(sys.argv[4], ids=s.ids, query=s.query, rank=s.rank, score=s.score,
             dropped=np.array([d[0] for d in s.dropped], dtype=np.int64))
    print(json.dumps({"search": t["search"], "select": t["select"], "n": int(len(s.ids)), "dropped": len(s.dropped)}))
""")


def run(tree: Path, index: Path, out: Path, dedup: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUN, str(tree), str(HERE), str(index), str(out), str(dedup)],
                          capture_output=True, text=True, cwd=tree)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="d803745", help="the commit to compare with (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each (default: %(default)s)")
    ap.add_argument("--section", default="select", help="the bench record to write (default: %(default)s)")
    ap.add_argument("--changed", default=CHANGED_SINCE_D803745,
                    help="what the current code changed since the baseline, for the write-up")
    ap.add_argument("--dedup", type=float, default=0.9,
                    help="the curation's --dedup (default: %(default)s; at or above the index's --dedup-links "
                         "threshold the links are used)")
    ap.add_argument("--index", type=Path, default=ROOT / "bench-out" / "curate" / "index-auto",
                    help="a 1M-vector pool index (benchmarks/bench_curate.py makes it)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-select-"))
    with checkout(args.baseline, work / "baseline") as old:
        times: dict[str, list[dict]] = {"baseline": [], "current": []}
        for r in range(args.repeats):
            for name, tree in (("baseline", old), ("current", ROOT))[:: 1 if r % 2 == 0 else -1]:
                times[name].append(run(tree, args.index, work / f"{name}.npz", args.dedup))
                print(name, times[name][-1], flush=True)
        a, b = np.load(work / "baseline.npz"), np.load(work / "current.npz")
        same = all(np.array_equal(a[k], b[k]) for k in a.files)
    write(args, times, same)


def write(args, times: dict, same: bool) -> None:
    def best(name: str, key: str) -> float:
        return min(t[key] for t in times[name])
    def each(name: str) -> str:
        return ", ".join(f"{t['select']:.2f}" for t in times[name])
    rows = "\n".join(f"| {name} | {each(name)} | {best(name, 'select'):.2f} | {best(name, 'search'):.2f} |"
                     for name in times)
    body = f"""## Selection against commit {args.baseline}: 100 queries x 1,000 on 1,000,000 pool vectors

Machine: {machine()}. Commit {commit()}. Command: `{command()}`.
`select_items` (search, then the balanced walk with dedup {args.dedup} and contamination control against the queries) on
bench_curate's pool, each checkout in its own process, alternating, after one warm-up selection each.

| code | select s (each run) | best select s | best search s |
|---|---|---|---|
{rows}

**Current / baseline: {best('current', 'select') / best('baseline', 'select'):.2f}x the selection time**, with identical
output: **{same}** (selected ids, their queries, ranks and scores, and every item left out; {times['current'][0]['n']:,}
selected, {times['current'][0]['dropped']} left out). What changed: {args.changed}
"""
    record_result(args.section, body)
    print(body)


if __name__ == "__main__":
    main()
