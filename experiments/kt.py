"""``curator bench kt``: the paper's comparison, end to end, on any target/pool pair.

One seeded split of the target (few labels per class + val; the rest is test) drives five
arms that share the student, its schedule and the transfer-set size:

1. ``supervised``: the student on the labelled images alone (with ``--student-init imagenet``, the paper's
   "ImageNet pretraining" baseline, run beside ``supervised-scratch``, the same student from scratch);
2. ``task-agnostic``: features matched to the frozen teacher on the retrieved set, then finetune;
3. ``task-oriented-random``: the method on a uniform pool draw of the same size;
4. ``task-oriented-retrieved``: the method on the query-balanced retrieved set (the paper);
5. ``teacher``: the adapted teacher itself, the ceiling.

Retrieval uses the pool index's own encoder; val and test images are contamination-excluded
from both transfer sets. Teacher outputs are cached per backbone (``distill.cache``), so the
teacher runs once per transfer set, whatever the seeds and arms. Every run is resumable:
a finished run's report is reused, a killed one resumes from its checkpoints, and a larger
``--seeds`` extends a finished bench. Per-seed paired differences say whether a lead beats noise.
"""
from __future__ import annotations

import csv
import os
import statistics
import time
from concurrent.futures import as_completed
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from curator import atomic
from curator.curate import curate
from curator.errors import CuratorError
from curator.formats.distill import TRAINING_FIELDS
from curator.formats import (ArmResult, CurateParams, DistillConfig, DistillReport, KTConfig, KtResults, Paired,
                             KtSettings, SkippedImages, SkippedItem, Stats, TeacherView, TransferManifest, load_doc,
                             load_settings, save_doc)
from curator.pipeline import ImagePipeline, Skip
from curator.processes import spawn_pool, stop_pool, usable_cpus
from curator.queries import Query, embed_queries
from curator.retrieval import PoolIndex
from curator.transfer import read_manifest
from distill import run_distill
from distill.data import load_labelled
from distill.methods import uncached_adaptation_passes

from .kt_report import bar_chart, markdown

#: The public protocol's pool (~10k images, fetched with ``curator samples fetch``): openclipart's
#: clip-art beside KDE's Oxygen icons, which are unrelated to most targets (the web's distractors).
KT_POOL = ("openclipart", "oxygen-icons")
KT_TARGET = "tuxpaint"
#: Target images left out of the split, with the reason (read into results.json).
SKIPPED_FILE = "skipped.json"
ARMS = ("supervised", "task-agnostic", "task-oriented-random", "task-oriented-retrieved", "teacher")
#: (method, transfer set) of each trained arm; the teacher arm is read from arm 4's reports
RUNS = {"supervised": ("supervised", None), "supervised-scratch": ("supervised", None),
        "task-agnostic": ("task-agnostic", "retrieved"), "task-oriented-random": ("task-oriented", "random"),
        "task-oriented-retrieved": ("task-oriented", "retrieved")}


def arms_for(cfg: KTConfig) -> tuple[str, ...]:
    """The arms this bench runs. A student that starts from ImageNet makes ``supervised`` the paper's
    "ImageNet pretraining" baseline; the same student trained from scratch on the labels then runs
    beside it (``supervised-scratch``), as the paper's from-scratch baseline."""
    if cfg.student_init == "imagenet":
        return ARMS[:1] + ("supervised-scratch",) + ARMS[1:]
    return ARMS


