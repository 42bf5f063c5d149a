"""Distillation's documents: a run's config (what ``curator distill`` and a distill job take)
and its report.

The config lives in the core, not in the distill wing, so the service can validate a job's
config when it is submitted instead of letting a typo fail later inside a worker.
"""
from __future__ import annotations

import copy
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..specs import TEACHER_ENCODER
from .base import Doc, FiniteFloat, utcnow

CONFIG_FORMAT = "curator.distill-config/1"
REPORT_FORMAT = "curator.distill-report/1"
#: The methods a run can use; ``distill.methods`` registers one implementation for each.
Method = Literal["task-oriented", "task-agnostic", "supervised"]
#: Fields a run's machine chooses (paths, hardware, credentials): a distill job may not set them,
#: and resuming a run on other hardware is not a change of config.
MACHINE_FIELDS = frozenset({"labelled", "transfer", "out", "token", "progress", "cache_dir", "device", "workers", "amp",
                            "export"})


class ModelChoice(Doc):
    """The teacher and the student: chosen alike by ``curator distill`` and every arm of ``bench kt``."""
    teacher: str = Field(TEACHER_ENCODER, description="encoder spec of the VFM")
    teacher_mode: Literal["linear", "finetune"] = Field("linear", description="adapt the head only, or everything")
    student: str = Field("mobilenetv3_small_100", description="any timm model name")
    student_init: str = Field("scratch", description="scratch, imagenet (packaged weights work offline for "
                                                     "tf_efficientnet_lite0/2), or a checkpoint path (same architecture)")
    student_size: int = Field(64, ge=16, le=512, description="student input resolution")


class Training(ModelChoice):
    """The training knobs a ``curator distill`` run and every arm of ``curator bench kt`` share, declared
    once; a document whose protocol wants another default takes the field with ``default_of``."""
    steps_a: int = Field(150, ge=1, le=10_000_000, description="stage (a): teacher adaptation steps")
    steps_b: int = Field(600, ge=1, le=10_000_000, description="stage (b): distillation steps")
    steps_c: int = Field(150, ge=1, le=10_000_000, description="stage (c): student finetuning steps (the supervised "
                                                              "method's only stage)")
    batch_size: int = Field(32, ge=1, le=65_536)
    lr_student: FiniteFloat = Field(2e-3, gt=0, description="student learning rate in stage (b)")
    lr_finetune: FiniteFloat = Field(5e-4, gt=0, description="student learning rate in stage (c)")
    temperature: FiniteFloat = Field(1.0, gt=0, description="KD temperature")
    mix_labelled: FiniteFloat = Field(0.0, ge=0.0, lt=1.0, description="share of each stage-(b) batch drawn from the "
                                                                      "labelled images, trained with cross-entropy")
    workers: int = Field(0, ge=0, le=256, description="image-decoding processes per loader")
    device: str = Field("cpu", description="cpu, cuda or cuda:N (under torchrun, cuda is each rank's own GPU)")
    progress: bool = True


#: The fields a bench arm hands to its distill run as they are.
TRAINING_FIELDS = frozenset(Training.model_fields)


def default_of(model: type[BaseModel], name: str, default: Any) -> Any:
    """``model``'s field ``name`` (type, bounds, description) with another default, for a subclass
    whose protocol differs: the field is still declared once."""
    info = copy.copy(model.model_fields[name])
    info.default = default
    return info


class DistillConfig(Training):
    """One ``curator distill`` run. The CLI's flags and their defaults are generated from here."""
    labelled: str = Field(description="folder with train/ (val/, test/) class folders; a folder of class folders "
                                      "(with --labels-per-class); or a CSV/parquet path,label[,split]")
    transfer: Optional[str] = Field(None, description="transfer-set folder, or http://HOST:PORT/transfer-sets/ID")
    out: str = Field(description="run folder: checkpoints, log, student, report (re-running resumes)")
    method: Method = Field("task-oriented", description="task-oriented (the paper), task-agnostic or supervised")
    labels_per_class: Optional[int] = Field(None, ge=1, description="seeded split of a flat class-folder set")
    val_per_class: int = Field(1, ge=0, description="val images per class in a seeded split")
    lr_head: FiniteFloat = Field(1e-2, gt=0, description="teacher head learning rate")
    lr_backbone: FiniteFloat = Field(1e-4, gt=0, description="teacher backbone learning rate (finetune mode)")
    cache_teacher: int = Field(0, ge=0, le=64, description="fixed views per transfer image whose teacher outputs "
                                                           "are cached and reused (0: teacher runs online)")
    cache_dir: Optional[str] = Field(None, description="where view caches go (default: beside the transfer set)")
    view_seed: int = Field(0, ge=0, description="seed of the cached views (independent of --seed: seeds share caches)")
    seed: int = Field(0, ge=0)
    amp: bool = Field(True, description="bf16 autocast and channels_last on CUDA (no effect on CPU)")
    ckpt_every: int = Field(50, ge=1, description="checkpoint every N steps")
    token: Optional[str] = Field(None, description="API key for a transfer-set URL")
    export: bool = Field(True, description="also write the student as a torch.export program (student.pt2); a "
                                           "bench's many runs skip it, their student.pt is kept")

    def settings(self) -> dict:
        """What makes two runs the same run: the config less the machine's own choices."""
        return self.model_dump(exclude=MACHINE_FIELDS - {"labelled", "transfer", "out"})


class RunSettings(Doc):
    """A run folder's ``config.json``: the settings it was started with (``DistillConfig.settings``), so a
    re-run with other settings is refused rather than resumed into a mixed run."""
    format: Literal["curator.distill-config/1"] = CONFIG_FORMAT
    settings: dict[str, Any]


class Scores(Doc):
    accuracy: float
    mean_per_class_accuracy: float
    n: int


Split = dict[str, Optional[Scores]]


class TeacherView(Doc):
    """What the adapted teacher makes of a transfer set's views: how sure it is, and of which classes.
    A view it is sure of (top probability >= CONFIDENT) is on-task for the class it names."""
    mean_confidence: float
    confident_share: float
    class_share: dict[str, float] = Field(description="share of views whose top class is this one")
    confident_class_share: dict[str, float] = Field(description="share of views the teacher is sure are this class")


class StageReport(Doc):
    steps: int
    seconds: float
    images: int
    resumed_from: int
    teacher_forward_passes: Optional[int] = None
    teacher_cache: Optional[str] = None
    teacher_view: Optional[TeacherView] = None


class TeacherReport(Doc):
    spec: str
    mode: str
    val: Optional[Scores] = None
    test: Optional[Scores] = None
    params: Optional[int] = None
    flops: Optional[int] = None
    latency_ms_batch1: Optional[float] = None
    latency_device: Optional[str] = Field(None, description="where latency_ms_batch1 was measured (cpu or cuda)")


class StudentReport(Doc):
    name: str
    size: int
    final: Split
    after_b: Optional[Split] = None
    params: int
    flops: int
    latency_ms_cpu_batch1: float
    exported: Optional[str] = None


class DataSummary(Doc):
    model_config = ConfigDict(extra="allow")   # a labelled table may name splits of its own
    classes: list[str]
    transfer_images: Optional[int] = None


class DistillReport(Doc):
    format: Literal["curator.distill-report/1"] = REPORT_FORMAT
    created_at: str = Field(default_factory=utcnow)
    config: DistillConfig
    data: DataSummary
    stages: dict[str, StageReport]
    teacher: Optional[TeacherReport] = None
    student: StudentReport
    world_size: int = 1
    device: str = "cpu"
    wall_seconds: Optional[float] = None
