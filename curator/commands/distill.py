"""``curator distill``: one knowledge-transfer run; flags generated from ``DistillConfig``."""
from __future__ import annotations

import argparse
import json
import os

from ..formats import DistillConfig, dump_doc
from .flags import add_model_flags, build_model

DESCRIPTION = """task-oriented (the paper): (a) adapt the teacher on the labelled set, (b) distil its task
predictions into the student on the same augmented views of the transfer set, (c) finetune the student.
task-agnostic: contrastive feature matching to the frozen teacher, then finetune. supervised: labels only.
Re-running the same command resumes from the last checkpoint."""
SKIP = {"progress", "token"}


def add_parser(sub) -> None:
    p = sub.add_parser("distill", help="train a small student from a VFM teacher on a transfer set (task-oriented KT)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p, DistillConfig, [f for f in DistillConfig.model_fields if f not in SKIP],
                    required=("labelled", "out"))
    p.add_argument("--token", default=os.environ.get("CURATOR_TOKEN"),
                   help="API key for a transfer-set URL (default: $CURATOR_TOKEN)")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run in --out and start over")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from distill import run_distill

    cfg = build_model(DistillConfig, args, progress=not args.json)
    report = run_distill(cfg, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(dump_doc(report), indent=2))
        return 0
    final = report.student.final.get("test")
    teacher = report.teacher.test if report.teacher else None
    print(f"{cfg.method}: student {cfg.student} test accuracy {final and final.accuracy} "
          f"(mean per class {final and final.mean_per_class_accuracy}); teacher {teacher and teacher.accuracy}; "
          f"report in {os.path.join(cfg.out, 'report.json')}")
    return 0
