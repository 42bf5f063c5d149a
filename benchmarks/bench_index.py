"""Index benchmark: curator's index choice vs exact search and autofaiss, same vectors, same run.

1M x 512 CLIP-like clustered vectors (benchmarks/synthetic.py), 1,000 fresh queries, exact
top-10 ground truth. For each arm: build time, index size, recall@10 and queries/s at batch
1 and 100, with faiss on all cores. curator's arms use the functions `curator build-index`
uses (choose_index, train_size_for, fill_index, tune_nprobe on held-out pool vectors).
autofaiss runs in its own venv (benchmarks/setup_peers.sh) with its defaults.

    python benchmarks/bench_index.py [--n 1000000] [--budgets 4G 1G] [--peers bench-out]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402

from index_builder import faiss_index as fi  # noqa: E402
from report import command, commit, machine, record_result  # noqa: E402
from synthetic import ClusteredVectors  # noqa: E402

K = 10


def qps(index, queries: np.ndarray, batch: int, budget_s: float = 10.0) -> float:
    done, t0 = 0, time.perf_counter()
    while done < len(queries) and time.perf_counter() - t0 < budget_s:
        index.search(queries[done:done + batch], K)
        done += batch
    return min(done, len(queries)) / (time.perf_counter() - t0)


def recall(index, queries, gt) -> float:
    return fi.recall_at(index.search(queries, K)[1], gt, np.full(len(queries), -1), K)


def size_of(index, path: Path) -> int:
    faiss.write_index(index, str(path))
    return path.stat().st_size


def curator_arm(x, queries, gt, budget, work: Path, seed=0) -> dict:
    n, d = x.shape
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    factory = fi.choose_index(n, d, fi.parse_bytes(budget)).factory
    index = fi.new_index(factory, d, "cpu")
    train = x[np.sort(rng.choice(n, fi.train_size_for(index, n), replace=False))]
    chunks = lambda: (x[s:s + 200_000] for s in range(0, n, 200_000))
    fi.fill_index(index, train, chunks)
    held = np.sort(rng.choice(n, 1000, replace=False))
    nprobe, tuned = fi.tune_nprobe(index, x[held], fi.exact_knn(x[held], chunks, K + 1), held, 0.95)
    build = time.perf_counter() - t0
    return dict(arm=f"curator (budget {budget})", index=factory, params=f"nprobe={nprobe}", build_s=build,
                bytes=size_of(index, work / "curator.index"), recall=recall(index, queries, gt),
                qps1=qps(index, queries, 1), qps100=qps(index, queries, 100))


def exact_arm(x, queries, gt, work: Path) -> dict:
    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return dict(arm="exact", index="Flat", params="-", build_s=time.perf_counter() - t0,
                bytes=size_of(index, work / "flat.index"), recall=recall(index, queries, gt),
                qps1=qps(index, queries, 1), qps100=qps(index, queries, 100))


AUTOFAISS = textwrap.dedent("""
    import json, sys, time, numpy as np, faiss
    from autofaiss import build_index
    emb, work, budget = sys.argv[1], sys.argv[2], sys.argv[3]
    t0 = time.perf_counter()
    build_index(embeddings=emb, index_path=work + "/af.index", index_infos_path=work + "/af.json",
                max_index_memory_usage=budget, current_memory_available="16G", metric_type="ip",
                save_on_disk=True, verbose=30)
    build = time.perf_counter() - t0
    print(json.dumps({"build_s": build}))
""")


def autofaiss_arm(peers: Path, emb_dir: Path, queries, gt, work: Path, budget="2G") -> dict | None:
    python = peers / "venv-autofaiss" / "bin" / "python"
    if not python.exists():
        print(f"autofaiss venv missing ({python}); run benchmarks/setup_peers.sh", file=sys.stderr)
        return None
    proc = subprocess.run([str(python), "-c", AUTOFAISS, str(emb_dir), str(work), budget],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return None
    build = json.loads(proc.stdout.strip().splitlines()[-1])["build_s"]
    index = faiss.read_index(str(work / "af.index"))
    infos = json.loads((work / "af.json").read_text())
    params = infos.get("index_param", "")
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    return dict(arm=f"autofaiss 2.18.0 (budget {budget})", index=infos.get("index_key", "?"), params=params,
                build_s=build, bytes=(work / "af.index").stat().st_size, recall=recall(index, queries, gt),
                qps1=qps(index, queries, 1), qps100=qps(index, queries, 100))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--budgets", nargs="+", default=["4G", "1G"])
    ap.add_argument("--peers", type=Path, default=Path("bench-out"))
    ap.add_argument("--work", type=Path, default=Path("bench-out/index"))
    ap.add_argument("--no-autofaiss", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    gen = ClusteredVectors(d=args.d)
    x, queries = gen.sample(args.n, seed=0), gen.sample(1000, seed=123)
    gt = fi.exact_knn(queries, lambda: (x[s:s + 200_000] for s in range(0, len(x), 200_000)), K)
    rows = [exact_arm(x, queries, gt, args.work)]
    for budget in args.budgets:
        rows.append(curator_arm(x, queries, gt, budget, args.work))
        print(rows[-1], flush=True)
    if not args.no_autofaiss:
        emb = args.work / "emb"
        emb.mkdir(exist_ok=True)
        np.save(emb / "part0.npy", x)
        del x
        row = autofaiss_arm(args.peers, emb, queries, gt, args.work)
        if row:
            rows.append(row)
            print(row, flush=True)
    write(rows, args)


def write(rows: list[dict], args) -> None:
    af = next((r for r in rows if r["arm"].startswith("autofaiss")), None)
    lines = ["| arm | index | search params | build s | size MB | recall@10 | q/s batch 1 | q/s batch 100 |"
             + (" vs autofaiss (build / q/s b1 / size) |" if af else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if af else "")]
    for r in rows:
        ratio = ""
        if af:
            ratio = (f" {af['build_s'] / r['build_s']:.1f}x faster / {r['qps1'] / af['qps1']:.1f}x / "
                     f"{r['bytes'] / af['bytes']:.2f}x |")
        lines.append(f"| {r['arm']} | `{r['index']}` | {r['params']} | {r['build_s']:.1f} | {r['bytes'] / 1e6:.0f} | "
                     f"{r['recall']:.3f} | {r['qps1']:.0f} | {r['qps100']:.0f} |{ratio}")
    body = f"""## Index: {args.n:,} x {args.d} clustered CLIP-like vectors

Machine: {machine()}; faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads. Commit {commit()}.
Command: `{command()}`

Vectors from `benchmarks/synthetic.py` (4,096 clusters, random-pair cosine 0.31); 1,000 fresh
queries; recall@10 against exact top-10. curator's build time includes k-means training, adding,
and tuning nprobe to recall@10 >= 0.95 on 1,000 held-out pool vectors (as `build-index` does).
autofaiss runs with its defaults (`max_index_query_time_ms=10`) in its own venv, in the same run.

{chr(10).join(lines)}
"""
    record_result("index", body)
    print(body)


if __name__ == "__main__":
    main()
