"""``curator bench kt``: the paper's comparison; flags generated from ``KTConfig``."""
from __future__ import annotations

import argparse
import json
import os
import shlex

from ..errors import CuratorError
from ..formats import CurveConfig, KTConfig, dump_doc
from .flags import add_model_flags, build_model

DESCRIPTION = ("Split the target (few labels per class, val, test), index the pool, curate a retrieved and a "
               "random transfer set of the same size (val/test excluded), train every arm over several seeds, "
               "and write results.json, results.md and chart.png. Every step resumes.")
CURVE_DESCRIPTION = ("One kt bench per value of one knob, in OUT/AXIS-VALUE, each running only the two arms its "
                     "curve compares, then curve-AXIS.json, .md and .png in OUT. Every point resumes; more --seeds "
                     "extend them all.")
EPILOG = ("Without --target/--pool it runs the public protocol: the Tux Paint stamps (15 categories) against "
          "openclipart + Oxygen icons (~10k images), fetched with 'curator samples fetch'.")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="reproducible experiments of the whole pipeline",
                       description="Reproducible experiments of the whole pipeline.")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    k = bsub.add_parser("kt", help="the paper's comparison: supervised, task-agnostic, task-oriented on random vs "
                                   "retrieved sets, teacher",
                        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--pool", nargs="+", metavar="PATH", help="unlabelled pool inputs (folders or shards)")
    add_model_flags(k, KTConfig, [f for f in KTConfig.model_fields if f != "progress"],
                    help={"target": "folder with one sub-folder of images per class (default: the public protocol)"})
    k.add_argument("--json", action="store_true", help="print results.json")
    k.set_defaults(run=run_kt)
    c = bsub.add_parser("curve", help="one of the paper's curves: accuracy against transfer-set size, labels per "
                                      "class, or pretraining compute", description=CURVE_DESCRIPTION, epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--pool", nargs="+", metavar="PATH", help="unlabelled pool inputs (folders or shards)")
    add_model_flags(c, CurveConfig, ["axis", "values", "recorded"] + [f for f in KTConfig.model_fields
                                                           if f not in ("progress", "arms")],
                    required=["axis"], help={"target": "folder with one sub-folder of images per class (default: "
                                                       "the public protocol)"})
    c.add_argument("--json", action="store_true", help="print curve-AXIS.json")
    c.set_defaults(run=run_curve)


def _config(model, args):
    """The bench's config from the flags, checked before the samples are fetched or the pool indexed."""
    from experiments.kt import prepare_inputs

    if bool(args.target) != bool(args.pool):
        raise CuratorError("give both --target and --pool, or neither (the public protocol)")
    probe = build_model(model, args, target=args.target or "-", index=args.index or "-")  # flags checked first
    target, index = prepare_inputs(args.target, args.pool, args.index, probe, progress=not args.json)
    return build_model(model, args, target=target, index=index, progress=not args.json)


def _report(args, doc, md: str, files: str) -> int:
    """Print the document (--json) or its markdown and where its files are."""
    if args.json:
        print(json.dumps(dump_doc(doc), indent=2))
        return 0
    with open(md, encoding="utf-8") as fh:
        print(fh.read())
    print(files)
    return 0


def run_curve(args) -> int:
    from experiments.curves import run_curve as run

    cfg = _config(CurveConfig, args)
    doc = run(cfg, command="curator " + " ".join(map(shlex.quote, args.argv)))
    stem = os.path.join(cfg.out, f"curve-{cfg.axis}")
    return _report(args, doc, stem + ".md", f"results: {stem}.json, chart: {stem}.png")


def run_kt(args) -> int:
    from experiments.kt import run_kt as run

    cfg = _config(KTConfig, args)
    results = run(cfg, command="curator " + " ".join(map(shlex.quote, args.argv)))
    return _report(args, results, os.path.join(cfg.out, "results.md"),
                   f"results: {os.path.join(cfg.out, 'results.json')}, chart: {os.path.join(cfg.out, 'chart.png')}")
