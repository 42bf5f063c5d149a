"""`curator bench kt` in miniature: tiny models, generated images, one seed, every arm reported."""
import json

import pytest

from PIL import Image

from helpers import make_image_folder, png_header_only
from curator.cli import main


def test_miniature_bench_reports_every_arm(tiny_clip_spec, tiny_index, tmp_path, capsys):
    make_image_folder(tmp_path / "target", 36, classes=3, seed=11)
    (tmp_path / "target" / "class0" / "bomb.png").write_bytes(png_header_only(50_000, 50_000))  # must not stop it
    tiny_index(80, classes=3, seed=12, into=tmp_path)
    args = ["bench", "kt", "--target", str(tmp_path / "target"), "--pool", str(tmp_path / "pool"),
            "--index", str(tmp_path / "index"), "--out", str(tmp_path / "out"), "--teacher", tiny_clip_spec,
            "--student", "test_efficientnet", "--student-init", "scratch", "--student-size", "32", "--budget", "24", "--seeds", "1",
            "--crops", "1", "--labels-per-class", "3", "--val-per-class", "1", "--steps-a", "4", "--steps-b", "6",
            "--steps-c", "4", "--batch-size", "8", "--json"]
    bad = [a if a != tiny_clip_spec else "packaged:efficientnet-lite9" for a in args]
    assert main(bad) == 2 and "unknown packaged encoder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # the corrected command is not blocked by a half-made folder
    assert main(args) == 0
    results = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["format"] == "curator.kt-bench/1" and saved["arms"] == results["arms"]
    assert list(results["arms"]) == ["supervised", "task-agnostic", "task-oriented-random",
                                     "task-oriented-retrieved", "teacher"]
    for arm, r in results["arms"].items():
        assert len(r["test_accuracy"]["values"]) == 1 and 0 <= r["test_accuracy"]["mean"] <= 1, arm
        assert 0 <= r["test_mean_per_class_accuracy"]["mean"] <= 1
    sets = results["transfer_sets"]
    assert sets["retrieved"]["images"] == sets["random"]["images"] > 0
    assert results["arms"]["task-oriented-retrieved"]["teacher_forward_passes"] == sets["retrieved"]["images"] * 2
    assert set(results["orderings"]) == {"task-oriented-retrieved > supervised", "task-oriented-retrieved > "
                                         "task-agnostic", "task-oriented-retrieved > task-oriented-random"}
    # the split is saved, and no val/test image is a query
    rows = (tmp_path / "out" / "split.csv").read_text().splitlines()
    assert rows[0] == "path,label,split" and sum(r.endswith(",train") for r in rows) == 9
    manifest = json.loads((tmp_path / "out" / "sets" / "retrieved" / "manifest.json").read_text())
    assert len(manifest["queries"]) == 9 and manifest["counts"]["exclude_vectors"] == 36 - 9
    assert manifest["counts"]["query_views"] == 2 * 9 and manifest["params"]["crops"] == 1  # --crops 1
    md = (tmp_path / "out" / "results.md").read_text()
    assert md.count("\n| ") == 6 + 5 and "```\ncurator bench kt" in md  # arms table, then on-task (3 classes)
    with Image.open(tmp_path / "out" / "chart.png") as chart:
        assert chart.format == "PNG" and chart.size[0] > 400
    assert results["paired"]["task-oriented-retrieved - supervised"]["test_accuracy"]["seeds"] == 1
    # what the adapted teacher makes of each set: shares of its views, per class, that add up
    assert set(results["on_task"]) == {"retrieved", "random"}
    for view in results["on_task"].values():
        assert 0 <= view["confident_share"] <= 1 and abs(sum(view["class_share"].values()) - 1) < 0.01
        assert sum(view["confident_class_share"].values()) == pytest.approx(view["confident_share"], abs=0.01)
    assert "| all classes (mean confidence) |" in md
    assert [(s["key"].endswith("bomb.png"), s["reason"]) for s in results["skipped_images"]] == \
        [(True, "too_many_pixels")] and "bomb.png" in md
    # a bench keeps each run's student weights but does not export every one of them
    runs = tmp_path / "out" / "runs"
    assert len(list(runs.rglob("student.pt"))) == 4 and not list(runs.rglob("student.pt2"))
    # a second call reuses every finished run and set
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["arms"] == results["arms"]
    # the same target under another path is the same bench
    import shutil

    shutil.copytree(tmp_path / "target", tmp_path / "moved")
    moved = [str(tmp_path / "moved") if a == str(tmp_path / "target") else a for a in args]
    assert main(moved) == 0
    assert json.loads(capsys.readouterr().out)["arms"] == results["arms"]
    # a kt-config written before a knob existed reads it as its default of the time (student_init: scratch)
    saved = tmp_path / "out" / "kt-config.json"
    saved.write_text(json.dumps({k: v for k, v in json.loads(saved.read_text()).items() if k != "student_init"}))
    # more seeds extend the bench (seed 0 reused as is); another knob is refused, the runs kept.
    # Runs train two at a time (2 cores): one that fails in its process stops the bench with its reason
    two_seeds = args[:args.index("--seeds")] + ["--seeds", "2"] + args[args.index("--seeds") + 2:]
    blocked = runs / "task-agnostic" / "seed1"
    blocked.mkdir(parents=True)
    (blocked / "config.json").write_text(json.dumps({"method": "supervised"}))
    assert main(two_seeds + ["--jobs", "2"]) == 2
    assert "holds a run with other settings" in capsys.readouterr().err
    shutil.rmtree(blocked)
    assert main(two_seeds) == 0
    more = json.loads(capsys.readouterr().out)
    for arm, r in more["arms"].items():
        assert r["test_accuracy"]["values"][0] == results["arms"][arm]["test_accuracy"]["values"][0], arm
        assert len(r["test_accuracy"]["values"]) == 2
    paired = more["paired"]["task-oriented-retrieved - supervised"]["test_mean_per_class_accuracy"]
    assert paired["seeds"] == 2 and paired["sem"] is not None and 0 <= paired["wins"] <= 2
    assert "paired difference" in (tmp_path / "out" / "results.md").read_text()
    assert main(args[:-1] + ["--temperature", "2", "--json"]) != 0
    assert "other settings" in capsys.readouterr().err


