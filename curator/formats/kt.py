"""``curator bench kt``'s documents: the bench's config and its results.

KTConfig's defaults run the public protocol (Tux Paint against openclipart + Oxygen icons) within an
hour on 2 CPU cores, index build included (docs/benchmarks.md, knowledge transfer, has the measured
time); the CLI's flags are generated from it.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, PositiveInt, field_validator, model_validator

from .base import Doc, FiniteFloat, utcnow
from .distill import Training, TeacherView, default_of
from .index import SkippedItem

RESULTS_FORMAT = "curator.kt-bench/1"
SETTINGS_FORMAT = "curator.kt-settings/1"
SKIPPED_FORMAT = "curator.skipped-images/1"
CURVE_FORMAT = "curator.kt-curve/1"
#: Each curve's points when --values is not given: transfer-set sizes from 400 up, the paper's labels per
#: class, and distillation steps around the bench's default of 500.
CURVE_VALUES = {"size": [400, 800, 1600, 3200], "labels": [2, 5, 10, 25], "compute": [125, 250, 500, 1000]}


class KTConfig(Training):
    """The bench's knobs, shared by every arm (the teacher and student too)."""
    target: str = Field(description="folder with one sub-folder of images per class")
    index: str = Field(description="an existing build-index folder for the pool (default: OUT/index, built once)")
    out: str = Field("bench-out/kt", description="working folder")
    index_encoder: Optional[str] = Field(None, description="encoder of the pool index, when the bench builds it "
                                                         "(default: the teacher's own backbone)")
    # the bench's student starts from ImageNet: from scratch, no ordering of the arms beats seed noise
    # at this scale (docs/benchmarks.md, kt); ``curator distill`` keeps ModelChoice's defaults
    student: str = default_of(Training, "student", "tf_efficientnet_lite0")
    student_init: str = default_of(Training, "student_init", "imagenet")
    labels_per_class: int = Field(5, ge=1, description="labelled train images per class")
    val_per_class: int = Field(2, ge=1, description="val images per class; val picks checkpoints, never test")
    split_seed: int = Field(0, ge=0, description="seed of the train/val/test split")
    budget: int = Field(1600, ge=1, le=10_000_000, description="transfer-set size, retrieved and random alike")
    seeds: int = Field(3, ge=1, le=1000, description="training seeds per arm; more seeds on the same --out reuse "
                                                      "the finished ones")
    crops: int = Field(0, ge=0, le=16, description="extra random crops of each labelled image as retrieval queries "
                                                   "(the paper's image-crop retrieval)")
    cache_views: int = Field(2, ge=1, le=64, description="fixed augmented views per transfer image")
    steps_a: int = default_of(Training, "steps_a", 300)
    steps_b: int = default_of(Training, "steps_b", 500)
    steps_c: int = default_of(Training, "steps_c", 200)
    batch_size: int = default_of(Training, "batch_size", 64)
    mix_labelled: FiniteFloat = default_of(Training, "mix_labelled", 0.25)
    exclude_threshold: FiniteFloat = Field(0.95, gt=0, le=1, description="cosine at which a pool image counts as a "
                                                                         "val/test image")
    jobs: Optional[int] = Field(None, ge=1, le=64, description="runs trained at once, each on an equal share of the "
                                                            "cores (default: 2 on a CPU with 2+ cores, else 1: two "
                                                            "runs on a thread each train faster than one on both)")
    arms: Optional[list[Literal["supervised", "supervised-scratch", "task-agnostic", "task-oriented-random"]]] = Field(
        None, description="trained arms to run beside task-oriented-retrieved (the paper's, which every comparison "
                          "is against, with the teacher); default: all. A bench may run more arms later")

    @property
    def pool_encoder(self) -> str:
        """The encoder the bench indexes the pool with: retrieval by the teacher's own features finds
        what the teacher knows (docs/benchmarks.md, kt-lite2: retrieved beat random at 2.3 standard errors
        with the teacher's index, 1.4 with Lite0's)."""
        return self.index_encoder or self.teacher


class KtSettings(Doc):
    """A bench folder's ``kt-config.json``: what makes two benches the same bench, so that only more
    seeds extend a folder."""
    format: Literal["curator.kt-settings/1"] = SETTINGS_FORMAT
    settings: dict[str, Any]


class SkippedImages(Doc):
    """A bench folder's ``skipped.json``: target images left out of the split (they do not decode)."""
    format: Literal["curator.skipped-images/1"] = SKIPPED_FORMAT
    items: list[SkippedItem] = Field(default_factory=list)


