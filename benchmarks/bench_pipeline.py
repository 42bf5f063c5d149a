"""The sample pipeline refactor, measured: ``embed_shards`` at this commit against a baseline commit,
same images, same encoder, alternating runs in one session (these machines are noisy: the ratio is
the figure, not the absolute rate).

    python benchmarks/bench_pipeline.py --baseline 729dbd7 [--images DIR] [--repeats 2]

Each run is a fresh process with the commit's code first on ``sys.path`` (a git worktree for the
baseline), so both embed exactly the same files with exactly the same model and settings.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import command, commit, machine, record_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import json, sys, tempfile, time
from pathlib import Path
from curator.encoders import create_encoder
from curator.pool import plan_tasks
from index_builder.embed_images import EmbedOptions, embed_shards
enc = create_encoder({spec!r}, device={device!r})
tasks = plan_tasks([{images!r}], 100)
out = Path(tempfile.mkdtemp())
(out / "shards").mkdir()
t0 = time.perf_counter()
opts = EmbedOptions(batch_size={batch}, workers={workers})
opts.memo_items = 0  # every item encoded (a baseline before the memo simply ignores it)
n = sum(d.n_items + d.n_skipped for d in embed_shards(tasks, enc, out, opts))
print(json.dumps({{"images": n, "seconds": time.perf_counter() - t0}}))
"""


def one(code_root: Path, images: str, args) -> dict:
    code = RUN.format(spec=args.encoder, images=images, workers=args.workers, device=args.device, batch=args.batch_size)
    done = subprocess.run([sys.executable, "-c", code],
                          cwd=code_root, env=dict(os.environ, PYTHONPATH=str(code_root), HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", help="git revision to compare against (checked out as a worktree)")
    ap.add_argument("--baseline-dir", type=Path, help="or: a folder holding the baseline's curator/ and index_builder/")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--section", default="pipeline-refactor", help="bench record to write")
    ap.add_argument("--body-out", type=Path, help="write the section's text here instead of docs/benchmarks.md "
                                                  "(on a machine whose results come back as files)")
    ap.add_argument("--images", default=None, help="image folder (default: the Tux Paint samples)")
    ap.add_argument("--encoder", default="packaged:efficientnet-lite0")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    images = args.images
    if images is None:
        from curator.samples import fetch_samples
        images = str(fetch_samples(["tuxpaint"])["tuxpaint"])
    images = str(Path(images).resolve())  # each run works in its own code folder
    if args.baseline_dir:
        base = args.baseline_dir.resolve()
    else:
        base = Path(tempfile.mkdtemp()) / "baseline"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(base), args.baseline], cwd=ROOT, check=True)
    rates: dict[str, list[float]] = {"baseline": [], "this commit": []}
    try:
        for _ in range(args.repeats):
            for name, root in (("baseline", base), ("this commit", ROOT)):
                r = one(root, images, args)
                rates[name].append(r["images"] / r["seconds"])
                print(name, r, flush=True)
    finally:
        if not args.baseline_dir:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    med = {k: statistics.median(v) for k, v in rates.items()}
    baseline = args.baseline or args.baseline_dir.name
    where = "a GPU" if args.device.startswith("cuda") else "the CPU"
    body = f"""## Sample pipeline refactor on {where}: `embed_shards` before and after (`bench_pipeline.py`)

Machine: {machine()}{device_name(args.device)}. Commit {commit()} against baseline {baseline}.
Command: `{command()}`

The embedding loop now reads, hashes and decodes through `curator.pipeline.ImagePipeline` (one error
policy shared with the distill datasets and view caches). Same {r['images']} images, `{args.encoder}`,
batch {args.batch_size}, {args.workers} decode worker(s), on {args.device}, {args.repeats} alternating runs each:

| code | img/s (median) | runs |
|---|---|---|
| baseline {baseline} | {med['baseline']:.1f} | {', '.join(f'{x:.1f}' for x in rates['baseline'])} |
| this commit | {med['this commit']:.1f} | {', '.join(f'{x:.1f}' for x in rates['this commit'])} |

Ratio (this commit / baseline): **{med['this commit'] / med['baseline']:.2f}x**.
"""
    if args.body_out:
        args.body_out.write_text(body)
    else:
        record_result(args.section, body)
    print(body)


def device_name(device: str) -> str:
    if not device.startswith("cuda"):
        return ""
    import torch
    return f", {torch.cuda.get_device_name(0)}"


if __name__ == "__main__":
    main()
