"""glibc's malloc keeping freed memory (``curator.allocator``), bounded and unbounded, against glibc's
defaults, on the index build's embedding of the public pool: each arm in its own process (malloc's settings are per process), alternating.

    python benchmarks/bench_malloc.py [--images 2000] [--repeats 2] [--encoder packaged:efficientnet-lite2]

Each process times ``embed_shards`` over the first ``--images`` of the pool (memo off, so every image is a
forward pass; build-index's default decode workers and batch) and the encoder's forward-only rate on a
batch of 64, and reports the CPU time its kernel side took.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import command, commit, machine, record_result  # noqa: E402

#: arm -> (CURATOR_MALLOC_TUNING, whether the free heap is bounded after each batch). The unbounded arm is
#: commit 4b502fa's policy, kept here to show what the bound costs and saves.
ARMS = {"glibc defaults (CURATOR_MALLOC_TUNING=0)": ("0", True),
        "freed memory kept, unbounded (4b502fa)": ("1", False),
        "freed memory kept, free heap bounded at 1 GiB (this commit's default)": ("1", True)}


def child(images: int, encoder_spec: str, bounded: bool) -> dict:
    """One arm's figures, in this process."""
    import resource

    import torch

    import curator.encoders.base
    from curator.encoders import create_encoder
    from curator.pool import plan_tasks
    from curator.samples import fetch_samples
    from index_builder.embed_images import EmbedOptions, embed_shards

    if not bounded:
        curator.encoders.base.bound_freed_memory = lambda: False
    folders = [str(p) for p in fetch_samples(("openclipart", "oxygen-icons")).values()]
    tasks = plan_tasks(folders, 100)[: max(1, images // 100)]
    encoder = create_encoder(encoder_spec)
    batch = torch.rand(64, 3, encoder.image_size, encoder.image_size)
    encoder.encode_images(batch)
    t0 = time.perf_counter()
    for _ in range(3):
        encoder.encode_images(batch)
    forward = 3 * 64 / (time.perf_counter() - t0)
    cpu0 = os.times()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "shards").mkdir()
        t0 = time.perf_counter()
        done = list(embed_shards(tasks, encoder, Path(tmp), EmbedOptions(memo_items=0)))
        seconds = time.perf_counter() - t0
    cpu1 = os.times()
    items = sum(d.n_items for d in done)
    return {"embed_img_s": items / seconds, "forward_img_s": forward, "items": items,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "sys_share": (cpu1.system - cpu0.system) / max(1e-9, (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--encoder", default="packaged:efficientnet-lite2")
    ap.add_argument("--child", choices=("bounded", "unbounded"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.images, args.encoder, args.child == "bounded")))
        return
    runs: dict[str, list[dict]] = {name: [] for name in ARMS}
    for _ in range(args.repeats):
        for name, (flag, bounded) in ARMS.items():
            env = {**os.environ, "CURATOR_MALLOC_TUNING": flag}
            out = subprocess.run([sys.executable, __file__, "--child", "bounded" if bounded else "unbounded", "--images", str(args.images), "--encoder",
                                  args.encoder], env=env, check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    base = {k: statistics.fmean(r[k] for r in runs[next(iter(ARMS))]) for k in ("embed_img_s", "forward_img_s")}

    def row(name: str) -> str:
        rs = runs[name]
        embed, fwd = (statistics.fmean(r[k] for r in rs) for k in ("embed_img_s", "forward_img_s"))
        each = ", ".join(f"{r['embed_img_s']:.1f}" for r in rs)
        return (f"| {name} | {embed:.1f} ({each}) | "
                f"{embed / base['embed_img_s']:.2f}x | {fwd:.1f} | {fwd / base['forward_img_s']:.2f}x | "
                f"{statistics.fmean(r['sys_share'] for r in rs):.0%} | {max(r['peak_rss_mb'] for r in rs):,.0f} |")
    body = f"""## CPU inference: glibc's malloc keeping freed memory (`bench_malloc.py`)

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`

`embed_shards` with `{args.encoder}` over the first {runs[next(iter(ARMS))][0]['items']} images of the public pool
(every image a forward pass: memo off; build-index's default 2 decode workers, batch 64), and the encoder alone on
a batch of 64; each arm in its own process, alternating, {args.repeats} repeats. *kernel share*: the CPU time the
embedding process spent in the kernel (page faults of activations mapped afresh every batch). *peak RSS*: the
embedding process's, at most over the repeats (the unbounded heap grows with the images embedded: it failed the
default `bench kt`'s index build, 9.5 GB private over 10,165 images, against `--max-build-memory` 8G).

| arm | embed img/s (runs) | vs defaults | forward-only img/s | vs defaults | kernel share | peak RSS MB |
|---|---|---|---|---|---|---|
{chr(10).join(row(name) for name in ARMS)}
"""
    record_result("malloc", body)
    print(body)


if __name__ == "__main__":
    main()
