"""``curator bench kt``: the paper's comparison, end to end, on any target/pool pair.

One seeded split of the target (few labels per class + val; the rest is test) drives five
arms that share the student, its schedule and the transfer-set size:

1. ``supervised``: the student on the labelled images alone;
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
import json
import statistics
import time
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from curator import atomic
from curator.curate import curate
from curator.errors import CuratorError
from curator.formats import CurateParams, utcnow
from curator.queries import Query, embed_queries
from curator.retrieval import PoolIndex

from .data import load_labelled
from .run import DistillConfig, run_distill

RESULTS_FORMAT = "curator.kt-bench/1"
ARMS = ("supervised", "task-agnostic", "task-oriented-random", "task-oriented-retrieved", "teacher")
#: (method, transfer set) of each trained arm; the teacher arm is read from arm 4's reports
RUNS = {"supervised": ("supervised", None), "task-agnostic": ("task-agnostic", "retrieved"),
        "task-oriented-random": ("task-oriented", "random"),
        "task-oriented-retrieved": ("task-oriented", "retrieved")}


class KTConfig(BaseModel):
    """The bench's knobs. Defaults fit the public protocol in 45 minutes on 2 CPU cores."""
    model_config = ConfigDict(extra="forbid")
    target: str
    index: str
    out: str
    labels_per_class: int = Field(5, ge=1)
    val_per_class: int = Field(2, ge=1)
    split_seed: int = 0
    budget: int = Field(1600, ge=1, description="transfer-set size (retrieved and random alike)")
    seeds: int = Field(3, ge=1)
    teacher: str = "packaged:efficientnet-lite2"
    teacher_mode: str = "linear"
    student: str = "mobilenetv3_small_100"
    student_init: str = Field("scratch", description="scratch, imagenet, or a checkpoint path; every arm alike")
    student_size: int = 64
    cache_views: int = Field(2, ge=1, description="fixed augmented views per transfer image")
    steps_a: int = 300
    steps_b: int = 500
    steps_c: int = 200
    batch_size: int = 64
    lr_student: float = 2e-3
    lr_finetune: float = 5e-4
    temperature: float = 1.0
    mix_labelled: float = Field(0.25, description="share of each distillation batch from the labelled images")
    exclude_threshold: float = Field(0.95, description="cosine at which a pool image counts as a val/test image")
    device: str = Field("cpu", description="where every arm trains (cpu, cuda, cuda:N)")
    workers: int = Field(0, ge=0, description="image-decoding processes per loader (0: in the training process)")
    progress: bool = True


def write_split(cfg: KTConfig, out: Path) -> Path:
    """The seeded split as ``split.csv`` (path,label,split): every arm reads this one file."""
    path = out / "split.csv"
    if path.exists():
        return path
    data = load_labelled(cfg.target, labels_per_class=cfg.labels_per_class, val_per_class=cfg.val_per_class,
                         seed=cfg.split_seed)
    rows = [(str(Path(ref).resolve()), data.classes[label], split)
            for split in ("train", "val", "test") for ref, label in data.splits[split]]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "split"])
            w.writerows(rows)
    atomic.write_with(path, write)
    return path


def curate_sets(cfg: KTConfig, split: Path, out: Path) -> dict[str, dict]:
    """The retrieved (balanced) and random transfer sets, same size, same exclusions."""
    sets = out / "sets"
    manifests = {name: sets / name / "manifest.json" for name in ("retrieved", "random")}
    if all(p.exists() for p in manifests.values()):
        return {name: json.loads(p.read_text()) for name, p in manifests.items()}
    data = load_labelled(split)
    pool = PoolIndex.open(cfg.index)

    def queries(split_name: str) -> list[Query]:
        return [Query(Path(ref).name, Path(ref).read_bytes(), data.classes[label])
                for ref, label in data.splits[split_name]]
    train, held_out = queries("train"), queries("val") + queries("test")
    q_vecs, _ = embed_queries(pool.encoder(), train)
    x_vecs, _ = embed_queries(pool.encoder(), held_out)
    common = dict(query_vectors=q_vecs, exclude_vectors=x_vecs)
    result = {}
    for name, strategy in (("retrieved", "balanced"), ("random", "random")):
        budget = cfg.budget if name == "retrieved" else result["retrieved"]["counts"]["emitted"]
        if manifests[name].exists():
            result[name] = json.loads(manifests[name].read_text())
            continue
        params = CurateParams(strategy=strategy, budget=budget, exclude_threshold=cfg.exclude_threshold,
                              seed=cfg.split_seed)
        result[name] = curate(pool, train, params, sets, set_id=name, **common)
    return result


