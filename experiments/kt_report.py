"""``bench kt``'s human outputs: results.md (table + paired differences) and chart.png (matplotlib)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from curator import atomic
from curator.formats import KTConfig, KtResults, dump_doc


def arm_label(cfg: KTConfig, arm: str) -> str:
    """The paper's name for an arm, where it has one, for results.md and the chart."""
    if arm == "supervised" and cfg.student_init == "imagenet":
        return "ImageNet pretraining"
    return {"supervised-scratch": "supervised from scratch"}.get(arm, arm)


def markdown(doc: KtResults, command: Optional[str] = None) -> str:
    results = dump_doc(doc)
    rows = ["| arm | test accuracy | test mean per-class | val accuracy | teacher passes | student steps "
            "| wall s (all seeds) |", "|---|---|---|---|---|---|---|"]
    for arm, r in results["arms"].items():
        def fmt(s):
            return f"{s['mean']:.3f} ± {s['std']:.3f}"
        rows.append(f"| {_label(results, arm)} | {fmt(r['test_accuracy'])} | {fmt(r['test_mean_per_class_accuracy'])} "
                    f"| {fmt(r['val_accuracy'])} | {r['teacher_forward_passes'] if r['teacher_forward_passes'] is not None else '–'} "
                    f"| {r['student_steps']} | {r['wall_seconds'] if r['wall_seconds'] is not None else '–'} |")
    checks = "\n".join(f"- {k}: {'holds' if v else '**does not hold**'} in the mean; {_paired_text(d)}"
                       for (k, v), d in zip(results["orderings"].items(), results["paired"].values()))
    c = results["config"]
    head = (f"Target `{c['target']}`, {c['labels_per_class']} labels per class, {c['seeds']} seeds (mean ± std); "
            f"teacher `{c['teacher']}` ({c['teacher_mode']}); student `{c['student']}` at {c['student_size']} px; "
            f"transfer sets: " + ", ".join(f"{k} {v['images']}" for k, v in results["transfer_sets"].items())
            + f"; total wall {results['wall_seconds']} s.")
    cmd = f"\n\n```\n{command}\n```" if command else ""
    skipped = "".join(f"\n- skipped target image `{s['key']}`: {s['reason']} ({s['detail']})"
                      for s in results.get("skipped_images", []))
    return (f"{head}{cmd}\n\n" + "\n".join(rows) + "\n\n" + checks + "\n" + on_task_table(results)
            + (skipped[1:] + "\n" if skipped else ""))


def on_task_table(results: dict) -> str:
    """Per class, the share of each set's views the adapted teacher is sure (p >= 0.5) belong to it."""
    views = results.get("on_task") or {}
    if not views:
        return ""
    sets = list(views)
    rows = ["", "What the adapted teacher makes of each transfer set's views (mean over seeds): the share it is "
                "sure (top probability >= 0.5) show each class.", "",
            "| class | " + " | ".join(sets) + " |", "|---" * (1 + len(sets)) + "|"]
    rows.append("| all classes (mean confidence) | " + " | ".join(
        f"{views[s]['confident_share']:.3f} ({views[s]['mean_confidence']:.3f})" for s in sets) + " |")
    for c in views[sets[0]]["confident_class_share"]:
        rows.append(f"| {c} | " + " | ".join(f"{views[s]['confident_class_share'][c]:.3f}" for s in sets) + " |")
    return "\n".join(rows) + "\n"


def _label(results: dict, arm: str) -> str:
    """The arm's key, and the paper's name for it where it has one."""

    name = arm_label(KTConfig.model_validate(results["config"]), arm)
    return arm if name == arm else f"{arm} ({name})"


def _paired_text(pair: dict) -> str:
    def one(d: dict) -> str:
        sem = f" ± {d['sem']:.3f} (s.e.)" if d["sem"] is not None else ""
        return f"{d['mean_difference']:+.3f}{sem}, ahead on {d['wins']} of {d['seeds']} seeds"
    return (f"paired difference in accuracy {one(pair['test_accuracy'])}; in mean per-class accuracy "
            f"{one(pair['test_mean_per_class_accuracy'])}")


def bar_chart(doc: KtResults, path: Path) -> None:
    """Test accuracy per arm, mean with ±1 std error bars over seeds, as a PNG (matplotlib, Agg: no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = dump_doc(doc)
    arms = list(results["arms"])
    means = [results["arms"][a]["test_accuracy"]["mean"] for a in arms]
    stds = [results["arms"][a]["test_accuracy"]["std"] for a in arms]
    fig, ax = plt.subplots(figsize=(1.6 * len(arms) + 2.5, 4.2), dpi=110)
    try:
        colours = plt.get_cmap("tab10").colors
        bars = ax.bar(range(len(arms)), means, yerr=stds, capsize=6, color=[colours[i % 10] for i in range(len(arms))],
                      label=[_label(results, a) for a in arms])
        ax.bar_label(bars, labels=[f"{m:.3f}" for m in means], padding=3, fontsize=8)
        ax.set_xticks(range(len(arms)), [_label(results, a).replace("task-oriented-", "task-oriented\n")
                                         .replace(" (", "\n(") for a in arms], fontsize=8)
        ax.set_ylim(0, min(1.0, max(m + s for m, s in zip(means, stds)) * 1.25 + 0.02))
        ax.set_ylabel("test accuracy")
        ax.set_xlabel("arm")
        ax.set_title(f"test accuracy, mean ± std over {results['config']['seeds']} seeds", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        atomic.write_with(path, lambda p: fig.savefig(p, format="png"))
    finally:
        plt.close(fig)
