"""One student training step on the CPU, NCHW against channels_last, alternating in one process.

A kt bench is student steps (about 3,500 of them at its defaults, per seed): their cost decides how many
seeds fit in the bench's 60 minutes. ``distill.run`` puts every student in channels_last, since oneDNN
runs depthwise convnets faster that way on CPUs too; this measures by how much, for the bench's student
(ImageNet tf_efficientnet_lite0) and ``curator distill``'s default (mobilenetv3_small_100 from scratch),
at the bench's batch and resolution.

    python benchmarks/bench_student_step.py [--batch 64] [--size 64] [--steps 12] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import command, commit, machine, update_section  # noqa: E402

STUDENTS = (("tf_efficientnet_lite0", "imagenet"), ("mobilenetv3_small_100", "scratch"))
LAYOUTS = ("contiguous", "channels_last")


def step_ms(name: str, init: str, layout: str, batch: int, size: int, steps: int) -> float:
    """Median ms of one forward, backward and AdamW step, after two warm-up steps."""
    import torch
    import torch.nn.functional as F

    from distill.models import Student

    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    student = Student(name, 15, size, init).to(memory_format=fmt)
    opt = torch.optim.AdamW(student.parameters(), 1e-3)
    views, labels = torch.rand(batch, 3, size, size), torch.randint(0, 15, (batch,))
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        loss = F.cross_entropy(student(views), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds of both layouts")
    args = ap.parse_args()
    rows = []
    for name, init in STUDENTS:
        ms = {layout: [] for layout in LAYOUTS}
        for _ in range(args.repeats):
            for layout in LAYOUTS:
                ms[layout].append(step_ms(name, init, layout, args.batch, args.size, args.steps))
        best = {layout: min(v) for layout, v in ms.items()}
        rows.append(f"| {name} ({init}) | {best['contiguous']:.0f} ({', '.join(f'{v:.0f}' for v in ms['contiguous'])}) "
                    f"| {best['channels_last']:.0f} ({', '.join(f'{v:.0f}' for v in ms['channels_last'])}) "
                    f"| {best['contiguous'] / best['channels_last']:.2f}x |")
        print(rows[-1], flush=True)
    body = f"""## Student training step on the CPU: NCHW against channels_last

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`.

One forward, backward and AdamW step at batch {args.batch}, {args.size} px, median of {args.steps} steps after two
warm-up steps; the two layouts alternate, {args.repeats} rounds each in one process. Best round first, every round
in brackets. channels_last (what `distill.run` now uses on every device) is the candidate; NCHW (what it used on
CPUs before) the baseline. Random pixels: the step's cost does not depend on them.

| student | NCHW ms | channels_last ms | speed-up |
|---|---|---|---|
{chr(10).join(rows)}
"""
    update_section("student-step", body)
    print("wrote the student-step section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