def test_an_imagenet_student_runs_the_papers_two_supervised_baselines(tmp_path, monkeypatch):
    """With --student-init imagenet the supervised arm is the paper's "ImageNet pretraining" baseline,
    and the same student from scratch runs beside it; the arm's config says which it is."""
    from curator.formats import KTConfig
    from experiments import kt, kt_report

    cfg = KTConfig(target=str(tmp_path), index=str(tmp_path / "index"), student="tf_efficientnet_lite0",
                   student_init="imagenet")
    assert kt.arms_for(cfg) == ("supervised", "supervised-scratch", "task-agnostic", "task-oriented-random",
                                "task-oriented-retrieved", "teacher")
    assert kt_report.arm_label(cfg, "supervised") == "ImageNet pretraining"
    assert kt_report.arm_label(cfg, "supervised-scratch") == "supervised from scratch"
    assert "supervised-scratch" not in kt.arms_for(cfg.model_copy(update={"student_init": "scratch"}))
    seen = {}
    monkeypatch.setattr(kt, "run_distill", lambda dc, label="": seen.setdefault(label, dc))
    for arm in ("supervised", "supervised-scratch"):
        kt.run_arm(cfg, arm, 0, tmp_path / "split.csv", tmp_path / "out")
    inits = {label.split(" ")[0]: dc.student_init for label, dc in seen.items()}
    assert inits == {"supervised": "imagenet", "supervised-scratch": "scratch"}


def test_the_teachers_view_of_a_set_is_the_same_read_in_blocks(monkeypatch):
    """A large cache is read a block at a time; the counts must not depend on the block size."""
    import torch

    from distill import methods

    targets = torch.randn(1000, 4, dtype=torch.float16, generator=torch.Generator().manual_seed(0))
    whole = methods.teacher_view(targets, lambda t: 3 * t, list("abcd"))
    monkeypatch.setattr(methods, "VIEW_BLOCK", 97)
    assert methods.teacher_view(targets, lambda t: 3 * t, list("abcd")) == whole
    probs = torch.softmax(3 * targets.float(), dim=1).max(dim=1).values
    assert whole.confident_share == round(float((probs >= 0.5).float().mean()), 4)
    assert abs(sum(whole.class_share.values()) - 1) < 1e-3


def test_runs_are_ordered_longest_first_so_the_lone_last_run_is_a_short_one():
    """Two runs train at once on a CPU; the last one trains alone. The distilling arms go first (the first
    on each set also builds its teacher cache), every seed of them, then the supervised arms."""
    from experiments.kt import run_order

    order = run_order(("supervised", "supervised-scratch", "task-agnostic", "task-oriented-random",
                       "task-oriented-retrieved", "teacher"), 2)
    assert len(order) == 10 and len(set(order)) == 10 and ("teacher", 0) not in order
    assert [arm for arm, _ in order[:6]] == ["task-agnostic", "task-oriented-random", "task-oriented-retrieved"] * 2
    assert order[6:] == [("supervised", 0), ("supervised-scratch", 0), ("supervised", 1), ("supervised-scratch", 1)]
