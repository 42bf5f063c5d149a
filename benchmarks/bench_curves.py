"""The paper's three curves (`curator bench curve`), each into its own record (docs/benchmarks.md).

    python benchmarks/bench_curves.py [--axes compute size labels] [--from bench-out/kt-bench] [curve args]

Every point is a whole kt bench. The point at the bench's default value (budget 1600, 5 labels per class,
500 distillation steps) is the default `curator bench kt` itself, so with `--from` a finished default bench
lends that point its split, transfer sets, teacher cache and runs (linked, not copied; the kt bench's settings
check refuses the link if its settings differ), and the compute curve, whose points share one split and one
set of transfer sets, takes them for every point. The charts are copied to benchmarks/charts/ so that
docs/benchmarks.md shows them.

Each finished curve is also recorded in benchmarks/results/curve-AXIS.json (tracked; bench-out/ is not), and
the next call passes that record as `--recorded`: its points are kept and only the values it lacks run, so a
curve too long for one machine's session is measured in parts (the settings check refuses a record of
another curve).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, command, commit, keep_chart, machine, record_result  # noqa: E402

#: Where finished curves are kept between machines (tracked in git).
RECORDS = ROOT / "benchmarks" / "results"


def lend(bench: Path, out: Path, axis: str) -> list[int]:
    """Link ``bench``'s shared inputs (and, at the default value, its runs) into the curve's points; returns
    the values whose runs were lent."""
    from curator.formats import CURVE_VALUES, KTConfig
    from experiments.curves import AXES, PAPER_ARM, share_from

    knob = AXES[axis].knob
    default = KTConfig.model_fields[knob].default
    lent = []
    for value in CURVE_VALUES[axis]:
        point = out / f"{axis}-{value}"
        if value != default and not AXES[axis].same_sets:
            continue
        share_from(bench, point)
        if value == default:
            if not (point / "kt-config.json").exists():
                shutil.copyfile(bench / "kt-config.json", point / "kt-config.json")
            share_from(bench / "runs", point / "runs", (AXES[axis].other, PAPER_ARM))
            lent.append(value)
    return lent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--axes", nargs="+", default=["compute", "size", "labels"])
    parser.add_argument("--from", dest="bench", default="bench-out/kt-bench",
                        help="a finished default `bench kt` whose point is lent (default: %(default)s; 'none': none)")
    parser.add_argument("--out", default="bench-out/curves")
    parser.add_argument("--section", help="bench record and chart name, one axis only (default: "
                                          "curve-AXIS): a part of a curve beside the section of the whole")
    args, extra = parser.parse_known_args()
    if args.section and len(args.axes) != 1:
        parser.error("--section names one curve: pass one --axes")
    from curator import atomic
    from curator.cli import main as curator_main

    out = Path(args.out)
    bench = Path(args.bench) if args.bench != "none" else None
    for axis in args.axes:
        lent = lend(bench, out, axis) if bench and (bench / "kt-config.json").exists() else []
        index = ["--index", str(bench / "index")] if bench and "--index" not in extra else []
        record = RECORDS / f"curve-{axis}.json"
        recorded = ["--recorded", str(record)] if record.exists() and "--recorded" not in extra else []
        t0 = time.perf_counter()
        rc = curator_main(["bench", "curve", "--axis", axis, "--out", str(out), *index, *recorded, *extra])
        wall = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(rc)
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(record, (out / f"curve-{axis}.json").read_text())
        section = args.section or f"curve-{axis}"
        chart = keep_chart(out / f"curve-{axis}.png", f"{section}.png")
        reuse = (f" The point at {', '.join(map(str, lent))} is the default `bench kt` in `{bench}` (its runs, "
                 "linked)." if lent else "")
        body = f"""## The paper's curve `{axis}` (`curator bench curve --axis {axis}`)

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`. This call took {wall / 60:.1f} min.{reuse}

{(out / f'curve-{axis}.md').read_text()}
![curve {axis}]({chart})
"""
        record_result(section, body)
        print(f"wrote the {section} record (docs/benchmarks.md) ({wall / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