def run_arm(cfg: KTConfig, arm: str, seed: int, split: Path, out: Path) -> dict:
    method, transfer = RUNS[arm]
    run_dir = out / "runs" / arm / f"seed{seed}"
    if (run_dir / "report.json").exists():
        return json.loads((run_dir / "report.json").read_text())
    # the supervised arm trains as many student steps as the others (b + c), all on the labels
    steps_c = cfg.steps_c + (cfg.steps_b if method == "supervised" else 0)
    dc = DistillConfig(labelled=str(split), transfer=str(out / "sets" / transfer) if transfer else None,
                       out=str(run_dir), method=method, teacher=cfg.teacher, teacher_mode=cfg.teacher_mode,
                       student=cfg.student, student_init=cfg.student_init, student_size=cfg.student_size,
                       steps_a=cfg.steps_a, steps_b=cfg.steps_b,
                       steps_c=steps_c, mix_labelled=cfg.mix_labelled, batch_size=cfg.batch_size, lr_student=cfg.lr_student,
                       lr_finetune=cfg.lr_finetune, temperature=cfg.temperature,
                       cache_teacher=cfg.cache_views if method != "supervised" else 0,
                       cache_dir=str(out / "cache"), seed=seed, ckpt_every=max(50, cfg.steps_b // 8),
                       device=cfg.device, workers=cfg.workers,
                       progress=cfg.progress)
    return run_distill(dc)


def _stats(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, "values": values}


def _paired(mine: list[float], theirs: list[float]) -> dict:
    """Per-seed differences in test accuracy (the arms share each seed), so a reader can tell a lead
    from seed noise: the mean difference, its standard error, and the seeds it wins."""
    diffs = [a - b for a, b in zip(mine, theirs)]
    sem = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
    return {"mean_difference": round(statistics.fmean(diffs), 4), "sem": round(sem, 4) if sem is not None else None,
            "wins": sum(d > 0 for d in diffs), "seeds": len(diffs)}


def summarise(cfg: KTConfig, reports: dict[str, list[dict]], sets: dict[str, dict], wall: float) -> dict:
    """results.json: per arm, test (and val) accuracy over seeds, and what each arm cost."""
    arms: dict[str, dict] = {}
    for arm, runs in reports.items():
        if arm == "teacher":
            finals = [r["teacher"] for r in runs]
            compute = {"teacher_forward_passes": None, "student_steps": 0, "wall_seconds": None}
        else:
            finals = [r["student"]["final"] for r in runs]
            transfer = RUNS[arm][1]
            # the teacher labels each transfer view once; every seed (and arm) on that set reuses it
            views = sets[transfer]["counts"]["emitted"] * cfg.cache_views if transfer else 0
            compute = {"teacher_forward_passes": views,
                       "student_steps": sum(r["stages"].get("b", {}).get("steps", 0) + r["stages"]["c"]["steps"]
                                            for r in runs) // len(runs),
                       "wall_seconds": round(sum(r["wall_seconds"] for r in runs), 1)}
        arms[arm] = {"test_accuracy": _stats([f["test"]["accuracy"] for f in finals]),
                     "test_mean_per_class_accuracy": _stats([f["test"]["mean_per_class_accuracy"] for f in finals]),
                     "val_accuracy": _stats([f["val"]["accuracy"] for f in finals]), **compute}
    mean = {a: arms[a]["test_accuracy"]["mean"] for a in arms}
    paper, others = "task-oriented-retrieved", ("supervised", "task-agnostic", "task-oriented-random")
    return {"format": RESULTS_FORMAT, "created_at": utcnow(), "config": cfg.model_dump(), "arms": arms,
            "orderings": {f"{paper} > {other}": mean[paper] > mean[other] for other in others},
            "paired": {f"{paper} - {other}": {metric: _paired(arms[paper][metric]["values"], arms[other][metric]["values"])
                                              for metric in ("test_accuracy", "test_mean_per_class_accuracy")}
                       for other in others},
            "transfer_sets": {name: {"images": m["counts"]["emitted"], "excluded": m["counts"].get("excluded"),
                                     "deduped": m["counts"].get("deduped")} for name, m in sets.items()},
            "student": {k: reports["supervised"][0]["student"][k] for k in ("name", "size", "params", "flops",
                                                                              "latency_ms_cpu_batch1")},
            "teacher": {k: reports["task-oriented-retrieved"][0]["teacher"].get(k)
                        for k in ("spec", "mode", "params", "flops", "latency_ms_cpu_batch1")},
            "wall_seconds": round(wall, 1)}


def markdown(results: dict, command: Optional[str] = None) -> str:
    rows = ["| arm | test accuracy | test mean per-class | val accuracy | teacher passes | student steps "
            "| wall s (all seeds) |", "|---|---|---|---|---|---|---|"]
    for arm, r in results["arms"].items():
        def fmt(s):
            return f"{s['mean']:.3f} ± {s['std']:.3f}"
        rows.append(f"| {arm} | {fmt(r['test_accuracy'])} | {fmt(r['test_mean_per_class_accuracy'])} "
                    f"| {fmt(r['val_accuracy'])} | {r['teacher_forward_passes'] if r['teacher_forward_passes'] is not None else '–'} "
                    f"| {r['student_steps']} | {r['wall_seconds'] if r['wall_seconds'] is not None else '–'} |")
    checks = "\n".join(f"- {k}: {'holds' if v else '**does not hold**'} in the mean; {_paired_text(d)}"
                       for (k, v), d in zip(results["orderings"].items(), results["paired"].values()))
    c = results["config"]
    head = (f"Target `{c['target']}`, {c['labels_per_class']} labels per class, {c['seeds']} seeds (mean ± std); "
            f"teacher `{c['teacher']}` ({c['teacher_mode']}); student `{c['student']}` at {c['student_size']} px; "
            f"transfer sets: " + ", ".join(f"{k} {v['images']}" for k, v in results["transfer_sets"].items())
            + f"; total wall {results['wall_seconds']} s.")
    cmd = f"\n\n```\n{command}\n```" if command else ""
    return f"{head}{cmd}\n\n" + "\n".join(rows) + "\n\n" + checks + "\n"


def _paired_text(pair: dict) -> str:
    def one(d: dict) -> str:
        sem = f" ± {d['sem']:.3f} (s.e.)" if d["sem"] is not None else ""
        return f"{d['mean_difference']:+.3f}{sem}, ahead on {d['wins']} of {d['seeds']} seeds"
    return (f"paired difference in accuracy {one(pair['test_accuracy'])}; in mean per-class accuracy "
            f"{one(pair['test_mean_per_class_accuracy'])}")


def bar_chart(results: dict, path: Path) -> None:
    """Test accuracy per arm with ±1 std error bars, as a PNG (Pillow only)."""
    from PIL import Image, ImageDraw

    arms = list(results["arms"])
    w, h, left, bottom, top = 160 * len(arms) + 80, 420, 60, 60, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    plot_h = h - bottom - top

    def y(v: float) -> float:
        return h - bottom - v * plot_h
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        d.line([(left, y(tick)), (w - 20, y(tick))], fill=(225, 225, 225))
        d.text((10, y(tick) - 6), f"{tick:.2f}", fill="black")
    colours = [(150, 150, 150), (120, 160, 210), (240, 170, 90), (60, 150, 90), (110, 90, 170)]
    for i, arm in enumerate(arms):
        s = results["arms"][arm]["test_accuracy"]
        x0 = left + 20 + i * 160
        d.rectangle([x0, y(s["mean"]), x0 + 100, y(0)], fill=colours[i % len(colours)])
        lo, hi = max(0.0, s["mean"] - s["std"]), min(1.0, s["mean"] + s["std"])
        d.line([(x0 + 50, y(lo)), (x0 + 50, y(hi))], fill="black", width=2)
        for v in (lo, hi):
            d.line([(x0 + 40, y(v)), (x0 + 60, y(v))], fill="black", width=2)
        d.text((x0 + 30, y(s["mean"]) - 22), f"{s['mean']:.3f}", fill="black")
        for j, part in enumerate(arm.replace("task-oriented-", "task-oriented\n").split("\n")):
            d.text((x0, h - bottom + 8 + 14 * j), part, fill="black")
    d.text((left, 12), "test accuracy (mean ± std over seeds)", fill="black")
    atomic.write_with(path, lambda p: img.save(p, format="PNG"))


def _saved_config(path: Path, mine: dict) -> dict:
    """A saved kt-config without ``seeds``; knobs added to KTConfig since it was written read as
    their defaults, so an older finished bench stays extendable."""
    saved = {k: v for k, v in json.loads(path.read_text()).items() if k != "seeds"}
    return {**{k: KTConfig.model_fields[k].default for k in mine if k not in saved}, **saved}


def run_kt(cfg: KTConfig, command: Optional[str] = None) -> dict:
    """The whole bench; returns results.json's content (also written with results.md, chart.png)."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "kt-config.json"
    # more seeds extend a finished bench (its runs are reused); any other change starts over
    mine = cfg.model_dump(exclude={"progress", "seeds"})
    if saved.exists() and _saved_config(saved, mine) != mine:
        raise CuratorError(f"{out} holds a bench with another config; use a fresh --out to start over "
                           "(only --seeds may change: more seeds reuse the finished ones)")
    atomic.write_json(saved, mine)
    split = write_split(cfg, out)
    sets = curate_sets(cfg, split, out)
    if not sets["retrieved"]["counts"]["emitted"]:
        raise CuratorError("retrieval returned no images: is the pool index empty?")
    reports: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in range(cfg.seeds):
        for arm in RUNS:
            reports[arm].append(run_arm(cfg, arm, seed, split, out))
        reports["teacher"].append(reports["task-oriented-retrieved"][-1])
    results = summarise(cfg, reports, sets, time.perf_counter() - t0)
    results["command"] = command
    atomic.write_json(out / "results.json", results)
    atomic.write_text(out / "results.md", markdown(results, command))
    bar_chart(results, out / "chart.png")
    return results
