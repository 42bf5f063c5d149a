"""A run's shared state, handed to each registered method: data, models, loaders, and the
helpers every stage uses (scoring, view caches, mixing labelled views into a batch)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from curator.formats import DistillConfig, StageReport, TeacherReport

from . import dist
from .cache import CachedViews, view_cache
from .data import ImageDataset, LabelledSet, collate_skip_bad
from .depthwise import small_map_depthwise
from .models import Student, Teacher
from .train import Logger, StageResult, evaluate, forever


def _forward_mode(gpu: bool, amp: bool) -> Callable[[], ContextManager]:
    """How forwards run on the run's device: bf16 autocast on CUDA (``amp``); on CPUs, depthwise
    convolutions on small maps take a faster gradient and channels_last pads a faster route
    (``depthwise.py``; docs/benchmarks.md *student-step*)."""
    if gpu:
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else nullcontext
    return small_map_depthwise


@dataclass
class RunContext:
    cfg: DistillConfig
    device: torch.device
    out: Path
    data: LabelledSet
    student: Student
    teacher: Optional[Teacher] = None
    transfer: Optional[list] = None           # the transfer set's images, as ((tar, offset, size), -1)
    transfer_folder: Optional[Path] = None
    logger: Optional[Logger] = None
    stages: dict[str, StageReport] = field(default_factory=dict)
    teacher_report: Optional[TeacherReport] = None
    after_b: Optional[dict] = None
    label: str = ""                           # prefixes progress bars (bench kt: which arm and seed)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.n_cls = len(self.data.classes)
        gpu = self.device.type == "cuda"
        self.forward_mode = _forward_mode(gpu, cfg.amp)
        self.view = self.teacher.size if self.teacher else cfg.student_size
        # the student always trains and is scored on views made at its own size, whatever the method
        self.train_s = forever(self.loader(self.data.splits["train"], cfg.student_size, True), self.device)
        self.evals_s = {s: self.loader(self.data.splits[s], cfg.student_size, False)
                        for s in ("val", "test") if self.data.splits.get(s)}
        self.common = dict(ckpt_dir=self.out / "checkpoints", logger=self.logger, ckpt_every=cfg.ckpt_every,
                           progress=cfg.progress and dist.is_main(), forward_mode=self.forward_mode,
                           progress_label=self.label)
        # one decode worker at least: decoding overlaps the teacher's forward passes
        self.cache_opts = dict(student_size=cfg.student_size, view_seed=cfg.view_seed, batch_size=cfg.batch_size,
                               workers=max(1, cfg.workers), progress=cfg.progress and dist.is_main(),
                               forward_mode=self.forward_mode)

    # -- loaders -------------------------------------------------------------------------
    def loader(self, items, size: int, train: bool, memo: bool = True) -> DataLoader:
        """Labelled images are few and seen every epoch: decoded once (memo); transfer images are
        many and decoded as they stream (``memo=False``)."""
        return self.data_loader(ImageDataset(items, size, train, memo=memo), train)

    def data_loader(self, dataset, train: bool, batch_size: Optional[int] = None) -> DataLoader:
        """Training loaders shard each epoch across ranks (one shard when not distributed)."""
        from torch.utils.data.distributed import DistributedSampler

        cfg = self.cfg
        sampler = None
        if train and dist.world_size() > 1:
            sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed, drop_last=True)
        batch_size = batch_size or cfg.batch_size
        return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                          num_workers=cfg.workers, collate_fn=collate_skip_bad,
                          pin_memory=cfg.device.startswith("cuda"),
                          # a labelled set smaller than a batch is a new epoch every step: without persistent
                          # workers each step would fork them all again (minutes, from a process holding a GPU)
                          persistent_workers=cfg.workers > 0,
                          generator=torch.Generator().manual_seed(cfg.seed),
                          drop_last=train and len(dataset) >= batch_size * dist.world_size())

    # -- scoring -------------------------------------------------------------------------
    def scores(self, model, evals) -> dict:
        return {s: evaluate(model, loader, self.n_cls, self.device, self.forward_mode) for s, loader in evals.items()}

    def val_score(self, model, evals) -> Callable[[], float]:
        def score() -> float:
            return (evaluate(model, evals["val"], self.n_cls, self.device, self.forward_mode) or {"accuracy": 0.0})[
                "accuracy"]
        return score if "val" in evals else (lambda: 0.0)

    def record(self, stage: str, result: StageResult, **extra) -> None:
        self.stages[stage] = StageReport(**result.__dict__, **extra)

    def seed_stage(self, n: int) -> None:
        """Each stage's randomness depends on the seed alone, not on what ran before it (e.g. which
        student was built): the same teacher is then adapted the same way, and its cache reused."""
        torch.manual_seed(self.cfg.seed * 1000 + n)
        np.random.seed(self.cfg.seed * 1000 + n)

    def freeze_teacher(self) -> None:
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    # -- view caches ---------------------------------------------------------------------
    @property
    def cached(self) -> bool:
        return self.cfg.cache_teacher > 0

    def cache_folder(self, preferred: Path) -> Path:
        """Where view caches go: --cache-dir, else beside the data (``preferred``), else with the run
        (a read-only transfer set)."""
        folder = Path(self.cfg.cache_dir) if self.cfg.cache_dir else preferred
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        except OSError:
            return self.out / "teacher-cache"

    def transfer_cache(self, kind: str):
        """(loader of the transfer views, cache or None, the cached targets on the device)."""
        if not self.cached:
            return self.loader(self.transfer, self.view, True, memo=False), None, None
        folder = self.cache_folder(self.transfer_folder / "teacher-cache")
        cache = dist.main_first(lambda: view_cache(self.teacher, self.transfer, folder, kind=kind,
                                                   views=self.cfg.cache_teacher, **self.cache_opts))
        # the targets live where the student trains: a batch's rows are then one gather
        targets = torch.from_numpy(cache.targets).to(self.device)
        return self.data_loader(CachedViews(cache), True), cache, targets

    def features_of(self, split: str, augment: bool):
        """Backbone features (and student-size pixels) of fixed views of a labelled split."""
        folder = self.cache_folder(self.out / "teacher-cache")
        return dist.main_first(lambda: view_cache(self.teacher, self.data.splits[split], folder, kind="features",
                                                  views=max(8, self.cfg.cache_teacher), augment=augment,
                                                  **self.cache_opts))

    def with_labelled(self, loss_fn):
        """Stage (b)'s loss on the transfer batch, plus cross-entropy on labelled views mixed into
        every batch (``mix_labelled``): one forward pass over both, so BatchNorm sees one batch."""
        cfg = self.cfg
        n_mix = round(cfg.mix_labelled * cfg.batch_size)
        if not n_mix:
            return lambda batch: loss_fn(batch, None)
        labelled = (CachedViews(self.features_of("train", True), "labelled") if self.cached
                    else ImageDataset(self.data.splits["train"], cfg.student_size, True, memo=True))
        mixed = forever(self.data_loader(labelled, True, batch_size=n_mix), self.device)

        def loss(batch):
            views, labels = next(mixed)[:2]
            return loss_fn(batch, views, labels)
        return loss
