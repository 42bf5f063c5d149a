"""Teacher-output caching: online teacher vs cached views, and the supervised baseline, one run.

Target task: the Tux Paint categories with >= 20 stamps, 5 labels per class (seeded); transfer set:
10 pool images per labelled image from the demo's index (val and test excluded); teacher
packaged:efficientnet-lite0 (linear), student mobilenetv3_small_100 at 64 px, same steps for all.

    python benchmarks/bench_distill.py [--steps-b 200] [--views 4] [--seed 0]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.formats import DistillConfig, dump_doc  # noqa: E402
from distill import run_distill  # noqa: E402  # noqa: E402
from distill.data import load_labelled  # noqa: E402
from curator.curate import curate  # noqa: E402
from curator.formats import CurateParams  # noqa: E402
from curator.queries import Query  # noqa: E402
from curator.retrieval import PoolIndex  # noqa: E402
from report import command, commit, machine, record_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps-b", type=int, default=200)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("bench-out/distill"))
    args = ap.parse_args()
    demo = ROOT / ".cache" / "demo"
    if not (demo / "index" / "index.json").exists():
        sys.exit("run `make demo` first: this benchmark reuses its index and sample images")
    shutil.rmtree(args.work, ignore_errors=True)
    labelled = args.work / "labelled"
    labelled.mkdir(parents=True)
    pool = demo / "samples" / "tuxpaint"
    for cat in sorted(p for p in pool.iterdir() if p.is_dir() and len(list(p.glob("*.png"))) >= 20):
        (labelled / cat.name).symlink_to(cat.resolve(), target_is_directory=True)
    data = load_labelled(labelled, labels_per_class=5, val_per_class=2, seed=args.seed)
    q = lambda split: [Query(p, open(p, "rb").read(), data.classes[y]) for p, y in data.splits[split]]
    m = dump_doc(curate(PoolIndex.open(demo / "index"), q("train"), CurateParams(per_query=10), args.work / "sets",
                        exclude=q("val") + q("test"), set_id="t"))
    base = dict(labelled=str(labelled), labels_per_class=5, val_per_class=2, transfer=str(args.work / "sets" / "t"),
                teacher="packaged:efficientnet-lite0", student="mobilenetv3_small_100", student_size=64,
                steps_a=60, steps_b=args.steps_b, steps_c=60, seed=args.seed, progress=False)
    rows = []
    for name, extra in [("supervised", {"method": "supervised"}), ("task-oriented, online teacher", {}),
                        (f"task-oriented, cached teacher ({args.views} views)", {"cache_teacher": args.views})]:
        t0 = time.perf_counter()
        r = dump_doc(run_distill(DistillConfig(out=str(args.work / f"{name.split(',')[0].replace(' ', '-')}-{len(rows)}"),
                                      **base, **extra)))
        b = r["stages"].get("b", {})
        rows.append((name, r["student"]["final"]["test"], b.get("seconds"), b.get("teacher_forward_passes"),
                     time.perf_counter() - t0, (r.get("teacher") or {}).get("test")))
        print(rows[-1], flush=True)
    lines = ["| arm | student test acc | mean per-class | stage (b) s | teacher passes in (b) | run s |",
             "|---|---|---|---|---|---|"]
    for name, test, b_s, passes, wall, _ in rows:
        lines.append(f"| {name} | {test['accuracy']:.3f} | {test['mean_per_class_accuracy']:.3f} | "
                     f"{b_s if b_s is not None else '-'} | {passes if passes is not None else '-'} | {wall:.0f} |")
    teacher = rows[1][5]
    body = f"""## Distillation: teacher-output caching vs the online teacher ({len(data.classes)} Tux Paint classes, 5 labels each)

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`

One seed ({args.seed}); {m['counts']['emitted']} transfer images (10 per labelled image, val/test excluded);
teacher `packaged:efficientnet-lite0` (linear head; test accuracy {teacher['accuracy']:.3f}), student
`mobilenetv3_small_100` at 64 px from scratch, steps a/b/c = 60/{args.steps_b}/60, batch 32, {len(data.splits['test'])} test images.

{chr(10).join(lines)}

Stage (b) speed-up from caching: {rows[1][2] / rows[2][2]:.1f}x. With one seed and a pool of a few
hundred images this is a plumbing-scale check, not the paper's comparison (issue 5 runs that).
"""
    record_result("distill", body)
    print(body)


if __name__ == "__main__":
    main()
