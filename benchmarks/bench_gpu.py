"""The GPU paths, measured on a CUDA machine: embedding (build-index's inner loop) and distillation.

Run on the GPU machine (writes a JSON of figures), then here to write docs/benchmarks.md's section:

    python benchmarks/bench_gpu.py run --data .gpu/kt --json OUT/gpu.json [--parts embed distill]
    python benchmarks/bench_gpu.py report OUT/gpu.json
    python benchmarks/bench_gpu.py run --data .gpu/kt --json OUT/kt.json --parts kt   # the arms at GPU scale

Data: a folder packed by ``benchmarks/pack_kt.py`` (the kt bench's split and transfer sets,
re-encoded as 192 px JPEGs so they travel). Baselines are measured in the same run:

* embed: the encoder alone on ready tensors (the ceiling) vs curator's ``embed_shards`` (decode
  workers feeding the GPU; a loader per shard vs one shared across shards), fp32 vs bf16. Encoders: ``packaged:efficientnet-lite2`` (real
  ImageNet weights) and open_clip ViT-B-32 (deterministic untrained weights saved as a local
  checkpoint: the hub is unreachable there, and weights do not change the speed).
* distill: one task-oriented run per mode with the same steps, Lite2 linear teacher, student
  ``mobilenetv3_small_100`` at 64 px: online teacher fp32 (baseline), online teacher bf16 +
  channels_last, cached teacher (V views) bf16. Stage (b) images per second, and accuracy.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.encoders import create_encoder  # noqa: E402  (applies the torchvision shim)
from curator.formats import dump_doc  # noqa: E402

import torch  # noqa: E402


def _gpu() -> str:
    p = torch.cuda.get_device_properties(0)
    return (f"{p.name} ({p.total_memory / 2**30:.0f} GiB), {__import__('os').cpu_count()} CPU cores, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def _ceiling(encoder, n: int, batch: int) -> float:
    x = torch.rand(batch, 3, encoder.image_size, encoder.image_size)
    for _ in range(3):
        encoder.encode_images(x)
    torch.cuda.synchronize()
    t0, done = time.perf_counter(), 0
    while done < n:
        encoder.encode_images(x)  # copies host -> device and the vectors back, as the pipeline does
        done += batch
    torch.cuda.synchronize()
    return done / (time.perf_counter() - t0)


def bench_embed(data: Path, batch: int, workers: int, repeat: int) -> list[dict]:
    from curator.pool import plan_tasks
    from index_builder.embed_images import EmbedOptions, embed_shard, embed_shards

    tars = sorted(str(p) for p in (data / "sets").glob("*/*.tar"))
    tasks = plan_tasks(tars * repeat, shard_size=1000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "vit-b-32-untrained.pt"
        torch.save(create_encoder("open_clip:ViT-B-32/none").model.state_dict(), ckpt)
        for spec in ("packaged:efficientnet-lite2", f"open_clip:ViT-B-32//{ckpt}"):
            for precision in ("fp32", "bf16"):
                enc = create_encoder(spec, device="cuda", precision=precision)
                ceiling = _ceiling(enc, 8 * batch, batch)
                embed_shard(tasks[0], enc, Path(tmp) / "warm", EmbedOptions(batch_size=batch, workers=workers, memo_items=0))
                # a loader per shard (loader_items=1: as build-index ran before) vs one shared loader
                for loaders, items in (("one per shard", 1), ("shared", EmbedOptions.loader_items)):
                    opts = EmbedOptions(batch_size=batch, workers=workers, loader_items=items, memo_items=0)
                    t0 = time.perf_counter()
                    n = sum(d.n_items for d in embed_shards(tasks, enc, Path(tmp) / f"o-{items}", opts))
                    wall = time.perf_counter() - t0
                    rows.append({"encoder": spec.split("//")[0], "precision": precision, "loaders": loaders,
                                 "ceiling_img_s": round(ceiling), "pipeline_img_s": round(n / wall), "images": n,
                                 "batch": batch, "workers": workers})
                    print(rows[-1], flush=True)
                del enc
                torch.cuda.empty_cache()
    return rows


def bench_distill(data: Path, work: Path, steps_b: int, batch: int, workers: int, views: int,
                  only: tuple = (0, 1, 2)) -> list[dict]:
    from curator.formats import DistillConfig
    from distill import run_distill

    base = dict(labelled=str(data / "split.csv"), transfer=str(data / "sets" / "retrieved"),
                teacher="packaged:efficientnet-lite2", student="mobilenetv3_small_100", student_size=64,
                steps_a=100, steps_b=steps_b, steps_c=50, batch_size=batch, workers=workers, device="cuda",
                mix_labelled=0.25, progress=False)
    rows = []
    modes = (("online teacher, fp32", {"amp": False}), ("online teacher, bf16 + channels_last", {}),
             (f"cached teacher ({views} views), bf16", {"cache_teacher": views}))
    for name, extra in (modes[k] for k in only):
        t0 = time.perf_counter()
        r = dump_doc(run_distill(DistillConfig(out=str(work / f"run{len(rows)}"), cache_dir=str(work / "cache"),
                                      **base, **extra)))
        b = r["stages"]["b"]
        rows.append({"mode": name, "stage_b_seconds": b["seconds"], "stage_b_img_s": round(b["images"] / b["seconds"]),
                     "teacher_forward_passes": b["teacher_forward_passes"], "wall_seconds": round(time.perf_counter() - t0, 1),
                     "student_test": r["student"]["final"]["test"]["accuracy"],
                     "teacher_test": r["teacher"]["test"]["accuracy"], "steps_b": steps_b, "batch": batch})
        print(rows[-1], flush=True)
    return rows


def _kt_arm(cfg_json: str, arm: str, seed: int) -> None:
    """One trained arm of one seed, in a process of its own (runs side by side on one GPU)."""
    from curator.formats import KTConfig
    from experiments.kt import run_arm

    cfg = KTConfig.model_validate_json(cfg_json)
    run_arm(cfg, arm, seed, Path(cfg.out) / "split.csv", Path(cfg.out))


def bench_kt(data: Path, work: Path, args) -> dict:
    """The kt bench's arms on the packed sets at GPU scale (more views, longer distillation);
    resumes from ``work`` (finished runs are kept), so a cut-off call can be repeated.

    Seed 0 runs first and alone (it builds the teacher caches every seed shares); the other
    seeds' runs then go ``--kt-parallel`` at a time, each in its own (non-daemonic: its
    DataLoader starts workers) process."""
    import multiprocessing as mp
    import shutil

    from curator.formats import KTConfig
    from experiments.kt import RUNS, run_kt

    if not (work / "sets").exists():
        work.mkdir(parents=True, exist_ok=True)
        shutil.copytree(data / "sets", work / "sets")
        shutil.copytree(data / "labelled", work / "labelled")
        shutil.copy(data / "split.csv", work / "split.csv")
    cfg = KTConfig(target=str(data / "labelled"), index="(packed: sets already curated)", out=str(work),
                   device="cuda", workers=args.workers, cache_views=args.kt_views, steps_a=args.kt_steps_a,
                   steps_b=args.kt_steps_b, steps_c=args.kt_steps_c, batch_size=args.kt_batch,
                   seeds=1, progress=False)
    run_kt(cfg)
    ctx, cfg_json = mp.get_context("spawn"), cfg.model_dump_json()
    jobs = [(arm, seed) for seed in range(1, args.kt_seeds) for arm in RUNS]
    width = max(1, args.kt_parallel)
    for i in range(0, len(jobs), width):
        procs = [ctx.Process(target=_kt_arm, args=(cfg_json, arm, seed)) for arm, seed in jobs[i:i + width]]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        if any(proc.exitcode for proc in procs):
            raise SystemExit(f"a kt run failed (exit codes {[proc.exitcode for proc in procs]})")
    return run_kt(cfg.model_copy(update={"seeds": args.kt_seeds}), command=f"python {' '.join(sys.argv)}")


def report_kt(doc: dict, commit: str) -> None:
    """docs/benchmarks.md's gpu-kt section from a ``--parts kt`` JSON."""
    from report import record_result

    from curator.formats import KtResults
    from experiments.kt_report import markdown

    c = doc["kt"]["config"]
    body = (f"## Knowledge transfer at GPU scale on {doc['device'].split(' (')[0]} (`bench_gpu.py --parts kt`)\n\n"
            f"Machine: {doc['device']}. Commit {doc.get('commit') or commit}.\nCommand: `{doc['command']}`\n\n"
            + "Versus the CPU bench: {v} cached views per transfer image (CPU: 2), steps a/b/c {a}/{b}/{c} "
            "(CPU: 300/500/200), batch {bs} (CPU: 64); same packed split and transfer sets, same student.\n\n".format(
                v=c["cache_views"], a=c["steps_a"], b=c["steps_b"], c=c["steps_c"], bs=c["batch_size"])
            + markdown(KtResults.model_validate(doc["kt"])))
    record_result("gpu-kt", body)
    print(body)


