"""Service replicas: curation-job throughput with 20 concurrent loopback clients, SQLite with one
replica against PostgreSQL with one and with two, all behind one address (a round-robin TCP proxy
in this script, standing in for a load balancer); then a replica SIGKILLed under that load.

Each job is two query embeddings x --per-query neighbours on a synthetic pool whose rows point at
real openclipart PNGs (benchmarks/bench_curate.py's index), written by reference (the default).
PostgreSQL is Debian's server as a throwaway unprivileged cluster (tests/postgres.py), fsync off.

    python benchmarks/bench_replicas.py [--jobs 300] [--clients 20] [--n 200000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT), str(ROOT / "tests")]

from bench_curate import make_index  # noqa: E402
from curator.pool import list_folder_images  # noqa: E402
from curator.samples import fetch_samples  # noqa: E402
from helpers import free_port  # noqa: E402
from postgres import Cluster, find_bindir  # noqa: E402
from report import command, commit, machine, record_result  # noqa: E402
from synthetic import ClusteredVectors  # noqa: E402


class Proxy:
    """One address in front of the replicas: each connection goes to the next replica that accepts
    it (a dead one is skipped), as a TCP load balancer with connect-failure health checks does."""

    def __init__(self, ports: list[int]):
        self.ports, self.port, self.turn = list(ports), free_port(), 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self.ready.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer) -> None:
        for _ in range(len(self.ports)):
            port = self.ports[self.turn % len(self.ports)]
            self.turn += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


async def _pipe(reader, writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def start_replica(index: Path, data: Path, name: str, database: str | None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    argv = [sys.executable, "-m", "curator.cli", "serve", "--index", str(index), "--data", str(data), "--port",
            str(port), "--no-auth", "--replica", name, "--job-lease-seconds", "5"]
    proc = subprocess.Popen(argv + (["--database", database] if database else []), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"replica {name} did not come up")


def load(url: str, queries: np.ndarray, jobs: int, clients: int, per_query: int,
         kill: tuple[int, subprocess.Popen] | None = None) -> dict:
    """``jobs`` jobs from ``clients`` threads, each submitting with ?wait=true and polling the rest.
    A request cut off by a dead replica is retried; one whose job id never came back counts as unacknowledged."""
    counter, lock = iter(range(jobs)), threading.Lock()
    latencies, acked, unacked = [], [], [0]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                if kill is not None and i == kill[0]:
                    kill[1].send_signal(signal.SIGKILL)
                body = {"params": {"per_query": per_query, "seed": i},
                        "embeddings": queries[[i % len(queries), (i + 7) % len(queries)]].tolist()}
                t0 = time.perf_counter()
                job = _submit(http, body)
                if job is None:
                    unacked[0] += 1
                    continue
                while job["state"] in ("queued", "running"):
                    time.sleep(0.05)
                    job = _get(http, f"/jobs/{job['id']}") or job
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    acked.append(job)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    return {"wall": wall, "jobs_per_s": len(acked) / wall, "p50": statistics.median(latencies),
            "p95": statistics.quantiles(latencies, n=20)[18], "acked": acked, "unacked": unacked[0]}


def _submit(http: httpx.Client, body: dict) -> dict | None:
    """As the client library does: one Idempotency-Key for every try, so a retry never makes a second job."""
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    for _ in range(5):
        try:
            r = http.post("/curate", params={"wait": True}, json=body, headers=headers)
            if r.status_code in (200, 202):
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return None


def _get(http: httpx.Client, path: str) -> dict | None:
    try:
        r = http.get(path)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def run_config(name: str, index: Path, work: Path, database: str | None, replicas: int, queries: np.ndarray,
               args, kill_at: int | None = None) -> dict:
    data = work / f"data-{name}"
    subprocess.run(["rm", "-rf", str(data)], check=True)
    procs = [start_replica(index, data, f"r{i}", database) for i in range(replicas)]
    proxy = Proxy([port for _, port in procs])
    try:
        load(f"http://127.0.0.1:{proxy.port}", queries, 20, args.clients, args.per_query)  # warm-up
        kill = (kill_at, procs[0][0]) if kill_at is not None else None
        result = load(f"http://127.0.0.1:{proxy.port}", queries, args.jobs, args.clients, args.per_query, kill)
        result.update(outcome(result["acked"], data, database, expected=20 + args.jobs))
        print(name, json.dumps({k: v for k, v in result.items() if k != "acked"}), flush=True)
        return result
    finally:
        proxy.stop()
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)


def outcome(acked: list[dict], data: Path, database: str | None, expected: int) -> dict:
    """Of the acknowledged jobs: succeeded, lost (not succeeded), done twice (more jobs in the database
    than requests sent, a set recorded twice, or a set folder without its row); and how many ran
    again after a takeover."""
    states = [j["state"] for j in acked]
    rows = _rows(database, data, [j["id"] for j in acked])
    sets = [r[1] for r in rows if r[1]]
    folders = {p.name for p in (data / "transfer-sets").iterdir() if not p.name.startswith(".")}
    made = _query(database, data, "SELECT COUNT(*) FROM jobs")[0][0]
    return {"succeeded": states.count("succeeded"), "lost": len(acked) - states.count("succeeded"),
            "duplicated": max(0, made - expected) + (len(sets) - len(set(sets)))
            + len(folders - set(r[1] for r in _all_sets(database, data))),
            "rerun": sum(1 for r in _query(database, data, "SELECT attempts FROM jobs") if (r[0] or 0) > 1)}


def _query(database: str | None, data: Path, sql: str, args: tuple = ()) -> list[tuple]:
    if database:
        import psycopg

        with psycopg.connect(database) as conn:
            return conn.execute(sql.replace("?", "%s"), args).fetchall()
    import sqlite3

    with sqlite3.connect(data / "curator.sqlite3") as conn:
        return conn.execute(sql, args).fetchall()


def _rows(database, data, ids):
    marks = ", ".join("?" * len(ids))
    return _query(database, data, f"SELECT id, transfer_set_id, attempts FROM jobs WHERE id IN ({marks})", tuple(ids))


def _all_sets(database, data):
    return _query(database, data, "SELECT job_id, id FROM transfer_sets")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="pool vectors (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=300, help="jobs per configuration (default: %(default)s)")
    ap.add_argument("--clients", type=int, default=20, help="concurrent clients (default: %(default)s)")
    ap.add_argument("--per-query", type=int, default=100, help="neighbours per query (default: %(default)s)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "replicas")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    src = fetch_samples(["openclipart"], ROOT / ".cache" / "samples")["openclipart"]
    files = [f for f in (Path(src) / f for f in list_folder_images(str(src))) if f.stat().st_size < 2_000_000]
    gen = ClusteredVectors()
    index, _ = make_index(args.work, args.n, None, gen.sample(args.n, seed=0), files)
    queries = gen.sample(200, seed=99)
    bindir = find_bindir()
    if bindir is None:
        sys.exit("PostgreSQL server binaries not found: apt-get install postgresql")
    cluster = Cluster(bindir).start()
    try:
        runs = {"SQLite, 1 replica": run_config("sqlite-1", index, args.work, None, 1, queries, args),
                "PostgreSQL, 1 replica": run_config("pg-1", index, args.work, cluster.database(), 1, queries, args),
                "PostgreSQL, 2 replicas": run_config("pg-2", index, args.work, cluster.database(), 2, queries, args),
                "PostgreSQL, 2 replicas, one SIGKILLed": run_config("pg-2-kill", index, args.work, cluster.database(),
                                                                    2, queries, args, kill_at=args.jobs // 3)}
    finally:
        cluster.stop()
    write(runs, args)


def write(runs: dict, args) -> None:
    base = runs["SQLite, 1 replica"]["jobs_per_s"]
    rows = "\n".join(
        f"| {name} | {r['wall']:.1f} | {r['jobs_per_s']:.1f} | {r['jobs_per_s'] / base:.2f}x | {r['p50'] * 1000:.0f} | "
        f"{r['p95'] * 1000:.0f} | {r['succeeded']} | {r['lost']} | {r['duplicated']} | {r['rerun']} | {r['unacked']} |"
        for name, r in runs.items())
    body = f"""## Service replicas: {args.jobs} curation jobs from {args.clients} concurrent clients, SQLite vs PostgreSQL

