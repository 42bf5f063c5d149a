"""``curator distill``: one run of a registered method (``distill.methods``), then the student's
finetuning stage (c), the exported student and ``report.json``.

Everything a run needs is checked before anything is written to ``--out``: the labelled set, the
transfer set, the student's init and the teacher's weights. A folder that holds another run is
refused with the settings that differ, unless ``overwrite``.
"""
from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from curator.encoders import resolve_device
from curator.errors import CuratorError
from curator.formats import (DataSummary, DistillConfig, DistillReport, RunSettings, StudentReport, TeacherReport,
                             load_settings, save_doc)

from . import dist
from .context import RunContext
from .data import load_labelled, open_transfer_set, transfer_items
from .export import export_student, latency_ms
from .methods import get_method
from .models import Student, Teacher, count_params, flops_per_image
from .train import Logger, run_stage

#: What a run folder holds; ``overwrite`` removes exactly these.
RUN_FILES = ("config.json", "checkpoints", "log.jsonl", "student.pt", "student.pt2", "report.json")


def check_settings(out: Path, cfg: DistillConfig) -> None:
    """Refuse a folder that holds another run, naming each setting that differs (old -> new)."""
    saved = out / "config.json"
    if not saved.exists():
        return
    try:
        old = load_settings(saved, RunSettings).settings
    except CuratorError:
        old = {}
    new = cfg.settings()
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff:
        raise CuratorError(f"{out} holds a run with other settings ({'; '.join(diff)}); re-run with the same "
                           f"settings to resume, use another --out, or add --overwrite to start over")


def clear_run(out: Path) -> None:
    for name in RUN_FILES:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def run_distill(cfg: DistillConfig, overwrite: bool = False, label: str = "") -> DistillReport:
    """One run; under ``torchrun --nproc_per_node N`` it trains data-parallel on N processes.
    ``label`` prefixes its progress bars (e.g. which arm and seed of a bench)."""
    method = get_method(cfg.method)
    rank, world = dist.init_from_env(cfg.device)
    device = resolve_device(dist.local_device(cfg.device))
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(cfg.out)
    if not overwrite:
        check_settings(out, cfg)
    # -- every input checked before anything is written --------------------------------------
    if cfg.student_init not in ("scratch", "imagenet") and not Path(cfg.student_init).is_file():
        raise CuratorError(f"--student-init {cfg.student_init!r} is neither scratch, imagenet nor a checkpoint file")
    data = load_labelled(cfg.labelled, labels_per_class=cfg.labels_per_class, val_per_class=cfg.val_per_class,
                         seed=cfg.seed)
    if not data.splits.get("train"):
        raise CuratorError(f"--labelled {cfg.labelled}: no training images")
    if method.needs_teacher and not cfg.transfer:
        raise CuratorError(f"--method {cfg.method} needs --transfer (a transfer-set folder or URL)")
    folder = open_transfer_set(cfg.transfer, out / "transfer-cache", cfg.token) if method.needs_teacher else None
    transfer = transfer_items(folder) if folder else None
    if folder and not transfer:
        raise CuratorError(f"--transfer {cfg.transfer}: the transfer set is empty")
    n_cls = len(data.classes)
    teacher = Teacher(cfg.teacher, n_cls, str(device)).to(device) if method.needs_teacher else None
    student = Student(cfg.student, n_cls, cfg.student_size, cfg.student_init).to(device)
    # -- the run -----------------------------------------------------------------------------
    if overwrite and dist.is_main():
        clear_run(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    dist.barrier()  # every rank has compared against the old config before rank 0 rewrites it
    if dist.is_main():
        save_doc(out / "config.json", RunSettings(settings=cfg.settings()))
    # convnets run faster NHWC: on tensor cores, and in oneDNN on CPUs (a timm student's step on 2 cores:
    # 1.8-2.1x on an AVX512 CPU, 1.0-1.3x on an AVX2 one); finish() exports a contiguous copy
    student = student.to(memory_format=torch.channels_last)
    ctx = RunContext(cfg, device, out, data, student, teacher, transfer, folder, Logger(out / "log.jsonl"),
                     label=label)
    method.run(ctx)
    finetune(ctx, getattr(cfg, method.lr_c))
    return finish(ctx, world, time.perf_counter() - t_start)


def finetune(ctx: RunContext, lr: float) -> None:
    """Stage (c): the student on the labelled set (for supervised, its only stage)."""
    ctx.seed_stage(3)
    student = ctx.student
    res = run_stage("c-finetune", {"student": student}, list(student.parameters()),
                    lambda b: F.cross_entropy(student(b[0]), b[1]), ctx.train_s, ctx.cfg.steps_c, lr,
                    select=ctx.val_score(student, ctx.evals_s), **ctx.common)
    ctx.record("c", res)


def finish(ctx: RunContext, world: int, elapsed: float) -> DistillReport:
    """Score, measure, save and export the student; write report.json (rank 0)."""
    cfg, device = ctx.cfg, ctx.device
    final = ctx.scores(ctx.student, ctx.evals_s)
    # the student is deployed on CPUs: it is measured, saved and exported as a CPU fp32 copy
    student = copy.deepcopy(ctx.student).to("cpu", memory_format=torch.contiguous_format).float()
    exported: Optional[str] = None
    if dist.is_main():
        torch.save(student.state_dict(), ctx.out / "student.pt")
        if cfg.export:
            exported = export_student(student, cfg.student_size, ctx.out / "student.pt2")
    report = DistillReport(
        config=cfg.model_copy(update={"token": None}),
        data=DataSummary(**ctx.data.describe(), transfer_images=len(ctx.transfer) if ctx.transfer else None),
        stages=ctx.stages, teacher=_teacher_report(ctx), world_size=world,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        student=StudentReport(name=cfg.student, size=cfg.student_size, final=final, after_b=ctx.after_b,
                              params=count_params(student), flops=flops_per_image(student, cfg.student_size),
                              latency_ms_cpu_batch1=latency_ms(student, cfg.student_size), exported=exported),
        wall_seconds=round(elapsed, 2) if dist.is_main() else None)
    if dist.is_main():
        save_doc(ctx.out / "report.json", report)
    dist.barrier()
    return report


def _teacher_report(ctx: RunContext) -> Optional[TeacherReport]:
    teacher = ctx.teacher
    if teacher is None:
        return None
    base = ctx.teacher_report or TeacherReport(spec=ctx.cfg.teacher, mode="frozen")
    return base.model_copy(update={"params": count_params(teacher), "flops": flops_per_image(teacher, teacher.size),
                                   "latency_ms_batch1": latency_ms(teacher, teacher.size),
                                   "latency_device": ctx.device.type})
