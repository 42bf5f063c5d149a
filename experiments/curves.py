"""``curator bench curve``: the paper's three curves, each a row of ``bench kt`` runs that differ in one knob.

- ``size``: accuracy against transfer-set size, the retrieved set against a random draw of the same size;
- ``labels``: accuracy against labelled images per class, task-oriented transfer against the student trained
  on the labels alone (the paper finds the margin largest with few labels);
- ``compute``: accuracy against pretraining compute, task-oriented against task-agnostic distillation, with
  the compute ratio at equal accuracy (the paper: up to 9x less).

Each point is a whole kt bench in ``OUT/<axis>-<value>`` that runs only the arms its curve compares, so a
point resumes, and more ``--seeds`` extend every point, exactly as ``bench kt`` does. The three axes can share
one ``--out`` and so one pool index.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from curator import atomic
from curator.errors import CuratorError
from curator.formats import CurveConfig, CurvePoint, CurveResults, KTConfig, KtResults, load_doc, save_doc

from distill.data import load_labelled

from .curve_report import line_chart, markdown
from .kt import run_kt, target_digest

PAPER_ARM = "task-oriented-retrieved"


@dataclass(frozen=True)
class Axis:
    knob: str                 # the KTConfig field each point sets
    other: str                # the arm the paper's arm is compared with
    x_label: str
    same_sets: bool = False   # every point curates the same split and sets (the knob is a training one)


AXES = {
    "size": Axis("budget", "task-oriented-random", "transfer-set size (images)"),
    "labels": Axis("labels_per_class", "supervised", "labelled images per class"),
    "compute": Axis("steps_b", "task-agnostic", "pretraining compute (GFLOPs: teacher adaptation + distillation)",
                    same_sets=True),
}
#: What points with the same sets share: the split, the transfer sets and the teacher's outputs on them.
SHARED = ("split.csv", "skipped.json", "sets", "cache")
#: What a recorded curve may differ in and still lend its points: where things are, how the runs were
#: scheduled and shown, and which values it has.
RECORD_FREE = {"values", "out", "recorded", "index", "target", "progress", "jobs", "arms"}


def pretraining_gflops(cfg: KTConfig, results: KtResults, arm: str) -> float:
    """What an arm spends before finetuning on the labels, counted as the paper does (teacher finetuning
    plus distillation), from what the runs did: the teacher's adaptation (task-oriented only: a linear probe
    on cached features is one backbone pass per cached train view, not one per step), one teacher forward
    pass per cached transfer view, and the student's distillation steps (forward + backward, 3x its forward
    FLOPs)."""
    teacher, student = results.teacher.get("flops") or 0, results.student.get("flops") or 0
    result = results.arms[arm]
    passes = (result.teacher_forward_passes or 0) + (result.teacher_adaptation_passes or 0)
    return (passes * teacher + cfg.steps_b * cfg.batch_size * 3 * student) / 1e9


def point_config(cfg: CurveConfig, value: int) -> KTConfig:
    """The kt bench of one point: the curve's knobs, the axis' knob set to ``value``, its own folder."""
    base = cfg.model_dump(exclude={"axis", "values", "recorded"})
    return KTConfig.model_validate({**base, AXES[cfg.axis].knob: value, "arms": [AXES[cfg.axis].other],
                                    "out": str(Path(cfg.out) / f"{cfg.axis}-{value}")})


def point(cfg: CurveConfig, value: int, results: KtResults) -> CurvePoint:
    """One point of the curve from its bench's results."""
    other = AXES[cfg.axis].other
    arms = (other, PAPER_ARM)
    if cfg.axis == "size":
        x = {a: float(results.transfer_sets["retrieved"]["images"] or 0) for a in arms}
    elif cfg.axis == "compute":
        x = {a: round(pretraining_gflops(point_config(cfg, value), results, a), 3) for a in arms}
    else:
        x = {a: float(value) for a in arms}
    pair = results.paired[f"{PAPER_ARM} - {other}"]
    split = Path(point_config(cfg, value).out) / "split.csv"
    return CurvePoint(value=value, x=x, arms={a: results.arms[a].test_accuracy for a in arms},
                      paired={"test_accuracy": pair["test_accuracy"],
                              "test_mean_per_class_accuracy": pair["test_mean_per_class_accuracy"]},
                      test_images=len(load_labelled(split).splits["test"]))