Machine: {machine()}. Commit {commit()}. Command: `{command()}`.
Each job: 2 query embeddings x {args.per_query} neighbours on {args.n:,} synthetic pool vectors (rows point at real
openclipart PNGs), written by reference. Every configuration runs behind one address (a round-robin TCP proxy in
the script), `--job-workers 2` per replica, `--job-lease-seconds 5`; clients submit with `?wait=true` and poll
after, and retry a cut-off request with the same `Idempotency-Key` (as `CuratorClient` does). PostgreSQL is Debian's server as an unprivileged cluster with fsync off. The kill row SIGKILLs one of the
two replicas when job {args.jobs // 3} is submitted; requests cut off by it are retried through the proxy.

| configuration | wall s | jobs/s | vs SQLite x1 | p50 ms | p95 ms | succeeded | lost | done twice | re-run after takeover | unacknowledged |
|---|---|---|---|---|---|---|---|---|---|---|
{rows}

"lost": acknowledged (a job id came back) but not succeeded. "done twice": more jobs in the database than requests
sent (a retry made a second job), a set recorded twice, or a set folder with no row. "re-run": jobs claimed again after their replica died (their half-written set removed first).
"unacknowledged": submissions whose response never came back in 5 tries (a client cannot know their id).
What this flatters and hides: all replicas share these 2 cores with PostgreSQL, the proxy and the 20 clients, so
a second replica adds no CPU; replicas on separate machines would. Jobs are small, so the figure is mostly the
service's own overhead (HTTP, the database, the claim loop) rather than search.
"""
    record_result("replicas", body)
    print(body)


if __name__ == "__main__":
    main()
