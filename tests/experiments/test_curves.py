"""`curator bench curve` in miniature: each of the paper's three curves on tiny models, two points, one seed."""
import json
import shutil

import pytest
from PIL import Image

from helpers import make_image_folder
from curator.cli import main
from curator.formats import CurvePoint, Paired, Stats
from experiments.curves import compute_ratio


@pytest.fixture(scope="module")
def bench(tiny_clip_spec, tiny_index, tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    make_image_folder(root / "target", 24, classes=3, seed=11)
    # real ImageNet features: the untrained tiny CLIP maps these images so close together that dedup
    # leaves a set of one, and a size curve needs sets that grow
    tiny_index(80, classes=3, seed=12, encoder="packaged:efficientnet-lite0", into=root)
    return root, ["--target", str(root / "target"), "--pool", str(root / "pool"), "--index", str(root / "index"),
                  "--out", str(root / "out"), "--teacher", tiny_clip_spec, "--student", "test_efficientnet", "--student-init", "scratch",
                  "--student-size", "32", "--budget", "24", "--seeds", "1", "--labels-per-class", "3",
                  "--val-per-class", "1", "--steps-a", "3", "--steps-b", "4", "--steps-c", "3", "--batch-size", "8",
                  "--json"]


@pytest.mark.parametrize("axis, values, arms", [
    ("size", ["12", "30"], ["task-oriented-random", "task-oriented-retrieved"]),
    ("labels", ["2", "4"], ["supervised", "task-oriented-retrieved"]),
    ("compute", ["2", "6"], ["task-agnostic", "task-oriented-retrieved"]),
])
def test_each_curve_runs_its_two_arms_at_every_point(bench, axis, values, arms, capsys):
    root, common = bench
    assert main(["bench", "curve", "--axis", axis, "--values", *values, *common]) == 0
    doc = json.loads(capsys.readouterr().out)
    saved = json.loads((root / "out" / f"curve-{axis}.json").read_text())
    assert doc["format"] == saved["format"] == "curator.kt-curve/1" and saved["points"] == doc["points"]
    assert [p["value"] for p in doc["points"]] == [int(v) for v in values]
    for p in doc["points"]:
        assert list(p["arms"]) == arms and all(0 <= s["mean"] <= 1 and len(s["values"]) == 1 for s in p["arms"].values())
        assert p["paired"]["test_accuracy"]["seeds"] == 1
    # each point is a kt bench of its own that ran only these arms (and the teacher that comes with the paper's)
    point = json.loads((root / "out" / f"{axis}-{values[0]}" / "results.json").read_text())
    assert list(point["arms"]) == [*arms, "teacher"]
    xs = [[p["x"][a] for p in doc["points"]] for a in arms]
    if axis == "size":  # the sets' actual sizes, retrieved and random alike, growing with the budget
        assert xs[0] == xs[1] and 0 < xs[0][0] < xs[0][1] <= 30
    elif axis == "compute":  # task-oriented also pays for the teacher's adaptation; more steps cost more
        assert all(a < b for a, b in zip(xs[0], xs[1])) and xs[0][0] < xs[0][1]
        assert doc["compute_ratio"] is None or doc["compute_ratio"] > 0
        assert "Compute ratio" in (root / "out" / "curve-compute.md").read_text()
        # a linear probe's adaptation costs one backbone pass per cached train view, as its report records
        run = json.loads((root / "out" / f"compute-{values[0]}" / "runs" / arms[1] / "seed0" / "report.json").read_text())
        passes = run["stages"]["a"]["teacher_forward_passes"]
        assert passes == run["data"]["train"] * 8 == point["arms"][arms[1]]["teacher_adaptation_passes"]
        assert abs(xs[1][0] - xs[0][0] - passes * point["teacher"]["flops"] / 1e9) <= 0.002  # x: GFLOPs to 3 places
    else:
        assert xs[0] == xs[1] == [2.0, 4.0]
        # more labels per class leave fewer (nested) test images; the table says how many
        tests = [p["test_images"] for p in doc["points"]]
        assert tests[0] > tests[1] > 0
        assert "its own test set" in (root / "out" / "curve-labels.md").read_text()
    md = (root / "out" / f"curve-{axis}.md").read_text()
    assert md.count("\n| ") == 1 + len(values) and "```\ncurator bench curve" in md
    with Image.open(root / "out" / f"curve-{axis}.png") as chart:
        assert chart.format == "PNG" and chart.size[0] > 400
    if axis == "compute":  # points that differ in training steps only share the sets and the teacher's outputs
        assert (root / "out" / f"compute-{values[1]}" / "sets").is_symlink()
        assert (root / "out" / f"compute-{values[1]}" / "cache").is_symlink()
    if axis == "size":  # a second call reuses every point's runs
        assert main(["bench", "curve", "--axis", axis, "--values", *values, *common]) == 0
        assert json.loads(capsys.readouterr().out)["points"] == doc["points"]


def test_a_recorded_curve_lends_its_points_and_only_the_new_ones_run(bench, capsys, tmp_path):
    """A curve measured in parts: points read from an earlier curve-AXIS.json (of another machine, whose
    runs are not here) are kept as they are, and only the missing values run."""
    root, common = bench

    def args(out):
        return [str(out) if a == str(root / "out") else a for a in common]
    made = root / "out" / "curve-size.json"  # the size curve above, when it ran first: not trained twice
    if not made.exists() or [p["value"] for p in json.loads(made.read_text())["points"]] != [12, 30]:
        assert main(["bench", "curve", "--axis", "size", "--values", "12", "30", *common]) == 0
        capsys.readouterr()
    first = json.loads(made.read_text())
    record = tmp_path / "record.json"
    shutil.copyfile(made, record)
    second = tmp_path / "second"
    assert main(["bench", "curve", "--axis", "size", "--values", "12", "18", "30", "--recorded", str(record),
                 *args(second)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["value"] for p in doc["points"]] == [12, 18, 30]
    assert doc["points"][0] == first["points"][0] and doc["points"][2] == first["points"][1]
    assert doc["recorded_values"] == [12, 30] and doc["recorded_at"] == first["created_at"]
    assert not (second / "size-12").exists() and (second / "size-18" / "results.json").exists()
    assert "Points 12, 30 were read from a recorded curve" in (second / "curve-size.md").read_text()
    # another curve's record is refused before anything runs, naming what differs; so is a missing one
    other = [("2" if a == "1" and common[i - 1] == "--seeds" else a) for i, a in enumerate(args(tmp_path / "third"))]
    assert main(["bench", "curve", "--axis", "size", "--values", "12", "18", "--recorded", str(record), *other]) == 2
    err = capsys.readouterr().err
    assert "holds another curve (seeds: 1 -> 2)" in err and not (tmp_path / "third").exists()
    assert main(["bench", "curve", "--axis", "size", "--values", "12", "18", "--recorded", str(tmp_path / "nope.json"),
                 *args(tmp_path / "third")]) == 2
    assert "nope.json does not exist" in capsys.readouterr().err and not (tmp_path / "third").exists()


def test_a_curve_needs_two_values_and_says_so(bench, capsys):
    root, common = bench
    assert main(["bench", "curve", "--axis", "size", "--values", "400", "400", *common]) == 2
    assert "--values: a curve needs at least two different values" in capsys.readouterr().err
    assert not (root / "out" / "size-400").exists()


def _point(x_fast, acc_fast, x_slow, acc_slow):
    stats = lambda m: Stats(mean=m, std=0.0, values=[m])  # noqa: E731
    pair = Paired(mean_difference=0.0, wins=0, seeds=1)
    return CurvePoint(value=1, x={"task-agnostic": x_slow, "task-oriented-retrieved": x_fast},
                      arms={"task-agnostic": stats(acc_slow), "task-oriented-retrieved": stats(acc_fast)},
                      paired={"test_accuracy": pair, "test_mean_per_class_accuracy": pair})


def test_compute_ratio_reads_the_slow_curve_at_equal_accuracy():
    # task-agnostic reaches 0.5 at 100 GFLOPs and 0.7 at 10,000; task-oriented reaches 0.6 at 10:
    # halfway in log compute between 100 and 10,000 is 1,000, so 100x
    points = [_point(10, 0.6, 100, 0.5), _point(20, 0.4, 10_000, 0.7)]
    assert compute_ratio(points) == 100.0
    # task-agnostic never reaches task-oriented's accuracy: no ratio
    assert compute_ratio([_point(10, 0.9, 100, 0.5), _point(20, 0.95, 10_000, 0.7)]) is None
