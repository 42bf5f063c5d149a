"""The registry of distillation methods: what runs before the student's finetuning stage (c).

Each method is one function over a :class:`~distill.context.RunContext`, registered with
``@register_method``. The names are declared once, in ``curator.formats.Method`` (the core
validates configs without importing this wing); importing this module checks that every
declared method has exactly one implementation.

task-oriented (the paper): (a) adapt the teacher on the labelled set; (b) KL between teacher and
student task predictions on the same augmented views of the transfer set.
task-agnostic (the paper's baseline): the student's features are matched to the frozen, unadapted
teacher's features on the transfer set with a contrastive (InfoNCE) loss.
supervised: nothing before (c), which then trains on the labels alone at the student's higher rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, get_args

import torch
import torch.nn.functional as F
from torch import nn

from curator.errors import CuratorError
from curator.formats import Method, TeacherReport, TeacherView

from .cache import CachedViews
from .context import RunContext
from .losses import info_nce, joined, kd_loss, mix
from .models import Teacher
from .train import forever, run_stage


@dataclass(frozen=True)
class MethodSpec:
    name: str
    run: Callable[[RunContext], None]
    needs_teacher: bool      # and therefore a transfer set
    lr_c: str                # the DistillConfig field that sets stage (c)'s learning rate


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, *, needs_teacher: bool = True, lr_c: str = "lr_finetune"):
    def wrap(fn: Callable[[RunContext], None]) -> Callable[[RunContext], None]:
        if name not in get_args(Method):
            raise CuratorError(f"method {name!r} is not declared in curator.formats.Method")
        METHODS[name] = MethodSpec(name, fn, needs_teacher, lr_c)
        return fn
    return wrap


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise CuratorError(f"no implementation of method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


class _HeadOnFeatures(nn.Module):
    """A linear-probe teacher seen from cached backbone features: its head alone."""

    def __init__(self, teacher: Teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.teacher.logits_from_features(features)


def uncached_adaptation_passes(teacher_mode: str, steps: int, batch_size: int) -> int:
    """Stage (a)'s teacher forward-pass equivalents without a feature cache: the backbone sees every image
    of every step, and a backward pass through it (finetuned) costs about two forwards."""
    return steps * batch_size * (1 if teacher_mode == "linear" else 3)


def adapt_teacher(ctx: RunContext) -> None:
    """Stage (a): the head alone on a frozen backbone (linear), or everything at a lower backbone lr."""
    cfg, teacher = ctx.cfg, ctx.teacher
    linear = cfg.teacher_mode == "linear"
    for p in teacher.backbone.parameters():
        p.requires_grad_(not linear)
    groups = [{"params": teacher.head.parameters(), "lr": cfg.lr_head}]
    if not linear:
        groups.append({"params": teacher.backbone.parameters(), "lr": cfg.lr_backbone})
    if linear and ctx.cached:  # frozen backbone: the head trains on cached features of fixed views
        head = _HeadOnFeatures(teacher)
        train_views = ctx.features_of("train", True)
        train_t = forever(ctx.data_loader(CachedViews(train_views, "targets"), True), ctx.device)
        evals_t = {s: ctx.data_loader(CachedViews(ctx.features_of(s, False), "targets"), False) for s in ctx.evals_s}
        scored, loss_a = head, lambda b: F.cross_entropy(head(b[0]), b[1])
        passes = len(train_views)  # the backbone sees each cached view once; the head's cost is negligible
    else:
        train_t = forever(ctx.loader(ctx.data.splits["train"], ctx.view, True), ctx.device)
        evals_t = {s: ctx.loader(ctx.data.splits[s], ctx.view, False) for s in ctx.evals_s}
        scored, loss_a = teacher, lambda b: F.cross_entropy(teacher(b[0]), b[1])
        passes = uncached_adaptation_passes(cfg.teacher_mode, cfg.steps_a, cfg.batch_size)
    # a linear probe's backbone stays in eval mode while the head trains: its BatchNorm statistics
    # and dropout must not change, or the uncached teacher would differ from the cached one
    res = run_stage("a-teacher", {"teacher": teacher}, groups, loss_a, train_t, cfg.steps_a, cfg.lr_head,
                    select=ctx.val_score(scored, evals_t), frozen=[teacher.backbone] if linear else [], **ctx.common)
    ctx.record("a", res, teacher_forward_passes=passes)
    ctx.teacher_report = TeacherReport(spec=cfg.teacher, mode=cfg.teacher_mode, **ctx.scores(scored, evals_t))


@register_method("task-oriented")
def task_oriented(ctx: RunContext) -> None:
    cfg, teacher, student = ctx.cfg, ctx.teacher, ctx.student
    ctx.seed_stage(1)
    adapt_teacher(ctx)
    ctx.freeze_teacher()
    # (b) distil task predictions on the same augmented views of the transfer set
    ctx.seed_stage(2)
    loader, cache, targets = ctx.transfer_cache("features" if cfg.teacher_mode == "linear" else "logits")
    # a linear-probe teacher's cache holds backbone features: its predictions are its head on them
    to_logits = teacher.logits_from_features if cfg.teacher_mode == "linear" else (lambda t: t)

    def kd(batch, mixed=None, labels=None):
        if cache is None:
            with torch.no_grad():
                t_logits = teacher(batch[0])
        else:
            t_logits = to_logits(targets[batch[1]].float())
        logits = student(joined(batch[0], mixed, cfg.student_size))
        loss = kd_loss(logits[:len(t_logits)], t_logits, cfg.temperature)
        return loss if mixed is None else mix(loss, logits[len(t_logits):], labels, cfg.mix_labelled)
    res = run_stage("b-distill", {"student": student}, list(student.parameters()), ctx.with_labelled(kd),
                    forever(loader, ctx.device), cfg.steps_b, cfg.lr_student, **ctx.common)
    view = teacher_view(targets, to_logits, ctx.data.classes) if cache is not None else None
    ctx.record("b", res, teacher_forward_passes=res.images if cache is None else cache.passes,
               teacher_cache=cache and cache.path, teacher_view=view)
    ctx.after_b = ctx.scores(student, ctx.evals_s)


#: The teacher's top probability from which a view counts as on-task for the class it names.
CONFIDENT = 0.5


#: Cached views read at once by ``teacher_view``: a large set's float copy would double the cache's memory.
VIEW_BLOCK = 65_536


@torch.no_grad()
def teacher_view(targets: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                 classes: list[str]) -> TeacherView:
    """The adapted teacher's reading of every cached transfer view (``head`` turns a cached target into
    logits): whether retrieval found images the teacher recognises as the task's classes, measured
    against a random draw (``bench kt`` reports both)."""
    total, sure_total = torch.zeros(len(classes)), torch.zeros(len(classes))
    confidence = 0.0
    for start in range(0, len(targets), VIEW_BLOCK):
        top, cls = F.softmax(head(targets[start:start + VIEW_BLOCK].float()), dim=1).max(dim=1)
        confidence += float(top.sum())
        total += torch.bincount(cls.cpu(), minlength=len(classes)).float()
        sure_total += torch.bincount(cls[top >= CONFIDENT].cpu(), minlength=len(classes)).float()
    n = max(1, len(targets))
    return TeacherView(mean_confidence=round(confidence / n, 4), confident_share=round(float(sure_total.sum()) / n, 4),
                       class_share={c: round(float(total[i]) / n, 4) for i, c in enumerate(classes)},
                       confident_class_share={c: round(float(sure_total[i]) / n, 4) for i, c in enumerate(classes)})


@register_method("task-agnostic")
def task_agnostic(ctx: RunContext) -> None:
    cfg, teacher, student = ctx.cfg, ctx.teacher, ctx.student
    ctx.seed_stage(2)
    ctx.freeze_teacher()
    student.eval()  # probe the pre-logit width (BatchNorm cannot train on one sample)
    with torch.no_grad():
        s_dim = student.features(torch.rand(1, 3, cfg.student_size, cfg.student_size, device=ctx.device)).shape[-1]
    proj = nn.Linear(s_dim, teacher.encoder.dim).to(ctx.device)
    loader, cache, targets = ctx.transfer_cache("features")

    def contrastive(batch, mixed=None, labels=None):
        if cache is None:
            with torch.no_grad():
                t_feat = teacher.features(batch[0])
        else:
            t_feat = targets[batch[1]].float()
        feats = student.features(joined(batch[0], mixed, cfg.student_size))
        loss = info_nce(proj(feats[:len(t_feat)]), t_feat)
        if mixed is None:
            return loss
        return mix(loss, student.classify(feats[len(t_feat):]), labels, cfg.mix_labelled)
    res = run_stage("b-feature-distill", {"student": student, "proj": proj},
                    list(student.parameters()) + list(proj.parameters()), ctx.with_labelled(contrastive),
                    forever(loader, ctx.device), cfg.steps_b, cfg.lr_student, **ctx.common)
    ctx.record("b", res, teacher_forward_passes=res.images if cache is None else cache.passes,
               teacher_cache=cache and cache.path)


@register_method("supervised", needs_teacher=False, lr_c="lr_student")
def supervised(ctx: RunContext) -> None:
    """Nothing before stage (c): the labels are all it learns from."""


_missing = set(get_args(Method)) - set(METHODS)
if _missing:
    raise CuratorError(f"methods declared in curator.formats.Method without an implementation: {sorted(_missing)}")