class Stats(Doc):
    mean: float
    std: float
    values: list[float]


class ArmResult(Doc):
    test_accuracy: Stats
    test_mean_per_class_accuracy: Stats
    val_accuracy: Stats
    teacher_forward_passes: Optional[int] = None
    teacher_adaptation_passes: Optional[int] = Field(
        None, description="stage (a)'s teacher forward-pass equivalents (backward counted as two), task-oriented arms")
    student_steps: int
    wall_seconds: Optional[float] = None


class Paired(Doc):
    """Per-seed differences in one metric between two arms that share each seed."""
    mean_difference: float
    sem: Optional[float] = None
    wins: int
    seeds: int


class KtResults(Doc):
    format: Literal["curator.kt-bench/1"] = RESULTS_FORMAT
    created_at: str = Field(default_factory=utcnow)
    config: KTConfig
    arms: dict[str, ArmResult]
    orderings: dict[str, bool]
    paired: dict[str, dict[str, Paired]]
    transfer_sets: dict[str, dict[str, Optional[int]]]
    student: dict[str, Any]
    teacher: dict[str, Any]
    wall_seconds: float
    command: Optional[str] = None
    on_task: dict[str, TeacherView] = Field(default_factory=dict, description="per transfer set, what the adapted "
                                            "teacher makes of its views, averaged over the seeds' task-oriented runs")
    skipped_images: list[SkippedItem] = Field(default_factory=list,
                                              description="target images left out of the split (undecodable), why")


class CurveConfig(KTConfig):
    """A curve: one kt bench per value of one knob (``OUT/<axis>-<value>``), every other knob shared."""
    axis: Literal["size", "labels", "compute"] = Field(
        description="size: transfer-set size, retrieved vs random; labels: labelled images per class, task-oriented "
                    "vs supervised; compute: distillation steps, as pretraining FLOPs, task-oriented vs task-agnostic")
    values: Optional[list[PositiveInt]] = Field(
        None, description="the knob's values (default per axis: size " + " ".join(map(str, CURVE_VALUES["size"]))
        + "; labels " + " ".join(map(str, CURVE_VALUES["labels"])) + "; compute "
        + " ".join(map(str, CURVE_VALUES["compute"])) + " distillation steps)")
    out: str = Field("bench-out/curves", description="working folder; the three axes can share it (and its index)")
    recorded: Optional[str] = Field(None, description="an earlier curve-AXIS.json: its points are kept, not run "
                                                      "again, when its settings are these (a curve measured in "
                                                      "parts, on other machines)")

    @field_validator("values")
    @classmethod
    def _two_or_more(cls, values: Optional[list[int]]) -> Optional[list[int]]:
        if values is not None and len(set(values)) < 2:
            raise ValueError("a curve needs at least two different values")
        return sorted(set(values)) if values is not None else None

    @model_validator(mode="after")
    def _axis_values(self) -> "CurveConfig":
        """No --values: the axis' own defaults."""
        if self.values is None:
            self.values = list(CURVE_VALUES[self.axis])
        return self


class CurvePoint(Doc):
    """One bench of the curve: each arm's test accuracy over seeds at its x (the knob's value, the
    transfer set's actual size, or pretraining GFLOPs), and the paper's arm minus the other, paired."""
    value: int
    x: dict[str, float]
    arms: dict[str, Stats]
    paired: dict[str, Paired]
    test_images: Optional[int] = Field(
        None, description="the point's test set: more labels per class take test images from small classes, so "
                          "the labels curve's points are scored on shrinking (nested) test sets")


class CurveResults(Doc):
    format: Literal["curator.kt-curve/1"] = CURVE_FORMAT
    created_at: str = Field(default_factory=utcnow)
    config: CurveConfig
    x_label: str
    points: list[CurvePoint]
    compute_ratio: Optional[float] = Field(
        None, description="compute axis: at best, how many times the pretraining FLOPs task-agnostic distillation "
                          "needs to match task-oriented's accuracy (None: it never does, or another axis)")
    wall_seconds: float
    command: Optional[str] = None
    target_digest: Optional[str] = Field(None, description="the target's content (kt-config.json's): a recorded "
                                                           "curve is extended only on the same target")
    recorded_values: list[int] = Field(default_factory=list, description="points read from --recorded, not run here")
    recorded_at: Optional[str] = Field(None, description="created_at of the --recorded curve they were read from")
