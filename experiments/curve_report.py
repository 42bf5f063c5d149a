"""``bench curve``'s human outputs: curve-<axis>.md (a table per point) and curve-<axis>.png (matplotlib)."""
from __future__ import annotations

from pathlib import Path

from curator import atomic
from curator.formats import CurveResults

from .kt_report import arm_label


def _arm_names(doc: CurveResults) -> list[str]:
    return list(doc.points[0].arms) if doc.points else []


def markdown(doc: CurveResults) -> str:
    """One row per point: each arm's x and test accuracy (mean ± std over seeds), and the paired lead of
    the paper's arm (mean ± s.e., seeds ahead)."""
    arms = _arm_names(doc)
    c = doc.config
    head = (f"Curve `{c.axis}`: {doc.x_label}; {c.seeds} seeds per point (mean ± std); teacher `{c.teacher}` "
            f"({c.teacher_mode}); student `{c.student}` ({c.student_init}) at {c.student_size} px; "
            f"total wall {doc.wall_seconds} s.")
    if doc.recorded_values:
        head += (f" Points {', '.join(map(str, doc.recorded_values))} were read from a recorded curve (measured "
                 f"by {doc.recorded_at}), not run here.")
    names = [arm_label(c, a) for a in arms]
    rows = ["| " + c.axis + " | " + " | ".join(f"x {n} | {n}" for n in names)
            + f" | {names[-1]} - {names[0]} | test images |", "|---" * (3 + 2 * len(arms)) + "|"]
    for p in doc.points:
        lead = p.paired["test_accuracy"]
        sem = f" ± {lead.sem:.3f}" if lead.sem is not None else ""
        cells = " | ".join(f"{p.x[a]:g} | {p.arms[a].mean:.3f} ± {p.arms[a].std:.3f}" for a in arms)
        rows.append(f"| {p.value} | {cells} | {lead.mean_difference:+.3f}{sem} ({lead.wins}/{lead.seeds}) "
                    f"| {p.test_images if p.test_images is not None else '-'} |")
    tail = ""
    if c.axis == "compute":
        tail = ("\n\nCompute ratio at equal accuracy (task-agnostic over task-oriented, at best): "
                + (f"**{doc.compute_ratio}x**" if doc.compute_ratio is not None
                   else "task-agnostic never reaches task-oriented's accuracy on these points") + ".")
    if c.axis == "labels":
        tail = ("\n\nMore labels per class take test images from the small classes, so each point is scored on "
                "its own test set (nested: a larger point's is part of a smaller one's). Read the margin within "
                "a point; accuracy across points also moves with the test set.")
    cmd = f"\n\n```\n{doc.command}\n```" if doc.command else ""
    return head + cmd + "\n\n" + "\n".join(rows) + tail + "\n"


def line_chart(doc: CurveResults, path: Path) -> None:
    """Test accuracy against the axis, one line per arm, ±1 std error bars over seeds (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    try:
        for arm in _arm_names(doc):
            xs = [p.x[arm] for p in doc.points]
            ax.errorbar(xs, [p.arms[arm].mean for p in doc.points], yerr=[p.arms[arm].std for p in doc.points],
                        marker="o", capsize=4, label=arm_label(doc.config, arm))
        if all(p.x[a] > 0 for p in doc.points for a in p.x):
            ax.set_xscale("log")
        ax.set_xlabel(doc.x_label)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"test accuracy against {doc.config.axis}, mean ± std over {doc.config.seeds} seeds",
                     fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        atomic.write_with(path, lambda p: fig.savefig(p, format="png"))
    finally:
        plt.close(fig)
