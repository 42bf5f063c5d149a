"""Issue 4, real data: a real ImageNet teacher (EfficientNet-Lite0) adapted with 5 labels per
Tux Paint category beats a student trained from scratch on those labels. The distilled
student's accuracy is printed beside them: at this scale (about a hundred retrieved clip-art
images, a from-scratch 64 px student, a CPU budget) it does not reliably beat the supervised
student; docs/benchmarks.md (knowledge transfer) reports the full bench and the diagnosis.
Every choice here is fixed in advance; test images are only scored."""
import csv
import shutil

import pytest

from curator.curate import curate
from curator.queries import Query
from curator.retrieval import PoolIndex
from curator.formats import CurateParams, DistillConfig, dump_doc
from distill import run_distill as distill_run
from distill.data import load_labelled
from index_builder import BuildConfig, build_index


def run_distill(config, **kw) -> dict:
    """The run's report as its JSON form, as report.json holds it."""
    return dump_doc(distill_run(config, **kw))


pytestmark = pytest.mark.slow
TEACHER = "packaged:efficientnet-lite0"


@pytest.fixture(scope="module")
def kt_task(samples_root, tmp_path_factory):
    """The Tux Paint categories with >= 12 stamps (up to 20 each), split 5 train / 2 val / rest test;
    a pool of every 60th openclipart PNG (~135 images); a balanced set retrieved for the train images."""
    from curator.pool import list_folder_images
    from curator.samples import fetch_samples

    root = tmp_path_factory.mktemp("real-kt")
    for cat in sorted(p for p in samples_root.iterdir() if p.is_dir()):
        files = sorted(cat.glob("*.png"))
        if len(files) >= 12:
            (root / "target" / cat.name).mkdir(parents=True)
            for f in files[::max(1, len(files) // 20)][:20]:
                shutil.copy(f, root / "target" / cat.name / f.name)
    clipart = fetch_samples(["openclipart"], samples_root.parent)["openclipart"]
    pool = root / "pool"
    pool.mkdir()
    for i, rel in enumerate(list_folder_images(str(clipart))[::60]):  # category folders are symlinks
        (pool / f"{i:05d}.png").symlink_to((clipart / rel).resolve())
    build_index([str(pool)], root / "index", BuildConfig(encoder=TEACHER, workers=1, batch_size=32, progress=False))
    data = load_labelled(root / "target", labels_per_class=5, val_per_class=2, seed=0)
    with open(root / "split.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        w.writerows((p, data.classes[y], s) for s in ("train", "val", "test") for p, y in data.splits[s])

    def queries(split):
        return [Query(p, open(p, "rb").read(), data.classes[y]) for p, y in data.splits[split]]
    curate(PoolIndex.open(root / "index"), queries("train"), CurateParams(per_query=6), root / "sets",
           set_id="retrieved", exclude=queries("val") + queries("test"))
    return root


def run(kt_task, method: str):
    # stage b is short: only the teacher (stage a) and the supervised student are asserted on here;
    # the distilled student's accuracy is printed, and the full bench measures it (docs/benchmarks.md)
    return run_distill(DistillConfig(
        labelled=str(kt_task / "split.csv"), transfer=str(kt_task / "sets" / "retrieved"), out=str(kt_task / method),
        method=method, teacher=TEACHER, student="mobilenetv3_small_100", student_size=64, steps_a=40,
        steps_b=20, steps_c=40, batch_size=32, cache_teacher=1, mix_labelled=0.25, seed=0, export=False,
        progress=False))


def test_adapted_teacher_beats_the_student_trained_on_the_same_labels(kt_task):
    supervised = run(kt_task, "supervised")
    transfer = run(kt_task, "task-oriented")
    teacher = transfer["teacher"]["test"]["accuracy"]
    alone = supervised["student"]["final"]["test"]["accuracy"]
    distilled = transfer["student"]["final"]["test"]["accuracy"]
    print(f"test accuracy: teacher {teacher:.3f}, supervised student {alone:.3f}, "
          f"task-oriented student {distilled:.3f} ({transfer['data']['transfer_images']} transfer images, "
          f"{transfer['data']['test']} test images, {len(transfer['data']['classes'])} classes)")
    assert teacher > alone + 0.1
    assert transfer["teacher"]["test"]["n"] == supervised["student"]["final"]["test"]["n"] > 100
    assert 0 <= distilled <= 1 and transfer["stages"]["b"]["teacher_forward_passes"] == transfer["data"]["transfer_images"]