def report(doc: dict, commit: str, section: str = "gpu") -> None:
    from report import record_result

    title = "GPU paths: embedding and distillation" if doc.get("distill") else "GPU embedding, re-measured"
    lines = [f"## {title} on {doc['device'].split(' (')[0]}", "",
             f"Machine: {doc['device']}. Commit {doc.get('commit') or commit}.", f"Command: `{doc['command']}`", ""]
    if doc.get("embed"):
        lines += [f"Embedding: the packed kt transfer sets, {doc['embed'][0]['images']} images (192 px JPEGs in "
                  "4 tar shards of ~1,000) through `embed_shards`, with a DataLoader per shard or one shared "
                  "across shards. Ceiling = the encoder alone on ready tensors, host-to-device copy included.", "",
                  "| encoder | precision | batch | decode workers | loaders | ceiling img/s | curator img/s "
                  "| pipeline / ceiling |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['encoder']} | {r['precision']} | {r['batch']} | {r['workers']} "
                  f"| {r.get('loaders', 'one per shard')} | {r['ceiling_img_s']} "
                  f"| {r['pipeline_img_s']} | {r['pipeline_img_s'] / r['ceiling_img_s']:.2f} |" for r in doc["embed"]]
        lines.append("")
    if doc.get("distill"):
        d = doc["distill"]
        base = d[0]["stage_b_img_s"]
        lines += [f"Distillation: task-oriented, `packaged:efficientnet-lite2` linear teacher (260 px), student "
                  f"`mobilenetv3_small_100` at 64 px, stage (b) {d[0]['steps_b']} steps of batch {d[0]['batch']} "
                  "(+25% labelled images mixed in), seed 0; baseline = online teacher in fp32.", "",
                  "| mode | decode workers | stage (b) img/s | vs baseline | teacher passes in (b) | run wall s "
                  "| teacher test acc | student test acc |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['mode']} | {r.get('workers', '')} | {r['stage_b_img_s']} | {r['stage_b_img_s'] / base:.1f}x | "
                  f"{r['teacher_forward_passes']} | {r['wall_seconds']} | {r['teacher_test']:.3f} "
                  f"| {r['student_test']:.3f} |" for r in d]
    if doc.get("notes"):
        lines += ["", doc["notes"]]
    record_result(section, "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--json", type=Path, required=True)
    r.add_argument("--parts", nargs="+", default=["embed", "distill"])
    r.add_argument("--batch", type=int, default=256)
    r.add_argument("--workers", type=int, default=12)
    r.add_argument("--repeat", type=int, default=3, help="passes over the shards per embedding row")
    r.add_argument("--steps-b", type=int, default=300)
    r.add_argument("--views", type=int, default=8)
    r.add_argument("--modes", type=int, nargs="+", default=[0, 1, 2], help="distill modes to run (0 1 2)")
    r.add_argument("--kt-work", type=Path, default=Path("/tmp/kt-gpu"))
    r.add_argument("--kt-views", type=int, default=16)
    r.add_argument("--kt-steps-a", type=int, default=300)
    r.add_argument("--kt-steps-b", type=int, default=2000)
    r.add_argument("--kt-steps-c", type=int, default=200)
    r.add_argument("--kt-batch", type=int, default=128)
    r.add_argument("--kt-seeds", type=int, default=3)
    r.add_argument("--kt-parallel", type=int, default=4, help="runs (arm, seed) after seed 0 trained side by side")
    w = sub.add_parser("report")
    w.add_argument("json", type=Path)
    w.add_argument("--commit", default="", help="the commit the figures were taken at (when the JSON lacks it)")
    w.add_argument("--section", default="gpu", help="bench record to write (a re-measurement: its own)")
    args = ap.parse_args()
    if args.cmd == "report":
        doc = json.loads(args.json.read_text())
        if "kt" in doc:
            return report_kt(doc, args.commit)
        return report(doc, args.commit, args.section)
    from report import command, commit

    doc = {"device": _gpu(), "commit": commit(), "command": command()}
    with tempfile.TemporaryDirectory() as work:
        if "embed" in args.parts:
            doc["embed"] = bench_embed(args.data, args.batch, args.workers, args.repeat)
        if "distill" in args.parts:
            doc["distill"] = bench_distill(args.data, Path(work), args.steps_b, args.batch, args.workers, args.views,
                                           tuple(args.modes))
        if "kt" in args.parts:
            doc["kt"] = dump_doc(bench_kt(args.data, args.kt_work, args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
