"""``bench kt``'s human outputs: results.md (table + paired differences) and chart.png (Pillow only)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from curator import atomic
from curator.formats import KtResults, dump_doc


def markdown(doc: KtResults, command: Optional[str] = None) -> str:
    results = dump_doc(doc)
    rows = ["| arm | test accuracy | test mean per-class | val accuracy | teacher passes | student steps "
            "| wall s (all seeds) |", "|---|---|---|---|---|---|---|"]
    for arm, r in results["arms"].items():
        def fmt(s):
            return f"{s['mean']:.3f} ± {s['std']:.3f}"
        rows.append(f"| {arm} | {fmt(r['test_accuracy'])} | {fmt(r['test_mean_per_class_accuracy'])} "
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
    return f"{head}{cmd}\n\n" + "\n".join(rows) + "\n\n" + checks + "\n" + (skipped[1:] + "\n" if skipped else "")


def _paired_text(pair: dict) -> str:
    def one(d: dict) -> str:
        sem = f" ± {d['sem']:.3f} (s.e.)" if d["sem"] is not None else ""
        return f"{d['mean_difference']:+.3f}{sem}, ahead on {d['wins']} of {d['seeds']} seeds"
    return (f"paired difference in accuracy {one(pair['test_accuracy'])}; in mean per-class accuracy "
            f"{one(pair['test_mean_per_class_accuracy'])}")


def bar_chart(doc: KtResults, path: Path) -> None:
    """Test accuracy per arm with ±1 std error bars, as a PNG."""
    from PIL import Image, ImageDraw

    results = dump_doc(doc)
    arms = list(results["arms"])
    w, h, left, bottom, top = 160 * len(arms) + 80, 420, 60, 60, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    plot_h = h - bottom - top

    def y(v: float) -> float:
        return h - bottom - v * plot_h
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        d.line([(left, y(tick)), (w - 20, y(tick))], fill=(225, 225, 225))
        d.text((10, y(tick) - 6), f"{tick:.2f}", fill="black")
    colours = [(150, 150, 150), (120, 160, 210), (240, 170, 90), (60, 150, 90), (110, 90, 170)]
    for i, arm in enumerate(arms):
        s = results["arms"][arm]["test_accuracy"]
        x0 = left + 20 + i * 160
        d.rectangle([x0, y(s["mean"]), x0 + 100, y(0)], fill=colours[i % len(colours)])
        lo, hi = max(0.0, s["mean"] - s["std"]), min(1.0, s["mean"] + s["std"])
        d.line([(x0 + 50, y(lo)), (x0 + 50, y(hi))], fill="black", width=2)
        for v in (lo, hi):
            d.line([(x0 + 40, y(v)), (x0 + 60, y(v))], fill="black", width=2)
        d.text((x0 + 30, y(s["mean"]) - 22), f"{s['mean']:.3f}", fill="black")
        for j, part in enumerate(arm.replace("task-oriented-", "task-oriented\n").split("\n")):
            d.text((x0, h - bottom + 8 + 14 * j), part, fill="black")
    d.text((left, 12), "test accuracy (mean ± std over seeds)", fill="black")
    atomic.write_with(path, lambda p: img.save(p, format="PNG"))
