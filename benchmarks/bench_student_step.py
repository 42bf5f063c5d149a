"""One student training step on the CPU, arm by arm as `distill.run` came to train it, alternating in one process.

A kt bench is student steps (about 3,500 of them at its defaults, per seed): their cost decides how many
seeds fit in the bench's 60 minutes. The arms add one change each:

- ``nchw``: timm's model as built (NCHW, in-place activations);
- ``channels_last``: oneDNN runs depthwise convnets faster that way on CPUs too;
- ``out_of_place``: ReLU6 / hard-swish out of place (``distill.models.out_of_place_activations``: in place,
  autograd clones their input);
- ``routed``: under ``distill.depthwise.small_map_depthwise``, which takes depthwise weight gradients on maps
  no larger than their kernel and timm's "same" pads of channels_last batches. This is what ``distill.run``
  does on CPUs.

Each is measured for the bench's student (ImageNet tf_efficientnet_lite0) and ``curator distill``'s default
(mobilenetv3_small_100 from scratch), at the bench's batch and resolution, on 1 torch thread (a kt bench's
run slot) and on 2.

    python benchmarks/bench_student_step.py [--batch 64] [--size 64] [--steps 12] [--repeats 3] [--threads 1 2]
                                            [--section student-step]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import command, commit, machine, record_result  # noqa: E402

STUDENTS = (("tf_efficientnet_lite0", "imagenet"), ("mobilenetv3_small_100", "scratch"))
ARMS = ("nchw", "channels_last", "out_of_place", "routed")  # the last: what distill.run does on a CPU


def step_ms(name: str, init: str, arm: str, batch: int, size: int, steps: int) -> float:
    """Median ms of one forward, backward and AdamW step, after two warm-up steps."""
    import torch
    import torch.nn.functional as F

    from distill.depthwise import small_map_depthwise
    from distill.models import CLONED_IN_PLACE, Student

    torch.manual_seed(0)
    fmt = torch.contiguous_format if arm == "nchw" else torch.channels_last
    mode = small_map_depthwise if arm == "routed" else nullcontext
    student = Student(name, 15, size, init).to(memory_format=fmt)
    for layer in student.modules():  # the first two arms: the activations as timm builds them
        if isinstance(layer, CLONED_IN_PLACE) and arm in ("nchw", "channels_last"):
            layer.inplace = True
    opt = torch.optim.AdamW(student.parameters(), 1e-3)
    views, labels = torch.rand(batch, 3, size, size).to(memory_format=fmt), torch.randint(0, 15, (batch,))
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        with mode():
            loss = F.cross_entropy(student(views), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[2:])


def row(name: str, init: str, threads: int, ms: dict[str, list[float]]) -> str:
    best = {arm: min(v) for arm, v in ms.items()}
    cells = " | ".join(f"{best[arm]:.0f} ({', '.join(f'{v:.0f}' for v in ms[arm])})" for arm in ARMS)
    ratios = " | ".join(f"{best[a] / best[b]:.2f}x" for a, b in zip(ARMS, ARMS[1:]))
    return f"| {name} ({init}) | {threads} | {cells} | {ratios} | {best['nchw'] / best['routed']:.2f}x |"


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds of the arms")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts, each measured")
    ap.add_argument("--section", default="student-step",
                    help="bench record: another CPU's figures beside the first's (default: %(default)s)")
    args = ap.parse_args()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, init in STUDENTS:
            ms: dict[str, list[float]] = {arm: [] for arm in ARMS}
            for _ in range(args.repeats):
                for arm in ARMS:
                    ms[arm].append(step_ms(name, init, arm, args.batch, args.size, args.steps))
            rows.append(row(name, init, threads, ms))
            print(rows[-1], flush=True)
    body = f"""## Student training step on the CPU: NCHW, channels_last, out-of-place activations, routed

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`.

One forward, backward and AdamW step at batch {args.batch}, {args.size} px, median of {args.steps} steps after two
warm-up steps; the arms alternate, {args.repeats} rounds each in one process. Best round first, every round in
brackets. Each arm adds one change to the one before (the script's docstring): NCHW is timm's model as built,
*routed* is what `distill.run` does on CPUs now. Random pixels: the step's cost does not depend on them.

| student | threads | NCHW ms | channels_last ms | out-of-place ms | routed ms | channels_last vs NCHW | out-of-place vs channels_last | routed vs out-of-place | routed vs NCHW |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    record_result(args.section, body)
    print(f"wrote the {args.section} record (docs/benchmarks.md)")


if __name__ == "__main__":
    main()
