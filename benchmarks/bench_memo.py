"""Exact duplicates without a forward pass (``index_builder.memo``): ``embed_shards`` over the first images of
the public pool, every item encoded against the memo, alternating in one process (the ratio is the figure).

    python benchmarks/bench_memo.py [--images 1000] [--repeats 1] [--encoder packaged:efficientnet-lite2]

The public pool (openclipart + Oxygen icons) repeats 18% of its files byte for byte; the first ``--images`` of it,
in plan order, hold their own share, which the section reports beside the times.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import command, commit, machine, record_result  # noqa: E402


def run(tasks, encoder, memo_items: int) -> tuple[float, int, int]:
    """(seconds, items, distinct contents) of one embed over ``tasks`` into a scratch folder."""
    import pyarrow.parquet as pq

    from index_builder.embed_images import EmbedOptions, embed_shards

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "shards").mkdir()
        t0 = time.perf_counter()
        done = list(embed_shards(tasks, encoder, out, EmbedOptions(batch_size=32, workers=1, memo_items=memo_items)))
        seconds = time.perf_counter() - t0
        hashes = [h for d in done for h in pq.read_table(out / "shards" / d.metadata_file).column("sha256").to_pylist()]
    return seconds, len(hashes), len(set(hashes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--encoder", default="packaged:efficientnet-lite2")
    args = ap.parse_args()
    from curator.encoders import create_encoder
    from curator.pool import plan_tasks
    from curator.samples import fetch_samples

    folders = [str(p) for p in fetch_samples(("openclipart", "oxygen-icons")).values()]
    tasks = plan_tasks(folders, 100)[: max(1, args.images // 100)]
    encoder = create_encoder(args.encoder)
    times: dict[str, list[float]] = {"every item encoded": [], "memo (this commit's default)": []}
    for _ in range(args.repeats):
        for name, memo in (("every item encoded", 0), ("memo (this commit's default)", 50_000)):
            seconds, items, distinct = run(tasks, encoder, memo)
            times[name].append(seconds)
            print(f"{name}: {items} items in {seconds:.1f} s", flush=True)
    base = statistics.fmean(times["every item encoded"])
    rows = "\n".join(f"| {name} | {statistics.fmean(t):.1f} ({', '.join(f'{x:.1f}' for x in t)}) | "
                     f"{items / statistics.fmean(t):.1f} | {base / statistics.fmean(t):.2f}x |" for name, t in times.items())
    body = f"""## Index build: exact duplicates without a forward pass (`bench_memo.py`)

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`

`embed_shards` with `{args.encoder}` over the first {items} images of the public pool, of which {items - distinct}
({(items - distinct) / items:.0%}) repeat an earlier file byte for byte; 1 decode worker, batch 32; alternating in one
process, so both see the same machine. The outputs are the same: a repeat takes its first copy's vector.

| arm | seconds (runs) | images/s | vs every item encoded |
|---|---|---|---|
{rows}
"""
    record_result("memo", body)
    print(body)


if __name__ == "__main__":
    main()
