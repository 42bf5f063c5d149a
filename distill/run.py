"""``curator distill``: one run of a method (task-oriented, task-agnostic, supervised), with a report.

task-oriented (the paper): (a) adapt the teacher on the labelled set; (b) KL between teacher and
student task predictions on the same augmented views of the transfer set; (c) finetune.
task-agnostic (the paper's baseline): the student's features are matched to the frozen, unadapted
teacher's features on the transfer set with a contrastive (InfoNCE) loss; then finetune.
supervised: the student on the labelled set alone.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader

from curator import atomic
from curator.errors import CuratorError
from curator.formats import utcnow

from .data import ImageDataset, collate_skip_bad, load_labelled, open_transfer_set, transfer_items
from .models import Student, Teacher, count_params, flops_per_image
from .train import Logger, evaluate, forever, run_stage

REPORT_FORMAT = "curator.distill-report/1"


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labelled: str
    transfer: Optional[str] = None
    out: str
    method: Literal["task-oriented", "task-agnostic", "supervised"] = "task-oriented"
    teacher: str = "packaged:efficientnet-lite2"
    teacher_mode: Literal["linear", "finetune"] = "linear"
    student: str = "mobilenetv3_small_100"
    student_init: Literal["scratch", "imagenet"] = "scratch"
    student_size: int = Field(64, ge=16, le=512)
    labels_per_class: Optional[int] = Field(None, ge=1)
    val_per_class: int = Field(1, ge=0)
    steps_a: int = Field(150, ge=1)
    steps_b: int = Field(600, ge=1)
    steps_c: int = Field(150, ge=1)
    batch_size: int = Field(32, ge=1)
    lr_head: float = 1e-2
    lr_backbone: float = 1e-4
    lr_student: float = 2e-3
    lr_finetune: float = 5e-4
    temperature: float = Field(1.0, gt=0)
    workers: int = Field(0, ge=0)
    seed: int = 0
    device: str = "cpu"
    ckpt_every: int = Field(50, ge=1)
    token: Optional[str] = None
    progress: bool = True


def _loader(items, size, train, cfg, shuffle=True):
    g = torch.Generator().manual_seed(cfg.seed)
    return DataLoader(ImageDataset(items, size, train), batch_size=cfg.batch_size, shuffle=shuffle and train,
                      num_workers=cfg.workers, collate_fn=collate_skip_bad, generator=g,
                      drop_last=train and len(items) >= cfg.batch_size)  # steady batch statistics


def kd_loss(student_logits, teacher_logits, temperature: float) -> torch.Tensor:
    """Hinton KL between softened predictions, scaled by T^2 so gradients keep their size."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="batchmean") * t * t


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Symmetric CLIP-style contrastive loss: row i of a matches row i of b."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau
    target = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@torch.inference_mode()
