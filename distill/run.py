"""``curator distill``: one run of a method (task-oriented, task-agnostic, supervised), with a report.

task-oriented (the paper): (a) adapt the teacher on the labelled set; (b) KL between teacher and
student task predictions on the same augmented views of the transfer set; (c) finetune.
task-agnostic (the paper's baseline): the student's features are matched to the frozen, unadapted
teacher's features on the transfer set with a contrastive (InfoNCE) loss; then finetune.
supervised: the student on the labelled set alone.
"""
from __future__ import annotations

import copy
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.utils.data import DataLoader

from curator import atomic
from curator.encoders import resolve_device
from curator.errors import CuratorError
from curator.formats import utcnow

from . import dist
from .cache import CachedViews, view_cache
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
    student_init: str = Field("scratch", description="scratch, imagenet, or a checkpoint path (same architecture)")
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
    cache_dir: Optional[str] = Field(None, description="where view caches go (default: beside the transfer set)")
    view_seed: int = Field(0, description="seed of the cached views (independent of --seed: seeds share caches)")
    mix_labelled: float = Field(0.0, ge=0.0, lt=1.0, description="share of each stage-(b) batch drawn from the "
                                                               "labelled images, trained with cross-entropy")
    workers: int = Field(0, ge=0)
    seed: int = 0
    device: str = Field("cpu", description="cpu, cuda or cuda:N (under torchrun, cuda is each rank's own GPU)")
    amp: bool = Field(True, description="bf16 autocast and channels_last on CUDA (no effect on CPU)")
    ckpt_every: int = Field(50, ge=1)
    token: Optional[str] = None
    progress: bool = True

    @field_validator("student_init")
    @classmethod
    def _init_exists(cls, value: str) -> str:
        if value not in ("scratch", "imagenet") and not Path(value).is_file():
            raise ValueError(f"{value!r} is neither scratch, imagenet nor a checkpoint file")
        return value


def _loader(items, size, train, cfg, memo: bool = True):
    """Labelled images are few and seen every epoch: decoded once (memo); transfer images are
    many and decoded as they stream (``memo=False``)."""
    return _data_loader(ImageDataset(items, size, train, memo=memo), train, cfg)


def _data_loader(dataset, train: bool, cfg, batch_size: Optional[int] = None) -> DataLoader:
    """Training loaders shard each epoch across ranks (one shard when not distributed)."""
    from torch.utils.data.distributed import DistributedSampler

    sampler = None
    if train and dist.world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed, drop_last=True)
    batch_size = batch_size or cfg.batch_size
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=cfg.workers, collate_fn=collate_skip_bad, pin_memory=cfg.device.startswith("cuda"),
                      # a labelled set smaller than a batch is a new epoch every step: without persistent
                      # workers each step would fork them all again (minutes, from a process holding a GPU)
                      persistent_workers=cfg.workers > 0,
                      generator=torch.Generator().manual_seed(cfg.seed),
                      drop_last=train and len(dataset) >= batch_size * dist.world_size())


def kd_loss(student_logits, teacher_logits, temperature: float) -> torch.Tensor:
    """Hinton KL between softened predictions, scaled by T^2 so gradients keep their size."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="batchmean") * t * t


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Symmetric CLIP-style contrastive loss: row i of a matches row i of b."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@torch.inference_mode()
def _latency_ms(model: nn.Module, size: int, repeats: int = 10) -> float:
    """Batch-1 latency on the device the model sits on (the student is measured on a CPU copy)."""
    model.eval()
    x = torch.rand(1, 3, size, size, device=next(model.parameters()).device)
    model(x)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        model(x)
    sync()
    return round(1000 * (time.perf_counter() - t0) / repeats, 2)


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


def _joined(views: torch.Tensor, mixed: Optional[torch.Tensor], size: int) -> torch.Tensor:
    """Transfer views and mixed-in labelled views as one batch, at the student's size."""
    if mixed is None:
        return views
    if views.shape[-1] != size:
        views = F.interpolate(views, size=(size, size), mode="bilinear", antialias=True)
    return torch.cat([views, mixed])


def _mix(transfer_loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, share: float) -> torch.Tensor:
    return (1 - share) * transfer_loss + share * F.cross_entropy(logits, labels)


def _cache_folder(cfg: DistillConfig, preferred: Path, out: Path) -> Path:
    """Where view caches go: --cache-dir, else beside the data (``preferred``), else with the run
    (a read-only transfer set)."""
    folder = Path(cfg.cache_dir) if cfg.cache_dir else preferred
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:
        return out / "teacher-cache"


