"""Write one benchmark's section of BENCHMARKS.md, leaving the other sections alone."""
from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEvery figure here was measured by a script in `benchmarks/`, which rewrites its own section.\n"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    # the vector ISA ATen's and oneDNN's CPU kernels dispatch to: "AMD EPYC" machines here differ in it
    # (AVX2 or AVX512), and a student's CPU training step with it (1.7-1.9x at 2 threads between two of them,
    # BENCHMARKS.md's student-step notes)
    isa = torch.backends.cpu.get_cpu_capability()
    return (f"{os.cpu_count()} cores ({cpu}, {isa}), {platform.system()} {platform.machine()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads")


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


#: What benches write themselves (sections, kept charts, curve records): not a change to the code measured.
#: A bench copies its chart and record before it writes its section, so counting them flagged every run.
BENCH_OUTPUTS = (":!BENCHMARKS.md", ":!benchmarks/charts", ":!benchmarks/results")


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip() or "uncommitted"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *BENCH_OUTPUTS],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return f"{head} (with uncommitted changes)" if dirty else head
    except OSError:
        return "unknown"


def keep_chart(chart: Path, name: str) -> str:
    """Copy a chart from an (ignored) bench folder into the tracked benchmarks/charts/, so that BENCHMARKS.md
    shows it; returns the path to link from there."""
    kept = ROOT / "benchmarks" / "charts" / name
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chart, kept)
    return str(kept.relative_to(ROOT))


def update_section(name: str, body: str) -> None:
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)


@contextlib.contextmanager
def checkout(rev: str, folder: Path):
    """An earlier commit's tree in ``folder`` (a git worktree), removed afterwards: a baseline measured
    in the same run as the current code, each in its own process."""
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(folder), rev], cwd=ROOT, check=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT)