def write_split(cfg: KTConfig, out: Path) -> Path:
    """The seeded split as ``split.csv`` (path,label,split): every arm reads this one file. Target
    images that do not decode are left out before splitting, and named in ``skipped.json``."""
    path = out / "split.csv"
    if path.exists():
        return path
    skipped: list[SkippedItem] = []

    def usable(file: str) -> bool:
        result = ImagePipeline(min_side=256).decode(file)
        if isinstance(result, Skip):
            skipped.append(SkippedItem(key=file, source="target", reason=result.reason, detail=result.detail))
        return not isinstance(result, Skip)
    data = load_labelled(cfg.target, labels_per_class=cfg.labels_per_class, val_per_class=cfg.val_per_class,
                         seed=cfg.split_seed, usable=usable)
    save_doc(out / SKIPPED_FILE, SkippedImages(items=skipped))
    rows = [(str(Path(ref).resolve()), data.classes[label], split)
            for split in ("train", "val", "test") for ref, label in data.splits[split]]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "split"])
            w.writerows(rows)
    atomic.write_with(path, write)
    return path


def curate_sets(cfg: KTConfig, split: Path, out: Path) -> dict[str, TransferManifest]:
    """The retrieved (balanced) and random transfer sets, same size, same exclusions."""
    sets = out / "sets"
    manifests = {name: sets / name / "manifest.json" for name in ("retrieved", "random")}
    if all(p.exists() for p in manifests.values()):
        return {name: read_manifest(sets / name) for name in manifests}
    data = load_labelled(split)
    pool = PoolIndex.open(cfg.index)

    def queries(split_name: str) -> list[Query]:
        return [Query(Path(ref).name, label=data.classes[label], path=Path(ref))
                for ref, label in data.splits[split_name]]
    train, held_out = queries("train"), queries("val") + queries("test")
    q_vecs, owner, _, _ = embed_queries(pool.encoder(), train, crops=cfg.crops, seed=cfg.split_seed)
    x_vecs = embed_queries(pool.encoder(), held_out).vectors
    common = dict(query_vectors=q_vecs, query_owner=owner, exclude_vectors=x_vecs)
    result = {}
    for name, strategy in (("retrieved", "balanced"), ("random", "random")):
        budget = cfg.budget if name == "retrieved" else result["retrieved"].counts.emitted
        if manifests[name].exists():
            result[name] = read_manifest(sets / name)
            continue
        params = CurateParams(strategy=strategy, budget=budget, exclude_threshold=cfg.exclude_threshold,
                              crops=cfg.crops, seed=cfg.split_seed)
        result[name] = curate(pool, train, params, sets, set_id=name, **common)
    return result


def run_order(arms: tuple[str, ...], seeds: int) -> list[tuple[str, int]]:
    """Every (arm, seed) run, longest first: the distilling arms (the first on each set also builds its
    teacher cache) before the supervised ones. Runs train ``run_slots`` at a time, so the last one trains
    alone while a slot idles; a short supervised run there wastes less of that slot than a distilling one."""
    trained = [arm for arm in arms if arm in RUNS]
    groups = ([a for a in trained if RUNS[a][1]], [a for a in trained if not RUNS[a][1]])
    return [(arm, seed) for group in groups for seed in range(seeds) for arm in group]