def _latency_ms(model: nn.Module, size: int, repeats: int = 10) -> float:
    model.eval()
    x = torch.rand(1, 3, size, size)
    model(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        model(x)
    return round(1000 * (time.perf_counter() - t0) / repeats, 2)


def run_distill(cfg: DistillConfig) -> dict:
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(cfg.out)
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    if saved.exists() and json.loads(saved.read_text()) != cfg.model_dump(exclude={"progress", "token"}):
        raise CuratorError(f"{out} holds a run with another config; use a fresh --out to start over")
    atomic.write_json(saved, cfg.model_dump(exclude={"progress", "token"}))
    logger = Logger(out / "log.jsonl")
    data = load_labelled(cfg.labelled, labels_per_class=cfg.labels_per_class, val_per_class=cfg.val_per_class,
                         seed=cfg.seed)
    n_cls = len(data.classes)
    if not data.splits.get("train"):
        raise CuratorError(f"{cfg.labelled}: no training images")
    needs_teacher = cfg.method != "supervised"
    teacher = Teacher(cfg.teacher, n_cls, cfg.device) if needs_teacher else None
    view = teacher.size if teacher else cfg.student_size
    student = Student(cfg.student, n_cls, cfg.student_size, cfg.student_init)
    train = forever(_loader(data.splits["train"], view, True, cfg))
    evals = {s: _loader(data.splits[s], view, False, cfg) for s in ("val", "test") if data.splits.get(s)}
    report: dict = {"format": REPORT_FORMAT, "created_at": utcnow(), "config": cfg.model_dump(exclude={"token"}),
                    "data": data.describe(), "stages": {}, "teacher": None, "student": {}}
    common = dict(ckpt_dir=ckpt, logger=logger, ckpt_every=cfg.ckpt_every, progress=cfg.progress)

    def scores(model) -> dict:
        return {s: evaluate(model, loader, n_cls) for s, loader in evals.items()}

    def val_score(model):
        return lambda: (evaluate(model, evals["val"], n_cls) or {"accuracy": 0.0})["accuracy"] if "val" in evals else 0.0

    transfer = None
    if needs_teacher:
        if not cfg.transfer:
            raise CuratorError(f"--method {cfg.method} needs --transfer (a transfer-set folder or URL)")
        folder = open_transfer_set(cfg.transfer, out / "transfer-cache", cfg.token)
        transfer_list = transfer_items(folder)
        if not transfer_list:
            raise CuratorError(f"transfer set {folder} is empty")
        transfer = forever(_loader(transfer_list, view, True, cfg))
        report["data"]["transfer_images"] = len(transfer_list)

    if cfg.method == "task-oriented":
        # (a) adapt the teacher: head only (linear) or the whole network at a lower backbone lr
        for p in teacher.backbone.parameters():
            p.requires_grad_(cfg.teacher_mode == "finetune")
        groups = [{"params": teacher.head.parameters(), "lr": cfg.lr_head}]
        if cfg.teacher_mode == "finetune":
            groups.append({"params": teacher.backbone.parameters(), "lr": cfg.lr_backbone})
        if cfg.teacher_mode == "linear":
            teacher.backbone.eval()
        res = run_stage("a-teacher", {"teacher": teacher}, groups,
                        lambda b: F.cross_entropy(teacher(b[0]), b[1]), train, cfg.steps_a, cfg.lr_head,
                        select=val_score(teacher), **common)
        report["stages"]["a"] = res.__dict__
        report["teacher"] = {"spec": cfg.teacher, "mode": cfg.teacher_mode, **scores(teacher)}
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

        # (b) distil task predictions on the same augmented views of the transfer set
        def kd(batch):
            with torch.no_grad():
                t_logits = teacher(batch[0])
            return kd_loss(student(batch[0]), t_logits, cfg.temperature)
        res = run_stage("b-distill", {"student": student}, list(student.parameters()), kd, transfer, cfg.steps_b,
                        cfg.lr_student, **common)
        report["stages"]["b"] = {**res.__dict__, "teacher_forward_passes": res.images}
        report["student"]["after_b"] = scores(student)
    elif cfg.method == "task-agnostic":
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        student.eval()  # probe the pre-logit width (BatchNorm cannot train on one sample)
        with torch.no_grad():
            s_dim = student.features(torch.rand(1, 3, cfg.student_size, cfg.student_size)).shape[-1]
        proj = nn.Linear(s_dim, teacher.encoder.dim)

        def contrastive(batch):
            with torch.no_grad():
                t_feat = teacher.features(batch[0])
            return info_nce(proj(student.features(batch[0])), t_feat)
        res = run_stage("b-feature-distill", {"student": student, "proj": proj},
                        list(student.parameters()) + list(proj.parameters()), contrastive, transfer, cfg.steps_b,
                        cfg.lr_student, **common)
        report["stages"]["b"] = {**res.__dict__, "teacher_forward_passes": res.images}

    # (c) finetune the student on the labelled set (for supervised: its only stage, at the higher lr)
    lr_c = cfg.lr_student if cfg.method == "supervised" else cfg.lr_finetune
    res = run_stage("c-finetune", {"student": student}, list(student.parameters()),
                    lambda b: F.cross_entropy(student(b[0]), b[1]), train, cfg.steps_c, lr_c,
                    select=val_score(student), **common)
    report["stages"]["c"] = res.__dict__
    report["student"].update({"name": cfg.student, "size": cfg.student_size, "final": scores(student),
                              "params": count_params(student), "flops": flops_per_image(student, cfg.student_size),
                              "latency_ms_cpu_batch1": _latency_ms(student, cfg.student_size)})
    if teacher is not None:
        report["teacher"] = (report["teacher"] or {"spec": cfg.teacher, "mode": "frozen"}) | {
            "params": count_params(teacher), "flops": flops_per_image(teacher, teacher.size),
            "latency_ms_cpu_batch1": _latency_ms(teacher, teacher.size)}
    torch.save(student.state_dict(), out / "student.pt")
    report["wall_seconds"] = round(time.perf_counter() - t_start, 2)
    atomic.write_json(out / "report.json", report)
    return report
