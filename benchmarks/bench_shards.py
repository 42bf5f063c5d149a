"""Embedding many small shards: a DataLoader per shard vs one shared across consecutive shards.

build-index embeds a pool shard by shard (each shard is a resumable work unit). Starting a
loader per shard pays its workers' start-up and the first batch's latency once per shard; on an
H100 that kept the encoder at 10-16% of its ceiling on 1,000-image shards. ``embed_shards`` now
reads consecutive shards through one loader. Both modes run here side by side, alternately, on
the same images, encoder and options (best of ``--repeat``):

    python benchmarks/bench_shards.py [--images 600] [--shard-sizes 50 200] [--repeat 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_embed import make_pool  # noqa: E402  (applies the torchvision shim)
from curator.encoders import create_encoder  # noqa: E402
from curator.pool import plan_tasks  # noqa: E402
from curator.formats import default_workers  # noqa: E402
from index_builder.embed_images import EmbedOptions, embed_shards  # noqa: E402
from report import command, commit, machine, record_result  # noqa: E402

ENCODER = "packaged:efficientnet-lite0"
MODES = {"a loader per shard": 1, "one shared loader": EmbedOptions.loader_items}


def throughput(tasks, encoder, opts: EmbedOptions) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        n = sum(d.n_items + d.n_skipped for d in embed_shards(tasks, encoder, Path(out), opts))
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--shard-sizes", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    pool = make_pool(args.images, Path("bench-out/embed"))
    encoder = create_encoder(ENCODER)
    rows = []
    for size in args.shard_sizes:
        tasks = plan_tasks([str(pool)], size)
        best = {mode: 0.0 for mode in MODES}
        for _ in range(args.repeat):
            for mode, items in MODES.items():
                opts = EmbedOptions(batch_size=args.batch, workers=args.workers, loader_items=items, memo_items=0)
                best[mode] = max(best[mode], throughput(tasks, encoder, opts))
        rows.append((size, len(tasks), best))
        print(size, len(tasks), best, flush=True)
    lines = [f"| {size} | {n} | {b['a loader per shard']:.1f} | {b['one shared loader']:.1f} "
             f"| {b['one shared loader'] / b['a loader per shard']:.2f}x |" for size, n, b in rows]
    body = f"""## Embedding many small shards: a loader per shard vs one shared loader

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`

{args.images} openclipart PNGs, `{ENCODER}` (real ImageNet weights) on the CPU, batch {args.batch},
{args.workers} decode worker(s); best of {args.repeat}, the two modes alternating. Baseline: a
DataLoader per shard, as build-index ran before; now consecutive shards share one.

| shard size | shards | a loader per shard img/s | one shared loader img/s | speed-up |
|---|---|---|---|---|
""" + "\n".join(lines) + "\n"
    record_result("embed-shards", body)
    print("wrote the embed-shards record (docs/benchmarks.md)")


if __name__ == "__main__":
    main()