def run_slots(cfg: KTConfig) -> tuple[int, int]:
    """(runs trained at once, torch threads each). Small students at 64 px scale poorly over threads:
    on 2 cores a tf_efficientnet_lite0 step takes 286 ms on both and 420 ms on one, so two runs side
    by side train 1.36x more steps a second. A GPU runs one at a time."""
    cores = usable_cpus()
    jobs = cfg.jobs or (2 if cfg.device == "cpu" and cores >= 2 else 1)
    return jobs, max(1, cores // jobs)


def train_runs(cfg: KTConfig, todo: list[tuple[str, int]], split: Path, out: Path) -> dict[tuple[str, int],
                                                                                           DistillReport]:
    """Every (arm, seed) run's report: finished ones read back, the rest trained ``run_slots`` at a time,
    in ``todo``'s order (runs that share a teacher cache wait for the one building it)."""
    done = {key: finished(out, *key) for key in todo}
    pending = [key for key in todo if done[key] is None]
    jobs, threads = run_slots(cfg)
    if jobs == 1 or len(pending) < 2:
        done.update({key: run_arm(cfg, *key, split, out) for key in pending})
        return done
    quiet = cfg.model_copy(update={"progress": False})  # one bar over the runs, not two processes' bars
    bar = tqdm(total=len(pending), desc=f"runs, {jobs} at once", unit="run", disable=not cfg.progress)
    with spawn_pool(jobs, torch_threads=threads) as pool:
        futures = {pool.submit(run_arm, quiet, *key, split, out): key for key in pending}
        try:
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                bar.update()
        except BaseException:  # a failed or interrupted run stops the bench (the runs resume from checkpoints)
            stop_pool(pool)
            raise
        finally:
            bar.close()
    return done


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / arm / f"seed{seed}"


def finished(out: Path, arm: str, seed: int) -> Optional[DistillReport]:
    report = run_dir(out, arm, seed) / "report.json"
    return load_doc(report, DistillReport) if report.exists() else None


def run_arm(cfg: KTConfig, arm: str, seed: int, split: Path, out: Path) -> DistillReport:
    method, transfer = RUNS[arm]
    folder = run_dir(out, arm, seed)
    if (report := finished(out, arm, seed)) is not None:
        return report
    # the supervised arm trains as many student steps as the others (b + c), all on the labels
    steps_c = cfg.steps_c + (cfg.steps_b if method == "supervised" else 0)
    arm_only = dict(labelled=str(split), transfer=str(out / "sets" / transfer) if transfer else None, out=str(folder),
                    method=method, student_init="scratch" if arm == "supervised-scratch" else cfg.student_init,
                    steps_c=steps_c, cache_teacher=cfg.cache_views if method != "supervised" else 0,
                    cache_dir=str(out / "cache"), seed=seed, ckpt_every=max(50, cfg.steps_b // 8), export=False)
    dc = DistillConfig(**{**cfg.model_dump(include=TRAINING_FIELDS), **arm_only})
    return run_distill(dc, label=f"{arm} seed {seed}: ")


def _stats(values: list[float]) -> Stats:
    return Stats(mean=round(statistics.fmean(values), 4),
                 std=round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, values=values)


def _paired(mine: list[float], theirs: list[float]) -> Paired:
    """Per-seed differences (the arms share each seed), so a reader can tell a lead from seed
    noise: the mean difference, its standard error, and the seeds it wins."""
    diffs = [a - b for a, b in zip(mine, theirs)]
    sem = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
    return Paired(mean_difference=round(statistics.fmean(diffs), 4), sem=round(sem, 4) if sem is not None else None,
                  wins=sum(d > 0 for d in diffs), seeds=len(diffs))


def _arm(cfg: KTConfig, arm: str, runs: list[DistillReport], sets: dict[str, TransferManifest]) -> ArmResult:
    if arm == "teacher":
        finals = [{"test": r.teacher.test, "val": r.teacher.val} for r in runs]
        compute = {"teacher_forward_passes": None, "student_steps": 0, "wall_seconds": None}
    else:
        finals = [r.student.final for r in runs]
        method, transfer = RUNS[arm]
        # the teacher labels each transfer view once; every seed (and arm) on that set reuses it
        compute = {"teacher_forward_passes": sets[transfer].counts.emitted * cfg.cache_views if transfer else 0,
                   "teacher_adaptation_passes": adaptation_passes(cfg, runs[0]) if method == "task-oriented" else None,
                   "student_steps": sum((r.stages["b"].steps if "b" in r.stages else 0) + r.stages["c"].steps
                                        for r in runs) // len(runs),
                   "wall_seconds": round(sum(r.wall_seconds or 0.0 for r in runs), 1)}
    return ArmResult(test_accuracy=_stats([f["test"].accuracy for f in finals]),
                     test_mean_per_class_accuracy=_stats([f["test"].mean_per_class_accuracy for f in finals]),
                     val_accuracy=_stats([f["val"].accuracy for f in finals]), **compute)


def adaptation_passes(cfg: KTConfig, report: DistillReport) -> int:
    """Stage (a)'s teacher cost, as its report records it. Reports written before they recorded it: a linear
    probe on cached features costs one backbone pass per cached train view (at least 8 views an image)."""
    recorded = report.stages["a"].teacher_forward_passes if "a" in report.stages else None
    if recorded is not None:
        return recorded
    if cfg.teacher_mode == "linear" and cfg.cache_views:
        return report.data.train * max(8, cfg.cache_views)
    return uncached_adaptation_passes(cfg.teacher_mode, cfg.steps_a, cfg.batch_size)


def on_task(reports: dict[str, list[DistillReport]]) -> dict[str, TeacherView]:
    """Per transfer set, the adapted teacher's reading of its views (``TeacherView``), averaged over the
    seeds of the task-oriented arm on it: is the retrieved set more on-task than a random draw, per class?"""
    out = {}
    for arm, (method, transfer) in RUNS.items():
        views = [r.stages["b"].teacher_view for r in reports.get(arm, []) if method == "task-oriented"
                 and "b" in r.stages and r.stages["b"].teacher_view is not None]
        if views:
            out[transfer] = _mean_view(views)
    return out


def _mean_view(views: list[TeacherView]) -> TeacherView:
    def avg(values) -> float:
        return round(statistics.fmean(values), 4)
    return TeacherView(mean_confidence=avg(v.mean_confidence for v in views),
                       confident_share=avg(v.confident_share for v in views),
                       class_share={c: avg(v.class_share[c] for v in views) for c in views[0].class_share},
                       confident_class_share={c: avg(v.confident_class_share[c] for v in views)
                                              for c in views[0].confident_class_share})


def summarise(cfg: KTConfig, reports: dict[str, list[DistillReport]], sets: dict[str, TransferManifest],
              wall: float, command: Optional[str] = None) -> KtResults:
    """results.json: per arm, test (and val) accuracy over seeds, and what each arm cost."""
    arms = {arm: _arm(cfg, arm, runs, sets) for arm, runs in reports.items()}
    mean = {a: arms[a].test_accuracy.mean for a in arms}
    paper = "task-oriented-retrieved"
    others = [a for a in ("supervised", "task-agnostic", "task-oriented-random") if a in arms]
    metrics = ("test_accuracy", "test_mean_per_class_accuracy")
    student, teacher = next(iter(reports.values()))[0].student, reports[paper][0].teacher
    return KtResults(
        config=cfg, arms=arms, command=command, wall_seconds=round(wall, 1),
        orderings={f"{paper} > {other}": mean[paper] > mean[other] for other in others},
        paired={f"{paper} - {other}": {m: _paired(getattr(arms[paper], m).values, getattr(arms[other], m).values)
                                       for m in metrics} for other in others},
        transfer_sets={name: {"images": m.counts.emitted, "excluded": m.counts.excluded, "deduped": m.counts.deduped}
                       for name, m in sets.items()},
        on_task=on_task(reports),
        student=student.model_dump(include={"name", "size", "params", "flops", "latency_ms_cpu_batch1"}),
        teacher=teacher.model_dump(include={"spec", "mode", "params", "flops", "latency_ms_batch1", "latency_device"}))


def target_digest(target: str) -> str:
    """The target's content (each image's path below the folder, and its size): a bench moved or
    re-mounted elsewhere is the same bench, while a target whose images changed is not."""
    import hashlib

    from curator.pool import list_folder_images

    digest = hashlib.sha256()
    for rel in list_folder_images(target):
        digest.update(f"{rel}\0{os.path.getsize(os.path.join(target, rel))}\n".encode())
    return digest.hexdigest()[:16]


def settings(cfg: KTConfig) -> dict:
    """What makes two benches the same bench: the config less seeds (more seeds extend it), where
    things are (target path, out) and how progress shows, plus the target's content."""
    mine = cfg.model_dump(exclude={"progress", "seeds", "target", "out", "arms", "jobs"})
    return {**mine, "index_encoder": cfg.pool_encoder, "target_digest": target_digest(cfg.target)}


#: Knobs whose default has changed: a saved config without them was written when this was the default.
FORMER_DEFAULTS = {"student": "mobilenetv3_small_100", "student_init": "scratch"}


def check_saved(path: Path, cfg: KTConfig, mine: dict) -> None:
    """Refuse a folder that holds another bench, naming each setting that differs. Knobs added to
    KTConfig since the folder was written read as their defaults, so an older finished bench stays
    extendable; a folder written before the target was fingerprinted keeps its saved target path."""
    if not path.exists():
        return
    saved = {k: v for k, v in load_settings(path, KtSettings).settings.items() if k not in ("seeds", "out")}
    if "target_digest" not in saved:
        if saved.pop("target", cfg.target) != cfg.target:
            saved["target_digest"] = "(another target)"
        else:
            saved["target_digest"] = mine["target_digest"]
    saved = {**{k: FORMER_DEFAULTS.get(k, KTConfig.model_fields[k].default) for k in mine
                if k not in saved and k in KTConfig.model_fields}, **saved}
    diff = [f"{k}: {saved.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(saved) | set(mine))
            if saved.get(k) != mine.get(k)]
    if diff:
        raise CuratorError(f"{path.parent} holds a bench with other settings ({'; '.join(diff)}); use a fresh --out "
                           "to start over (only --seeds may change: more seeds reuse the finished ones)")


def check_models(cfg: KTConfig) -> None:
    """The teacher and the student load, before anything is written: a typo'd --teacher must not
    leave a bench folder that refuses the corrected command."""
    from curator.encoders import create_encoder
    from distill.models import Student

    create_encoder(cfg.teacher)
    Student(cfg.student, 2, cfg.student_size, cfg.student_init)


def run_kt(cfg: KTConfig, command: Optional[str] = None) -> KtResults:
    """The whole bench; returns results.json's content (also written with results.md, chart.png)."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    saved = out / "kt-config.json"
    mine = settings(cfg)  # the target's content is read once
    check_saved(saved, cfg, mine)
    check_models(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_doc(saved, KtSettings(settings=mine))
    split = write_split(cfg, out)
    sets = curate_sets(cfg, split, out)
    if not sets["retrieved"].counts.emitted:
        raise CuratorError("retrieval returned no images: is the pool index empty?")
    arms = tuple(a for a in arms_for(cfg) if cfg.arms is None or a in (*cfg.arms, "task-oriented-retrieved", "teacher"))
    todo = run_order(arms, cfg.seeds)
    done = train_runs(cfg, todo, split, out)
    reports = {arm: [done[arm, seed] for seed in range(cfg.seeds)] for arm in arms if arm in RUNS}
    reports["teacher"] = reports["task-oriented-retrieved"]
    results = summarise(cfg, reports, sets, time.perf_counter() - t0, command)
    if (out / SKIPPED_FILE).exists():
        skipped = load_doc(out / SKIPPED_FILE, SkippedImages).items
        results = results.model_copy(update={"skipped_images": skipped})
    save_doc(out / "results.json", results)
    atomic.write_text(out / "results.md", markdown(results, command))
    bar_chart(results, out / "chart.png")
    return results


def prepare_inputs(target: Optional[str], pool: Optional[list[str]], index: Optional[str], cfg: KTConfig,
                   progress: bool = True) -> tuple[str, str]:
    """The target folder and the pool index: the public protocol's samples when no target is
    given, and the pool indexed once into ``OUT/index`` when no index is."""
    from curator.samples import fetch_samples

    if not target:
        fetched = fetch_samples((KT_TARGET,) + KT_POOL)
        target, pool = str(fetched[KT_TARGET]), [str(fetched[name]) for name in KT_POOL]
    if not index:
        from index_builder import BuildConfig, build_index

        index = str(Path(cfg.out) / "index")
        build_index(pool, index, BuildConfig(encoder=cfg.pool_encoder, device=cfg.device, progress=progress))
    return target, index