class _HeadOnFeatures(nn.Module):
    """A linear-probe teacher seen from cached backbone features: its head alone."""

    def __init__(self, teacher: Teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.teacher.logits_from_features(features)


def run_distill(cfg: DistillConfig) -> dict:
    """One run; under ``torchrun --nproc_per_node N`` it trains data-parallel on N processes."""
    rank, world = dist.init_from_env(cfg.device)
    device = resolve_device(dist.local_device(cfg.device))
    gpu = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if gpu and cfg.amp else nullcontext
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
    cached = cfg.cache_teacher > 0
    teacher = Teacher(cfg.teacher, n_cls, str(device)).to(device) if needs_teacher else None
    view = teacher.size if teacher else cfg.student_size
    student = Student(cfg.student, n_cls, cfg.student_size, cfg.student_init).to(device)
    if gpu and cfg.amp:  # convnets run faster NHWC on tensor cores
        student = student.to(memory_format=torch.channels_last)
    # the student always trains and is scored on views made at its own size, whatever the method
    train_s = forever(_loader(data.splits["train"], cfg.student_size, True, cfg), device)
    evals_s = {s: _loader(data.splits[s], cfg.student_size, False, cfg)
               for s in ("val", "test") if data.splits.get(s)}
    report: dict = {"format": REPORT_FORMAT, "created_at": utcnow(), "config": cfg.model_dump(exclude={"token"}),
                    "data": data.describe(), "stages": {}, "teacher": None, "student": {}}
    common = dict(ckpt_dir=ckpt, logger=logger, ckpt_every=cfg.ckpt_every, progress=cfg.progress and dist.is_main(),
                  autocast=autocast)
    # one decode worker at least: decoding overlaps the teacher's forward passes
    cache_opts = dict(student_size=cfg.student_size, view_seed=cfg.view_seed, batch_size=cfg.batch_size,
                      workers=max(1, cfg.workers), progress=cfg.progress and dist.is_main(), autocast=autocast)

    def scores(model, evals) -> dict:
        return {s: evaluate(model, loader, n_cls, device, autocast) for s, loader in evals.items()}

    def val_score(model, evals):
        def score() -> float:
            return (evaluate(model, evals["val"], n_cls, device, autocast) or {"accuracy": 0.0})["accuracy"]
        return score if "val" in evals else (lambda: 0.0)

    transfer_list, folder = None, None
    if needs_teacher:
        if not cfg.transfer:
            raise CuratorError(f"--method {cfg.method} needs --transfer (a transfer-set folder or URL)")
        folder = open_transfer_set(cfg.transfer, out / "transfer-cache", cfg.token)
        transfer_list = transfer_items(folder)
        if not transfer_list:
            raise CuratorError(f"transfer set {folder} is empty")
        report["data"]["transfer_images"] = len(transfer_list)

    def seed_stage(n: int) -> None:
        """Each stage's randomness depends on the seed alone, not on what ran before it (e.g. which
        student was built): the same teacher is then adapted the same way, and its cache reused."""
        torch.manual_seed(cfg.seed * 1000 + n)
        np.random.seed(cfg.seed * 1000 + n)

    def transfer_cache(kind: str):
        """(dataset of the transfer views, cache or None, passes, cache path)."""
        if not cached:
            return _loader(transfer_list, view, True, cfg, memo=False), None, None
        cache = dist.main_first(lambda: view_cache(teacher, transfer_list, _cache_folder(
            cfg, folder / "teacher-cache", out), kind=kind, views=cfg.cache_teacher, **cache_opts))
        # the targets live where the student trains: a batch's rows are then one gather
        targets = torch.from_numpy(cache.targets).to(device)
        return _data_loader(CachedViews(cache), True, cfg), cache, targets

    labelled_cache = _cache_folder(cfg, out / "teacher-cache", out) if cached else None

    def features_of(split: str, augment: bool):
        """Backbone features (and student-size pixels) of fixed views of a labelled split."""
        return dist.main_first(lambda: view_cache(teacher, data.splits[split], labelled_cache, kind="features",
                                                  views=max(8, cfg.cache_teacher), augment=augment, **cache_opts))

    def with_labelled(loss_fn):
        """Stage (b)'s loss on the transfer batch, plus cross-entropy on labelled views mixed into
        every batch (``mix_labelled``): one forward pass over both, so BatchNorm sees one batch."""
        n_mix = round(cfg.mix_labelled * cfg.batch_size)
        if not n_mix:
            return lambda batch: loss_fn(batch, None)
        labelled = (CachedViews(features_of("train", True), "labelled") if cached
                    else ImageDataset(data.splits["train"], cfg.student_size, True, memo=True))
        mixed = forever(_data_loader(labelled, True, cfg, batch_size=n_mix), device)

        def loss(batch):
            views, labels = next(mixed)[:2]
            return loss_fn(batch, views, labels)
        return loss

    linear_cached = cached and cfg.teacher_mode == "linear"
    if cfg.method == "task-oriented":
        seed_stage(1)
        # (a) adapt the teacher: head only (linear) or the whole network at a lower backbone lr
        for p in teacher.backbone.parameters():
            p.requires_grad_(cfg.teacher_mode == "finetune")
        groups = [{"params": teacher.head.parameters(), "lr": cfg.lr_head}]
        if cfg.teacher_mode == "finetune":
            groups.append({"params": teacher.backbone.parameters(), "lr": cfg.lr_backbone})
        teacher.backbone.eval() if cfg.teacher_mode == "linear" else None
        if linear_cached:  # frozen backbone: the head trains on cached features of fixed views
            head = _HeadOnFeatures(teacher)
            train_t = forever(_data_loader(CachedViews(features_of("train", True), "targets"), True, cfg), device)
            evals_t = {s: _data_loader(CachedViews(features_of(s, False), "targets"), False, cfg) for s in evals_s}
            scored, loss_a = head, lambda b: F.cross_entropy(head(b[0]), b[1])
        else:
            train_t = forever(_loader(data.splits["train"], view, True, cfg), device)
            evals_t = {s: _loader(data.splits[s], view, False, cfg) for s in evals_s}
            scored, loss_a = teacher, lambda b: F.cross_entropy(teacher(b[0]), b[1])
        res = run_stage("a-teacher", {"teacher": teacher}, groups, loss_a, train_t, cfg.steps_a, cfg.lr_head,
                        select=val_score(scored, evals_t), **common)
        report["stages"]["a"] = res.__dict__
        report["teacher"] = {"spec": cfg.teacher, "mode": cfg.teacher_mode, **scores(scored, evals_t)}
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

        # (b) distil task predictions on the same augmented views of the transfer set
        seed_stage(2)
        loader, cache, targets = transfer_cache("features" if cfg.teacher_mode == "linear" else "logits")

        def kd(batch, mixed=None, labels=None):
            if cache is None:
                with torch.no_grad():
                    t_logits = teacher(batch[0])
            else:
                t_logits = targets[batch[1]].float()
                if cfg.teacher_mode == "linear":
                    t_logits = teacher.logits_from_features(t_logits)
            logits = student(_joined(batch[0], mixed, cfg.student_size))
            loss = kd_loss(logits[:len(t_logits)], t_logits, cfg.temperature)
            return loss if mixed is None else _mix(loss, logits[len(t_logits):], labels, cfg.mix_labelled)
        res = run_stage("b-distill", {"student": student}, list(student.parameters()), with_labelled(kd),
                        forever(loader, device), cfg.steps_b, cfg.lr_student, **common)
        report["stages"]["b"] = {**res.__dict__, "teacher_forward_passes": res.images if cache is None else cache.passes,
                                 "teacher_cache": cache and cache.path}
        report["student"]["after_b"] = scores(student, evals_s)
    elif cfg.method == "task-agnostic":
        seed_stage(2)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        student.eval()  # probe the pre-logit width (BatchNorm cannot train on one sample)
        with torch.no_grad():
            s_dim = student.features(torch.rand(1, 3, cfg.student_size, cfg.student_size, device=device)).shape[-1]
        proj = nn.Linear(s_dim, teacher.encoder.dim).to(device)
        loader, cache, targets = transfer_cache("features")

        def contrastive(batch, mixed=None, labels=None):
            if cache is None:
                with torch.no_grad():
                    t_feat = teacher.features(batch[0])
            else:
                t_feat = targets[batch[1]].float()
            feats = student.features(_joined(batch[0], mixed, cfg.student_size))
            loss = info_nce(proj(feats[:len(t_feat)]), t_feat)
            if mixed is None:
                return loss
            return _mix(loss, student.classify(feats[len(t_feat):]), labels, cfg.mix_labelled)
        res = run_stage("b-feature-distill", {"student": student, "proj": proj},
                        list(student.parameters()) + list(proj.parameters()), with_labelled(contrastive),
                        forever(loader, device), cfg.steps_b, cfg.lr_student, **common)
        report["stages"]["b"] = {**res.__dict__, "teacher_forward_passes": res.images if cache is None else cache.passes,
                                 "teacher_cache": cache and cache.path}

    # (c) finetune the student on the labelled set (for supervised: its only stage, at the higher lr)
    seed_stage(3)
    lr_c = cfg.lr_student if cfg.method == "supervised" else cfg.lr_finetune
    res = run_stage("c-finetune", {"student": student}, list(student.parameters()),
                    lambda b: F.cross_entropy(student(b[0]), b[1]), train_s, cfg.steps_c, lr_c,
                    select=val_score(student, evals_s), **common)
    report["stages"]["c"] = res.__dict__
    final = scores(student, evals_s)
    # the student is deployed on CPUs: it is measured, saved and exported as a CPU fp32 copy
    student = copy.deepcopy(student).to("cpu", memory_format=torch.contiguous_format).float()
    report["student"].update({"name": cfg.student, "size": cfg.student_size, "final": final,
                              "params": count_params(student), "flops": flops_per_image(student, cfg.student_size),
                              "latency_ms_cpu_batch1": _latency_ms(student, cfg.student_size)})
    if teacher is not None:
        report["teacher"] = (report["teacher"] or {"spec": cfg.teacher, "mode": "frozen"}) | {
            "params": count_params(teacher), "flops": flops_per_image(teacher, teacher.size),
            f"latency_ms_{device.type}_batch1": _latency_ms(teacher, teacher.size)}
    report["world_size"] = world
    report["device"] = torch.cuda.get_device_name(device) if gpu else "cpu"
    if dist.is_main():
        torch.save(student.state_dict(), out / "student.pt")
        report["student"]["exported"] = export_student(student, cfg.student_size, out / "student.pt2")
        report["wall_seconds"] = round(time.perf_counter() - t_start, 2)
        atomic.write_json(out / "report.json", report)
    dist.barrier()
    return report
