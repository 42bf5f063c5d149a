"""Versioned documents, validated with pydantic at every boundary; ``docs/formats.md`` describes
them in prose. One module per wing's documents, all defined in the core so that any wing (and
the service) can read and validate any of them."""
from .base import (Doc, FiniteFloat, describe_errors, dump_doc, iso, load_doc, load_settings, parse_doc, save_doc,
                   utcnow)
from .curate import (JOB_INPUTS_FORMAT, MAX_IMAGES, TRANSFER_FORMAT, CurateParams, IndexRef, JobInputs,
                     QueryEntry, ShardEntry, TransferCounts, TransferManifest)
from .distill import (MACHINE_FIELDS, REPORT_FORMAT as DISTILL_REPORT_FORMAT, DataSummary, DistillConfig,
                      DistillReport, Method, RunSettings, Scores, StageReport, StudentReport, TeacherReport, TeacherView)
from .index import (GENERATION_START_FORMAT, INDEX_FORMAT, INDEX_ITEM_SCHEMA, INDEX_MANIFEST_NAME, ITEM_SCHEMA, PLAN_FORMAT,
                    REPORT_FORMAT, SHARD_FORMAT, BuildConfig, BuildPlan, BuildReport, EncoderInfo, IndexManifest, LinksInfo,
                    GenerationStart, ShardDone, ShardTask, SkippedItem, default_workers,
                    parse_bytes)
from .service import Limits, ServiceSettings
from .bench import BENCH_RECORD_FORMAT, BenchRecord
from .kt import (CURVE_FORMAT, CURVE_VALUES, RESULTS_FORMAT, ArmResult, CurveConfig, CurvePoint, CurveResults,
                 KTConfig, KtResults, KtSettings, Paired, SkippedImages, Stats)
from .view import MAP_FORMAT, VIEW_FORMAT, MapPoint, SetMap, SetView, ViewItem, ViewQuery

__all__ = [
    "Doc", "FiniteFloat", "describe_errors", "dump_doc", "iso", "load_doc", "load_settings", "parse_doc", "save_doc", "utcnow",
    "JOB_INPUTS_FORMAT", "MAX_IMAGES", "TRANSFER_FORMAT", "CurateParams", "IndexRef", "JobInputs", "QueryEntry",
    "ShardEntry", "TransferCounts", "TransferManifest",
    "MACHINE_FIELDS", "DISTILL_REPORT_FORMAT", "DataSummary", "DistillConfig", "DistillReport", "Method", "RunSettings", "Scores",
    "StageReport", "StudentReport", "TeacherReport", "TeacherView",
    "GENERATION_START_FORMAT", "GenerationStart", "INDEX_FORMAT", "INDEX_ITEM_SCHEMA", "INDEX_MANIFEST_NAME", "ITEM_SCHEMA", "PLAN_FORMAT", "REPORT_FORMAT",
    "SHARD_FORMAT", "BuildConfig", "default_workers", "parse_bytes", "Limits", "ServiceSettings", "BENCH_RECORD_FORMAT", "BenchRecord", "BuildPlan", "BuildReport", "EncoderInfo", "IndexManifest", "LinksInfo", "ShardDone", "ShardTask",
    "SkippedItem",
    "RESULTS_FORMAT", "ArmResult", "KTConfig", "KtResults", "KtSettings", "Paired", "SkippedImages", "Stats",
    "CURVE_FORMAT", "CURVE_VALUES", "CurveConfig", "CurvePoint", "CurveResults",
    "MAP_FORMAT", "VIEW_FORMAT", "MapPoint", "SetMap", "SetView", "ViewItem", "ViewQuery",
]
