"""Record one benchmark run as data (``benchmarks/results/<bench>-<machine>-<commit>.json``) and rebuild
docs/benchmarks.md from every record."""
from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: Each bench's topic in docs/benchmarks.md, by the start of its name (the longest match wins).
TOPICS = {"embed": "embedding", "pipeline": "embedding", "memo": "embedding", "malloc": "embedding", "ray": "embedding",
          "index": "index", "scale": "index", "curate": "curation", "select": "curation", "refsets": "curation",
          "replicas": "service", "distill": "distillation", "student-step": "distillation",
          "kt": "knowledge transfer", "curve": "curves", "gpu": "gpu", "pipeline-refactor-gpu": "gpu"}


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
    # docs/benchmarks.md's student-step notes)
    isa = torch.backends.cpu.get_cpu_capability()
    return (f"{os.cpu_count()} cores ({cpu}, {isa}), {platform.system()} {platform.machine()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads")


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


#: What benches write themselves (sections, kept charts, curve records): not a change to the code measured.
#: A bench copies its chart and record before it writes its section, so counting them flagged every run.
BENCH_OUTPUTS = (":!docs/benchmarks.md", ":!benchmarks/charts", ":!benchmarks/results")


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
    """Copy a chart from an (ignored) bench folder into the tracked benchmarks/charts/, so that
    docs/benchmarks.md shows it; returns the path to link from the repository root."""
    kept = ROOT / "benchmarks" / "charts" / name
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chart, kept)
    return str(kept.relative_to(ROOT))


def topic_of(bench: str) -> str:
    prefix = max((p for p in TOPICS if bench.startswith(p)), key=len, default=None)
    if prefix is None:
        raise ValueError(f"bench {bench!r} has no topic: add its prefix to benchmarks/report.py TOPICS")
    return TOPICS[prefix]


def machine_id(text: str) -> str:
    """A short name for a machine kind (the record's file name): GPU model, else cores, CPU vendor and ISA."""
    gpu = re.search(r"NVIDIA (\w+)", text)
    if gpu:
        return gpu.group(1).lower()
    cores = re.match(r"(\d+) cores", text)
    vendor = "amd" if "AMD" in text else "intel" if ("Intel" in text or "Xeon" in text) else "cpu"
    isa = re.search(r"(AVX512|AVX2)", text, flags=re.I)
    return "-".join(x for x in (f"{cores.group(1)}c" if cores else "", vendor, isa.group(1).lower() if isa else "")
                    if x)


def record_result(name: str, body: str, summary: str = "", data: Optional[dict] = None,
                  chart: Optional[str] = None) -> Path:
    """Write this run's record and rebuild docs/benchmarks.md. ``body`` is the run's write-up (its first
    ``## `` line is the title); ``summary`` is the one line a reader wants first."""
    sys.path.insert(0, str(ROOT))
    from curator.formats import BenchRecord, save_doc

    lines = body.strip().splitlines()
    title = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else name
    text = machine()
    rec = BenchRecord(bench=name, topic=topic_of(name), title=title, summary=summary[:300], machine=text,
                      machine_id=machine_id(text), command=command(), commit=commit(),
                      body="\n".join(lines[1:] if lines and lines[0].startswith("#") else lines).strip(),
                      data=data or {}, chart=chart)
    path = RESULTS / f"{name}-{rec.machine_id}-{rec.commit.split()[0]}.json"
    save_doc(path, rec)
    from make_docs import write_docs

    write_docs()
    return path


@contextlib.contextmanager
def checkout(rev: str, folder: Path):
    """An earlier commit's tree in ``folder`` (a git worktree), removed afterwards: a baseline measured
    in the same run as the current code, each in its own process."""
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(folder), rev], cwd=ROOT, check=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT)