def compute_ratio(points: list[CurvePoint], fast: str = PAPER_ARM, slow: str = "task-agnostic") -> Optional[float]:
    """At best over ``fast``'s points: the compute ``slow`` needs to reach that point's accuracy, over the
    point's own compute. ``slow``'s curve is read as the best accuracy reached with at most that compute,
    interpolated linearly in log compute. None when ``slow`` never reaches any of ``fast``'s accuracies."""
    curve = sorted((p.x[slow], p.arms[slow].mean) for p in points)
    envelope, best = [], -math.inf
    for c, acc in curve:
        best = max(best, acc)
        envelope.append((c, best))
    ratios = []
    for p in points:
        need = _compute_to_reach(envelope, p.arms[fast].mean)
        if need is not None and p.x[fast] > 0:
            ratios.append(need / p.x[fast])
    return round(max(ratios), 2) if ratios else None


def _compute_to_reach(envelope: list[tuple[float, float]], accuracy: float) -> Optional[float]:
    if not envelope or envelope[0][1] >= accuracy:
        return envelope[0][0] if envelope else None
    for (c0, a0), (c1, a1) in zip(envelope, envelope[1:]):
        if a1 >= accuracy > a0:
            t = (accuracy - a0) / (a1 - a0)
            return math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0)))
    return None


def share_from(first: Path, folder: Path, names: tuple[str, ...] = SHARED) -> None:
    """Link ``names`` of a point that has run (or of another bench) into ``folder``, rather than curate the
    same sets and run the teacher over them again; what ``folder`` already has is kept."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        src, dst = first / name, folder / name
        if src.exists() and not os.path.lexists(dst):
            dst.symlink_to(os.path.relpath(src, folder))


def recorded_points(cfg: CurveConfig, digest: str) -> tuple[dict[int, CurvePoint], Optional[str]]:
    """The points of ``--recorded`` that this curve has, and when they were measured. A record of another
    curve (other knobs, seeds or target) is refused, naming each setting that differs: its points would
    not be this curve's."""
    if not cfg.recorded:
        return {}, None
    doc = load_doc(cfg.recorded, CurveResults)
    theirs = {**doc.config.model_dump(exclude=RECORD_FREE), "target_digest": doc.target_digest}
    mine = {**cfg.model_dump(exclude=RECORD_FREE), "target_digest": digest}
    diff = [f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(mine) | set(theirs))
            if theirs.get(k) != mine.get(k)]
    if diff:
        raise CuratorError(f"--recorded {cfg.recorded} holds another curve ({'; '.join(diff)}); its points are "
                           "not this one's")
    return {p.value: p for p in doc.points if p.value in cfg.values}, doc.created_at


def run_curve(cfg: CurveConfig, command: Optional[str] = None) -> CurveResults:
    """Every point's bench (each resumes) but those read from ``--recorded``, then ``curve-<axis>.json``,
    ``.md`` and ``.png`` in ``--out``."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    digest = target_digest(cfg.target)
    recorded, recorded_at = recorded_points(cfg, digest)
    points = []
    for value in cfg.values:
        if value in recorded:
            points.append(recorded[value])
            continue
        point_cfg = point_config(cfg, value)
        if AXES[cfg.axis].same_sets and value != cfg.values[0]:
            share_from(Path(point_config(cfg, cfg.values[0]).out), Path(point_cfg.out))
        results = run_kt(point_cfg)
        points.append(point(cfg, value, results))
    doc = CurveResults(config=cfg, x_label=AXES[cfg.axis].x_label, points=points, command=command,
                       compute_ratio=compute_ratio(points) if cfg.axis == "compute" else None,
                       wall_seconds=round(time.perf_counter() - t0, 1), target_digest=digest,
                       recorded_values=sorted(recorded), recorded_at=recorded_at if recorded else None)
    stem = out / f"curve-{cfg.axis}"
    save_doc(stem.with_suffix(".json"), doc)
    atomic.write_text(stem.with_suffix(".md"), markdown(doc))
    line_chart(doc, stem.with_suffix(".png"))
    return doc
