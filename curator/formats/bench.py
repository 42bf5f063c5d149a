"""A benchmark's record: one run of one bench on one machine at one commit, as data.

Each bench writes ``benchmarks/results/<bench>-<machine>-<commit>.json`` through this model, and
``benchmarks/make_docs.py`` builds ``docs/benchmarks.md`` from the records: nothing in the docs is
typed by hand, and an older run stays readable beside a newer one.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from .base import Doc, utcnow

BENCH_RECORD_FORMAT = "curator.bench-record/1"
#: The topics docs/benchmarks.md is organised by, in the order it shows them.
Topic = Literal["embedding", "index", "curation", "service", "distillation", "knowledge transfer", "curves", "gpu"]


class BenchRecord(Doc):
    format: Literal["curator.bench-record/1"] = BENCH_RECORD_FORMAT
    bench: str = Field(description="the section's name, e.g. curate or kt-12-routed")
    topic: Topic
    title: str = Field(description="one line: what was measured")
    summary: str = Field("", max_length=300, description="one line: the figure a reader wants first")
    machine: str = Field(description="the machine in words: cores, CPU or GPU, Python, torch")
    machine_id: str = Field(description="a short name for the machine kind, as in the file name")
    command: str = ""
    commit: str
    date: str = Field(default_factory=utcnow)
    body: str = Field(description="the run's full write-up: tables, baselines measured in the same run, caveats")
    data: dict[str, Any] = Field(default_factory=dict, description="raw figures, where the bench keeps them")
    chart: Optional[str] = None
