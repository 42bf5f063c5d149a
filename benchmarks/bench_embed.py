"""Embedding throughput: curator's pipeline vs the model alone, a naive loop, and clip-retrieval.

Same 500 openclipart PNGs (seed 0), same model (open_clip ViT-B-32, deterministic untrained
weights saved as a local checkpoint, since hub weights are unreachable here), batch 64, one run:

* ceiling      model forward on ready tensors (no decoding at all)
* naive        Image.open -> open_clip preprocess -> encode_image, one image at a time
* curator      embed_shard (DataLoader workers decode while the model runs), model loaded
* curator CLI  `curator build-index` end to end: start-up, model load, embedding, index
* clip-retrieval 2.45.0 `inference` (its own venv; its stats give the steady loop rate)

    python benchmarks/bench_embed.py [--images 500] [--workers 1 2] [--peers bench-out]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.encoders import create_encoder  # noqa: E402  (applies the torchvision shim)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from curator.formats import ShardTask  # noqa: E402
from curator.pool import list_folder_images  # noqa: E402
from curator.samples import fetch_samples  # noqa: E402
from index_builder.embed_images import EmbedOptions, embed_shard  # noqa: E402
from report import command, commit, machine, record_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "ViT-B-32"


def make_pool(n: int, work: Path) -> Path:
    pool = work / f"openclipart-{n}"
    if pool.exists() and len(list(pool.iterdir())) == n:
        return pool
    shutil.rmtree(pool, ignore_errors=True)
    pool.mkdir(parents=True)
    src = fetch_samples(["openclipart"], ROOT / ".cache" / "samples")["openclipart"]
    files = list_folder_images(str(src))
    for i, rel in enumerate(sorted(random.Random(0).sample(files, n))):
        shutil.copy(src / rel, pool / f"{i:04d}-{Path(rel).name}")
    return pool


def make_checkpoint(work: Path) -> Path:
    path = work / "vit-b-32-untrained.pt"
    if not path.exists():
        enc = create_encoder(f"open_clip:{MODEL}/none")
        torch.save(enc.model.state_dict(), path)
    return path


def ceiling(encoder, n: int, batch: int) -> float:
    x = torch.rand(batch, 3, 224, 224)
    encoder.encode_images(x)  # warm-up
    t0, done = time.perf_counter(), 0
    while done < n:
        m = min(batch, n - done)
        encoder.encode_images(x[:m])
        done += m
    return n / (time.perf_counter() - t0)


def naive(encoder, files: list[Path]) -> float:
    t0 = time.perf_counter()
    for path in files:
        encoder.encode_images(encoder.preprocess(Image.open(path))[None])
    return len(files) / (time.perf_counter() - t0)


def curator_steady(encoder, pool: Path, files: list[str], batch: int, workers: int) -> tuple[float, int]:
    task = ShardTask(shard_id="00000", kind="folder", source=str(pool), files=files)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        done = embed_shard(task, encoder, Path(out), EmbedOptions(batch_size=batch, workers=workers, memo_items=0))
        return len(files) / (time.perf_counter() - t0), done.n_skipped


def curator_cli(spec: str, pool: Path, batch: int, workers: int, precision: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "curator.cli", "build-index", "--input", str(pool), "--out", out,
                        "--encoder", spec, "--batch-size", str(batch), "--workers", str(workers),
                        "--precision", precision, "-q"], check=True, cwd=ROOT, capture_output=True)
        return len(list(pool.iterdir())) / (time.perf_counter() - t0)


def clip_retrieval(peers: Path, ckpt: Path, pool: Path, batch: int, workers: int, timeout: float) -> dict | None:
    """Run clip-retrieval inference; a run that stops making progress is killed and reported."""
    exe = peers / "venv-clip-retrieval" / "bin" / "clip-retrieval"
    if not exe.exists():
        print(f"clip-retrieval venv missing ({exe}); run benchmarks/setup_peers.sh", file=sys.stderr)
        return None
    n = len(list(pool.iterdir()))
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(exe), "inference", "--input_dataset", str(pool), "--output_folder", out,
                                 "--clip_model", f"open_clip:{MODEL}/{ckpt}", "--batch_size", str(batch),
                                 "--num_prepro_workers", str(workers), "--enable_text", "False",
                                 "--enable_metadata", "False", "--input_format", "files"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled"))
        try:
            proc.wait(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            hung = True
        wall = time.perf_counter() - t0
        stats = [json.loads(p.read_text()) for p in Path(out, "stats").glob("*.json")]
        samples = sum(s["sample_count"] for s in stats)
        loop = sum(s["total_duration"] for s in stats)
    return {"steady": samples / loop if loop else 0.0, "wall": 0.0 if hung else n / wall, "samples": samples,
            "hung": hung, "n": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2, help="alternating repeats of ceiling and pipeline")
    ap.add_argument("--peers", type=Path, default=Path("bench-out"))
    ap.add_argument("--work", type=Path, default=Path("bench-out/embed"))
    ap.add_argument("--no-clip-retrieval", action="store_true")
    ap.add_argument("--peer-timeout", type=float, default=300, help="seconds before a stalled peer run is killed")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    pool, ckpt = make_pool(args.images, args.work), make_checkpoint(args.work)
    spec = f"open_clip:{MODEL}/{ckpt.resolve()}"
    files = sorted(os.listdir(pool))
    enc = create_encoder(spec)
    rows: dict[str, float] = {}
    skipped = 0
    for precision in ("fp32", "bf16"):
        enc.precision = precision
        ceil, steady = [], {w: [] for w in args.workers}
        for _ in range(args.repeats):  # alternate the arms: this machine's speed drifts by 10-15%
            ceil.append(ceiling(enc, args.images, args.batch_size))
            for w in args.workers:
                rate, skipped = curator_steady(enc, pool, files, args.batch_size, w)
                steady[w].append(rate)
        rows[f"ceiling: model forward only, {precision}"] = sum(ceil) / len(ceil)
        for w in args.workers:
            rows[f"curator embed_shard, {precision}, {w} workers"] = sum(steady[w]) / len(steady[w])
        print(rows, flush=True)
    enc.precision = "fp32"
    rows["naive loop, fp32"] = naive(enc, [pool / f for f in files])
    best_w = max(args.workers, key=lambda w: rows[f"curator embed_shard, fp32, {w} workers"])
    for precision in ("fp32", "bf16"):
        rows[f"curator build-index CLI wall clock, {precision}, {best_w} workers"] = curator_cli(
            spec, pool, args.batch_size, best_w, precision)
    print(rows, flush=True)
    notes = []
    if not args.no_clip_retrieval:
        cr = clip_retrieval(args.peers, ckpt, pool, args.batch_size, 2, args.peer_timeout)
        if cr and cr["hung"]:
            notes.append(f"clip-retrieval on all {cr['n']} images stopped making progress after {cr['samples']} "
                         f"images and was killed after {args.peer_timeout:.0f} s (it decodes the >40 MP PNGs in "
                         f"full); its rows below come from a rerun on the {cr['n'] - skipped} images curator keeps, "
                         f"while curator's rows include the skipped ones.")
            clean = args.work / f"{pool.name}-under-cap"
            if not clean.exists():
                clean.mkdir()
                for f in files:
                    if Image.open(pool / f).size[0] * Image.open(pool / f).size[1] <= 40_000_000:
                        shutil.copy(pool / f, clean / f)
            cr = clip_retrieval(args.peers, ckpt, clean, args.batch_size, 2, args.peer_timeout)
        if cr and not cr["hung"]:
            rows["clip-retrieval 2.45.0 inference, its loop (stats)"] = cr["steady"]
            rows["clip-retrieval 2.45.0 inference, wall clock"] = cr["wall"]
    write(rows, args, skipped, best_w, notes)


def write(rows: dict[str, float], args, skipped: int, best_w: int, notes: list[str]) -> None:
    ceil32, ceil16 = rows["ceiling: model forward only, fp32"], rows["ceiling: model forward only, bf16"]
    naive_rate = rows["naive loop, fp32"]
    cr = rows.get("clip-retrieval 2.45.0 inference, its loop (stats)")
    crw = rows.get("clip-retrieval 2.45.0 inference, wall clock")
    lines = ["| arm | img/s | vs fp32 ceiling | vs naive | vs clip-retrieval (steady / wall) |", "|---|---|---|---|---|"]
    for name, rate in rows.items():
        ref = crw if "wall" in name else cr
        vs_cr = f"{rate / ref:.2f}x" if ref else "-"
        lines.append(f"| {name} | {rate:.2f} | {rate / ceil32:.0%} | {rate / naive_rate:.2f}x | {vs_cr} |")
    steady32 = rows[f"curator embed_shard, fp32, {best_w} workers"]
    steady16 = rows[f"curator embed_shard, bf16, {best_w} workers"]
    body = f"""## Embedding throughput: {args.images} openclipart PNGs, open_clip ViT-B-32, batch {args.batch_size}

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`

Ceiling and pipeline rates are means of {args.repeats} alternating repeats. All arms in one run on the same images and weights (an untrained ViT-B-32 saved as a local
checkpoint; hub weights are unreachable here, and throughput does not depend on the values).
{skipped} image(s) above the 40 MP `--max-pixels` cap were skipped by curator (counted in its rate).

{chr(10).join(lines)}

{" ".join(notes)}

Steady-state pipeline vs its own ceiling: fp32 {steady32 / ceil32:.0%}, bf16 {steady16 / ceil16:.0%}
(bf16 autocast on this CPU's AVX512-BF16: ceiling {ceil16 / ceil32:.2f}x fp32).
"""
    record_result("embed", body)
    print(body)


if __name__ == "__main__":
    main()
