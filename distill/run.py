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

from . import dist
from .data import (FixedViewDataset, ImageDataset, collate_skip_bad, load_labelled, open_transfer_set,
                   transfer_items)
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
    cache_teacher: int = Field(0, ge=0, le=64, description="fixed views per transfer image whose teacher outputs "
                                                          "are cached and reused (0: teacher runs online)")
    workers: int = Field(0, ge=0)
    seed: int = 0
    device: str = "cpu"
    ckpt_every: int = Field(50, ge=1)
    token: Optional[str] = None
    progress: bool = True


def _loader(items, size, train, cfg, shuffle=True):
    return _data_loader(ImageDataset(items, size, train), train and shuffle, cfg)


def _data_loader(dataset, train: bool, cfg) -> DataLoader:
    """Training loaders shard each epoch across ranks (one shard when not distributed)."""
    from torch.utils.data.distributed import DistributedSampler

    sampler = None
    if train and dist.world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed, drop_last=True)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=cfg.workers, collate_fn=collate_skip_bad,
                      generator=torch.Generator().manual_seed(cfg.seed),
                      drop_last=train and len(dataset) >= cfg.batch_size * dist.world_size())


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


def teacher_key(teacher: Teacher) -> str:
    """Hash of the adapted teacher's weights: caches from another teacher are never reused."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def teacher_cache(teacher: Teacher, items: list, folder: Path, out: Path, size: int,
                  cfg: DistillConfig) -> tuple[np.ndarray, int, str]:
    """Teacher logits for every fixed view, computed once and stored beside the transfer set.

    Returns (logits, teacher forward passes spent now, cache path). Keyed by the teacher's
    weights, the view count, size and seed; written atomically, so concurrent students agree.
    """
    name = f"{teacher_key(teacher)}-v{cfg.cache_teacher}-s{size}-seed{cfg.seed}.npy"
    target = folder / "teacher-cache" / name
    try:
        target.parent.mkdir(exist_ok=True)
    except OSError:  # a read-only transfer set: keep the cache with the run instead
        target = out / "teacher-cache" / name
        target.parent.mkdir(parents=True, exist_ok=True)
    if not dist.is_main():  # rank 0 fills the cache; the others wait and read it
        dist.barrier()
        return np.load(target), 0, str(target)
    if target.exists():
        dist.barrier()
        return np.load(target), 0, str(target)
    views = FixedViewDataset(items, size, cfg.cache_teacher, cfg.seed)
    logits = np.zeros((len(views), teacher.head.out_features), dtype=np.float16)
    loader = DataLoader(views, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=collate_skip_bad)
    passes = 0
    for batch, ks, _ in loader:
        if batch is not None:
            logits[ks.numpy()] = teacher(batch).float().numpy()
            passes += len(batch)
    atomic.write_npy(target, logits)
    dist.barrier()
    return logits, passes, str(target)


def export_student(student: Student, size: int, path: Path) -> str:
    """The student as a ``torch.export`` program (input: [0, 1] RGB at ``size``, any batch size;
    normalisation built in), checked to reproduce the eager model's logits before it is written."""
    student.eval()
    example = torch.rand(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(student, (example,), dynamic_shapes={"views": {0: batch}})
    with torch.inference_mode():
        same = torch.allclose(program.module()(example[:1]), student(example[:1]), atol=1e-4, rtol=1e-4)
    if not same:
        raise CuratorError("the exported student does not reproduce the eager model; not exported")
    atomic.write_with(path, lambda p: torch.export.save(program, str(p)))
    return str(path)


def run_distill(cfg: DistillConfig) -> dict:
    """One run; under ``torchrun --nproc_per_node N`` it trains data-parallel on N processes."""
    rank, world = dist.init_from_env(cfg.device)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(cfg.out)
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    if saved.exists() and json.loads(saved.read_text()) != cfg.model_dump(exclude={"progress", "token"}):
        raise CuratorError(f"{out} holds a run with another config; use a fresh --out to start over")
    dist.barrier()  # every rank has compared against the old config before rank 0 rewrites it
    if dist.is_main():
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
    common = dict(ckpt_dir=ckpt, logger=logger, ckpt_every=cfg.ckpt_every, progress=cfg.progress and dist.is_main())

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

    def seed_stage(n: int) -> None:
        """Each stage's randomness depends on the seed alone, not on what ran before it (e.g. which
        student was built): the same teacher is then adapted the same way, and its cache reused."""
        torch.manual_seed(cfg.seed * 1000 + n)
        np.random.seed(cfg.seed * 1000 + n)

    if cfg.method == "task-oriented":
        seed_stage(1)
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
        seed_stage(2)
        if cfg.cache_teacher:
            cache, passes, cache_file = teacher_cache(teacher, transfer_list, folder, out, view, cfg)
            batches = forever(_data_loader(FixedViewDataset(transfer_list, view, cfg.cache_teacher, cfg.seed), True, cfg))

            def kd(batch):
                return kd_loss(student(batch[0]), torch.from_numpy(cache[batch[1].numpy()]).float(), cfg.temperature)
        else:
            passes, cache_file, batches = None, None, transfer

            def kd(batch):
                with torch.no_grad():
                    t_logits = teacher(batch[0])
                return kd_loss(student(batch[0]), t_logits, cfg.temperature)
        res = run_stage("b-distill", {"student": student}, list(student.parameters()), kd, batches, cfg.steps_b,
                        cfg.lr_student, **common)
        report["stages"]["b"] = {**res.__dict__, "teacher_forward_passes": res.images if passes is None else passes,
                                 "teacher_cache": cache_file}
        report["student"]["after_b"] = scores(student)
    elif cfg.method == "task-agnostic":
        seed_stage(2)
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
    seed_stage(3)
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
    report["world_size"] = world
    if dist.is_main():
        torch.save(student.state_dict(), out / "student.pt")
        report["student"]["exported"] = export_student(student, cfg.student_size, out / "student.pt2")
        report["wall_seconds"] = round(time.perf_counter() - t_start, 2)
        atomic.write_json(out / "report.json", report)
    dist.barrier()
    return report
