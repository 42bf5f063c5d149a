"""``curator build-index``: pool -> shards + embeddings -> FAISS index, resumably.

Steps, each restartable on its own:
1. plan: inputs are split into shard tasks, saved as ``plan.json`` (a re-run must match;
   ``--append`` adds the new inputs' tasks after the existing ones);
2. embed: every shard without a valid done-marker is embedded (index_builder.embed_images) on the
   chosen runner (index_builder.runners), or imported with ``--embeddings``;
3. index: a new generation is built or appended (index_builder.generation) and switched in
   by writing ``index.json`` last;
4. links (``--dedup-links``, by default on pools of 100,000 items or more): the generation's
   near-duplicate links (index_builder.dedup_links).
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from collections import Counter
from pathlib import Path
from typing import Optional

from curator.downloads import download_url_list
from curator.encoders import create_encoder, describe_encoder
from curator.errors import CuratorError, PlanMismatchError
from curator.formats import (INDEX_MANIFEST_NAME, BuildConfig, BuildPlan, BuildReport, EncoderInfo, IndexManifest, ShardDone,
                             ShardTask, load_doc, save_doc)
from curator.pool import input_kind, plan_tasks
from curator.progress import progress_bar

from .embed_images import EmbedOptions, read_done
from .import_embeddings import import_shard, plan_embedding_tasks
from .generation import append_generation, build_generation, current, up_to_date
from .ingest import download_failures
from .dedup_links import build_links
from .runners import Runner, make_runner

log = logging.getLogger(__name__)


def build_index(inputs: list[str], out: str | Path, opts: BuildConfig, *, embeddings: bool = False) -> BuildReport:
    """Plan, embed (or import, with ``embeddings``), then index; each step resumes on its own.

    Everything a user can get wrong (the encoder, the inputs, --append, the Ray cluster) is checked
    before anything is written to ``out``."""
    t_start = time.perf_counter()
    out = Path(out)
    if embeddings:  # vectors computed elsewhere: the encoder's config says what the index must record
        encoder = DescribedEncoder(describe_encoder(opts.encoder, precision=opts.precision))
    else:
        encoder = create_encoder(opts.encoder, device="cpu" if opts.runner == "ray" else opts.device,
                                 precision=opts.precision)
    base = _check_append(out, opts)
    if embeddings:
        planned = [t for root in inputs for t in plan_embedding_tasks(root)]
        resolved = [root if "://" in root else str(Path(root).resolve()) for root in inputs]
    else:
        for spec in inputs:
            input_kind(spec)  # a missing path or an unreadable kind names itself here
    runner = make_runner(opts, None if embeddings else encoder)
    try:
        if opts.overwrite and out.exists():
            _discard(out)
        out.mkdir(parents=True, exist_ok=True)
        if not embeddings:
            resolved = resolve_inputs(inputs, out, opts)
            planned = plan_tasks(resolved, opts.shard_size)
        tasks = _plan(out, resolved, planned, opts).tasks
        return _build(out, tasks, encoder, opts, runner, base, embeddings, t_start)
    finally:
        runner.close()


@dataclass(frozen=True)
class DescribedEncoder:
    """An encoder known by its description alone: importing published vectors runs no model, so none
    is loaded (weights are read only when a query image or text must be embedded)."""
    info: dict

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    def describe(self) -> dict:
        return self.info


def _build(out: Path, tasks: list[ShardTask], encoder, opts: BuildConfig, runner: Runner,
           base: Optional[IndexManifest], embeddings: bool, t_start: float) -> BuildReport:
    for stale in (out / "shards").glob(".*.tmp*"):  # left by a build killed mid-write
        stale.unlink()
    dones: dict[str, Optional[ShardDone]] = {t.shard_id: read_done(out, t, opts.encoder) for t in tasks}
    pending = [t for t in tasks if dones[t.shard_id] is None]
    reused = len(tasks) - len(pending)
    if reused and pending:
        log.info("resuming: %d of %d shards already done", reused, len(tasks))
    t_embed = time.perf_counter()
    n_embedded = _embed(pending, dones, out, encoder, opts, runner, embeddings)
    embed_seconds = time.perf_counter() - t_embed
    t_index = time.perf_counter()
    info, old, ids = EncoderInfo(**encoder.describe()), current(out), [t.shard_id for t in tasks]
    if base is not None and not opts.retrain and not up_to_date(old, ids, info, opts):
        gen = append_generation(out, tasks, old, opts, runner)
    elif up_to_date(old, ids, info, opts) and not (opts.append and opts.retrain):
        log.info("index is up to date")
        gen = None
    else:
        gen = build_generation(out, tasks, info, opts, runner, "embeddings" if embeddings else "images")
    links_at = opts.links_threshold((gen.manifest if gen else current(out)).ntotal)
    if links_at is not None:
        workers = max(1, min(opts.index_workers, os.cpu_count() or 1))  # links run here, whatever the runner
        build_links(out, links_at, workers=workers, progress=opts.progress)
    index_seconds = time.perf_counter() - t_index
    old_report = out / "build-report.json"
    if gen is None and not pending and old_report.exists():
        # a finished build, run again: its real figures stand (the file is left as the build wrote it)
        return load_doc(old_report, BuildReport).model_copy(update={"shards_reused": reused})
    manifest = gen.manifest if gen else current(out)
    skipped = download_failures(out) + [s for t in tasks for s in dones[t.shard_id].skipped]
    report = BuildReport(
        items=manifest.ntotal, skipped=len(skipped), skipped_by_reason=dict(Counter(s.reason for s in skipped)),
        skipped_items=skipped[:1000], duplicates=manifest.n_duplicates, shards_total=len(tasks),
        shards_reused=reused, embed_seconds=round(embed_seconds, 3),
        embed_images_per_s=round(n_embedded / embed_seconds, 2) if n_embedded and embed_seconds else 0.0,
        index_seconds=round(index_seconds, 3), total_seconds=round(time.perf_counter() - t_start, 3),
        index_factory=manifest.index_factory, recall_at_10=manifest.recall_at_10, layout=manifest.layout,
        generation=manifest.generation, peak_rss_bytes=peak_rss(), appended=gen.appended if gen else None,
        warnings=gen.warnings if gen else [])
    save_doc(out / "build-report.json", report)
    return report


def _embed(pending: list[ShardTask], dones: dict, out: Path, encoder, opts: BuildConfig, runner: Runner,
           embeddings: bool) -> int:
    """Embed (or import) the pending shards, recording each done-marker; returns items handled."""
    known = sum(len(t.files) for t in pending if t.files is not None and t.kind == "folder")
    n = 0
    with progress_bar(total=known or None, desc="import" if embeddings else "embed", unit="shard" if embeddings
                      else "img", enabled=opts.progress) as bar:
        if embeddings:
            for task in pending:
                done = import_shard(task, out, encoder.dim, opts.encoder)
                dones[task.shard_id] = done
                n += done.n_items
                bar.update(1)
            return n
        eopts = EmbedOptions(opts.batch_size, opts.workers, opts.max_pixels, opts.worker_nice)
        for done in runner.embed(pending, out, eopts, bar.update):
            dones[done.shard_id] = done
            n += done.n_items + done.n_skipped
    return n


def _check_append(out: Path, opts: BuildConfig) -> Optional[IndexManifest]:
    """The index an --append adds to (checked before anything is written), else None."""
    if opts.retrain and not opts.append:
        raise CuratorError("--retrain goes with --append (a plain build always trains)")
    if not opts.append:
        return None
    if opts.overwrite:
        raise CuratorError("--append adds to the index in --out and --overwrite discards it; pass one of them")
    base = current(out) if out.exists() else None
    if base is None:
        raise CuratorError(f"--append: {out} holds no index yet; build one first (without --append)")
    return base


def _discard(out: Path) -> None:
    for name in ("shards", "plan.json", INDEX_MANIFEST_NAME, "index.faiss", "items.arrow", "build-report.json"):
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    for gen in out.glob("gen-*"):
        shutil.rmtree(gen)


def _plan(out: Path, resolved: list[str], new_tasks: list[ShardTask], opts: BuildConfig) -> BuildPlan:
    """The build's plan: new, resumed, or (--append) the existing plan with the new inputs' tasks after it."""
    settings = dict(encoder=opts.encoder, precision=opts.precision, max_pixels=opts.max_pixels,
                    shard_size=opts.shard_size, keep_duplicates=opts.keep_duplicates, seed=opts.seed,
                    recall_queries=opts.recall_queries)
    if not opts.append:
        plan = BuildPlan(inputs=resolved, tasks=new_tasks, **settings)
        check_plan(out, plan)
        return plan
    old = load_doc(out / "plan.json", BuildPlan)
    differ = [f"{k}: {getattr(old, k)!r} -> {v!r}" for k, v in settings.items() if getattr(old, k) != v]
    if differ:
        raise PlanMismatchError(f"--append must use the index's settings ({'; '.join(differ)})")
    if old.inputs[-len(resolved):] == resolved and len(old.inputs) > len(resolved):
        return old  # this append was planned before (a resumed --append)
    if set(resolved) & set(old.inputs):
        raise CuratorError(f"--append: {sorted(set(resolved) & set(old.inputs))[0]} is already in the index")
    for i, task in enumerate(new_tasks):
        task.shard_id = f"{len(old.tasks) + i:05d}"
    plan = old.model_copy(update={"inputs": old.inputs + resolved, "tasks": old.tasks + new_tasks})
    save_doc(out / "plan.json", plan)
    return plan


def peak_rss() -> int:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def resolve_inputs(inputs: list[str], out: Path, opts: BuildConfig) -> list[str]:
    """Replace URL lists by the tar shards img2dataset downloads them into."""
    resolved: list[str] = []
    for n, spec in enumerate(inputs):
        if input_kind(spec) == "urls":
            dest = out / "download" / f"{n:03d}-{Path(spec).stem}"
            resolved.extend(download_url_list(spec, dest, max_pixels=opts.max_pixels, **opts.download))
        else:
            resolved.append(spec)
    return resolved


def check_plan(out: Path, plan: BuildPlan) -> None:
    path = out / "plan.json"
    if path.exists():
        old = load_doc(path, BuildPlan)
        if old.model_dump() != plan.model_dump():
            changed = [f"{k}: {getattr(old, k)!r} -> {getattr(plan, k)!r}" if k != "tasks" else
                       "tasks (the pool's files changed)" for k in BuildPlan.model_fields
                       if getattr(old, k) != getattr(plan, k)]
            raise PlanMismatchError(f"{out} holds a build with other settings ({'; '.join(changed)}); "
                                    f"re-run with the same arguments to resume, or add --overwrite")
        return
    save_doc(path, plan)
