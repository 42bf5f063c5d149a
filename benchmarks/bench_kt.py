"""The paper's comparison end to end (`curator bench kt`), timed from scratch, into docs/benchmarks.md.

Runs the public protocol by default (Tux Paint target, openclipart + Oxygen icons pool), index
build included, in a fresh --out, and records the wall clock against the 60-minute budget (issue 18).
Extra arguments go to `curator bench kt` unchanged (e.g. --seeds 1 for a quick look); `--keep`
extends the bench already in --out (e.g. `--keep --seeds 9`) into its own section; `--section NAME`
writes a variant (e.g. `--student tf_efficientnet_lite0 --student-init imagenet`) into section NAME, or,
with `--keep` and no model flags, more seeds for some arms (e.g. `--keep --seeds 12 --arms task-agnostic
task-oriented-random --section kt-12`).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import command, commit, keep_chart, machine, record_result  # noqa: E402


#: The default bench's budget on 2 CPU cores (issue 18).
BUDGET_MIN = 60


def main() -> None:
    from curator.cli import main as curator_main

    extra = sys.argv[1:]
    out = Path("bench-out/kt-bench")
    if "--out" in extra:
        out = Path(extra[extra.index("--out") + 1])
    else:
        extra += ["--out", str(out)]
    section = None  # --section NAME: a variant (another student, init, ...) in its own section
    if "--section" in extra:
        i = extra.index("--section")
        section = extra[i + 1]
        del extra[i:i + 2]
    keep = "--keep" in extra  # extend an earlier bench (e.g. more --seeds): its finished runs are reused
    if keep:
        extra.remove("--keep")
    else:
        shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    rc = curator_main(["bench", "kt", *extra])
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(rc)
    results = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    index_report = out / "index" / "build-report.json"
    index_s = json.loads(index_report.read_text())["total_seconds"] if index_report.exists() else None
    seeds = results["config"]["seeds"]
    arms = [a for a in results["arms"] if a != "teacher"]  # the trained arms
    trained = len(arms)
    variant = any(flag in extra for flag in ("--student", "--student-init", "--teacher", "--index-encoder"))
    if section and section not in ("kt", "kt-extended") and keep and not variant:  # more seeds for some arms
        title = f"more seeds ({seeds}) for {', '.join(arms)}, extending the default run"
        timing = f"This call reused the earlier runs and trained the missing seeds in {wall / 60:.1f} min."
    elif section and section not in ("kt", "kt-extended"):
        cfg = results["config"]
        title = f"variant `{section}`: student {cfg['student']} ({cfg.get('student_init', 'scratch')})"
        timing = (f"This call trained what --out lacked in {wall / 60:.1f} min"
                  + (" (finished runs in --out were reused)." if keep else "."))
    elif keep and section != "kt":
        title, section = f"more seeds ({seeds}), extending the run above", "kt-extended"
        timing = (f"This call reused the earlier runs and trained the missing seeds in {wall / 60:.1f} min; "
                  "the from-scratch wall clock is the section above.")
    else:  # the default bench; --keep --section kt: resumed in an --out whose pool index was built earlier
        title, section = "the paper's arms end to end", "kt"
        work = f"curation, teacher caches, {seeds} seeds x {trained} trained arms"
        timing = (f"Wall clock, everything included (sample fetch, pool index "
                  f"{f'{index_s:.0f} s' if index_s else 'reused'}, {work}): **{wall / 60:.1f} min** "
                  f"(budget: {BUDGET_MIN} min on 2 CPU cores).") if not keep else (
                  f"This call ({work}, in an --out whose pool index was built earlier) took {wall / 60:.1f} min; "
                  f"with the index's {index_s or 0:.0f} s: **{(wall + (index_s or 0)) / 60:.1f} min** "
                  f"(budget: {BUDGET_MIN} min on 2 CPU cores).")
    chart = keep_chart(out / "chart.png", f"{section}.png")
    body = f"""## Knowledge transfer: {title} (`curator bench kt`)

Machine: {machine()}. Commit {commit()}.
Command: `{command()}`, which runs `{results['command']}`.

{timing}

{table}
![chart]({chart})
"""
    record_result(section, body)
    print(f"wrote the {section} record (docs/benchmarks.md) ({wall / 60:.1f} min)")


if __name__ == "__main__":
    main()
