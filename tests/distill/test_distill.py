"""The distill wing on tiny models and generated images: every method, resume, the report."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import REPO, make_image_folder
from curator.curate import curate
from curator.queries import load_queries
from curator.retrieval import PoolIndex
from curator.formats import CurateParams, DistillConfig, dump_doc
from distill import run_distill as distill_run

from distill.losses import info_nce, kd_loss


def run_distill(config, **kw) -> dict:
    """The run's report as its JSON form, as report.json holds it."""
    return dump_doc(distill_run(config, **kw))

STUDENT = "resnet18"


@pytest.fixture(scope="module")
def task(tmp_path_factory, tiny_index):
    """A 3-class labelled set, a pool, and a balanced transfer set curated from the labelled images."""
    root = tmp_path_factory.mktemp("kt")
    make_image_folder(root / "labelled", 36, classes=3, seed=5)
    tiny_index(60, classes=3, seed=6, into=root)
    curate(PoolIndex.open(root / "index"), load_queries(root / "labelled")[:6], CurateParams(per_query=5, dedup=1.0,
           exclude_threshold=1.0), root / "sets", set_id="t")
    return root


def cfg(task, tiny_clip_spec, out, **kw):
    base = dict(labelled=str(task / "labelled"), transfer=str(task / "sets" / "t"), out=str(out),
                teacher=tiny_clip_spec, student=STUDENT, student_size=32, labels_per_class=5, val_per_class=2,
                steps_a=6, steps_b=8, steps_c=6, batch_size=8, ckpt_every=3, progress=False)
    base.update(kw)
    return DistillConfig(**base)


@pytest.mark.parametrize("method", ["task-oriented", "task-agnostic", "supervised"])
def test_each_method_produces_a_complete_report(task, tiny_clip_spec, tmp_path, method):
    report = run_distill(cfg(task, tiny_clip_spec, tmp_path / method, method=method))
    saved = json.loads((tmp_path / method / "report.json").read_text())
    assert saved["format"] == "curator.distill-report/1" and saved["config"]["method"] == method
    assert set(saved["data"]) >= {"classes", "train", "val", "test"} and saved["data"]["train"] == 15
    final = report["student"]["final"]
    assert final["test"]["n"] == 36 - 15 - 6 and 0 <= final["test"]["mean_per_class_accuracy"] <= 1
    assert report["student"]["params"] > 0 and report["student"]["latency_ms_cpu_batch1"] > 0
    stages = set(report["stages"])
    assert stages == {"task-oriented": {"a", "b", "c"}, "task-agnostic": {"b", "c"}, "supervised": {"c"}}[method]
    if method != "supervised":
        assert report["stages"]["b"]["teacher_forward_passes"] == 8 * 8
        assert report["data"]["transfer_images"] == 30
    if method == "task-oriented":
        assert report["teacher"]["test"]["n"] == 15 and "after_b" in report["student"]
    assert (tmp_path / method / "student.pt").exists()
    exported = torch.export.load(report["student"]["exported"]).module()
    assert exported(torch.rand(5, 3, 32, 32)).shape == (5, 3)
    lines = [json.loads(x) for x in (tmp_path / method / "log.jsonl").read_text().splitlines()]
    assert {"stage", "step", "loss", "lr"} <= set(lines[0])


def test_losses():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    assert kd_loss(t, t, 2.0).abs() < 1e-6 and kd_loss(s, t, 1.0) > 0
    a = torch.randn(8, 5)
    assert info_nce(a, a) < info_nce(a, torch.randn(8, 5))


def test_killed_run_resumes_with_the_same_number_of_steps(task, tiny_clip_spec, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "curator.cli", "distill", "--labelled", str(task / "labelled"), "--transfer",
            str(task / "sets" / "t"), "--out", str(out), "--teacher", tiny_clip_spec, "--student", STUDENT,
            "--student-size", "32", "--labels-per-class", "5", "--steps-a", "4", "--steps-b", "30",
            "--steps-c", "4", "--batch-size", "4", "--ckpt-every", "5", "--json"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    ckpt = out / "checkpoints" / "b-distill.pt"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not ckpt.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), proc.stderr.read().decode()[-2000:]
    step_at_kill = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < step_at_kill < 30
    rc = subprocess.run(args[:-1], cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert rc.returncode == 0, rc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["stages"]["b"]["steps"] == 30 and report["stages"]["b"]["resumed_from"] == step_at_kill
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines() if '"b-distill"' in x]
    assert steps[-1] == 29


def test_config_mismatch_and_missing_transfer_are_clear(task, tiny_clip_spec, tmp_path):
    from curator.errors import CuratorError

    with pytest.raises(CuratorError, match="needs --transfer"):
        run_distill(cfg(task, tiny_clip_spec, tmp_path / "a", transfer=None))
    run_distill(cfg(task, tiny_clip_spec, tmp_path / "b", method="supervised"))
    with pytest.raises(CuratorError, match="other settings"):
        run_distill(cfg(task, tiny_clip_spec, tmp_path / "b", method="supervised", steps_c=7))
    if not torch.cuda.is_available():  # asking for a GPU that is not there never falls back to the CPU
        with pytest.raises(CuratorError, match="no CUDA GPU"):
            run_distill(cfg(task, tiny_clip_spec, tmp_path / "c", method="supervised", device="cuda"))


def test_teacher_cache_is_reused_and_matches_the_teacher(task, tiny_clip_spec, tmp_path):
    import numpy as np
    import torch.nn.functional as F

    from distill.data import FixedViewDataset, transfer_items
    from distill.models import Teacher

    first = run_distill(cfg(task, tiny_clip_spec, tmp_path / "one", cache_teacher=2))
    cache_file = first["stages"]["b"]["teacher_cache"]
    assert first["stages"]["b"]["teacher_forward_passes"] == 30 * 2
    # another student, another seed, and the task-agnostic baseline all reuse the backbone's cache
    second = run_distill(cfg(task, tiny_clip_spec, tmp_path / "two", cache_teacher=2, seed=1,
                             student="mobilenetv3_small_050"))
    agnostic = run_distill(cfg(task, tiny_clip_spec, tmp_path / "three", cache_teacher=2, method="task-agnostic"))
    for report in (second, agnostic):
        assert report["stages"]["b"]["teacher_forward_passes"] == 0
        assert report["stages"]["b"]["teacher_cache"] == cache_file
    # the cache holds the teacher's outputs on exactly these fixed views, and the student's pixels of them
    teacher = Teacher(tiny_clip_spec, 3)
    state = torch.load(tmp_path / "one" / "checkpoints" / "a-teacher.done.pt", weights_only=False)
    teacher.load_state_dict(state["modules"]["teacher"])
    teacher.eval()
    views = FixedViewDataset(transfer_items(task / "sets" / "t"), teacher.size, 2, 0)
    cached = np.load(cache_file)
    for k in (0, 7, 59):
        view = views[k][1].value[None]  # (tag, Sample): the core pipeline's item
        with torch.no_grad():
            online = teacher(view)[0]
            from_cache = teacher.logits_from_features(torch.from_numpy(cached["targets"][k:k + 1]).float())[0]
        torch.testing.assert_close(from_cache, online, atol=3e-2, rtol=0)
        small = F.interpolate(view, size=(32, 32), mode="bilinear", antialias=True)[0]
        assert (torch.from_numpy(cached["pixels"][k]).float() / 255 - small).abs().max() <= 1 / 255 + 1e-6


def test_runs_asking_for_one_cache_at_once_build_it_once(task, tiny_clip_spec, tmp_path):
    """bench kt trains two runs side by side: the second to ask for a cache waits for the first's
    build (a lock beside the file) and reads it, instead of spending the same teacher passes."""
    from concurrent.futures import ThreadPoolExecutor

    from distill.cache import view_cache
    from distill.data import transfer_items
    from distill.models import Teacher

    teacher, items = Teacher(tiny_clip_spec, 3), transfer_items(task / "sets" / "t")
    ask = lambda _: view_cache(teacher, items, tmp_path, kind="features", views=2, student_size=32)
    with ThreadPoolExecutor(2) as pool:
        caches = list(pool.map(ask, range(2)))
    assert sorted(c.passes for c in caches) == [0, 30 * 2] and caches[0].path == caches[1].path
    assert (caches[0].targets == caches[1].targets).all()


def test_two_process_data_parallel_run_on_cpu(task, tiny_clip_spec, tmp_path):
    """torchrun with 2 gloo processes: one report, world size 2, both ranks' images counted."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "curator.cli", "distill", "--labelled", str(task / "labelled"), "--transfer", str(task / "sets" / "t"),
           "--out", str(out), "--teacher", tiny_clip_spec, "--student", STUDENT, "--student-size", "32",
           "--labels-per-class", "5", "--steps-a", "4", "--steps-b", "6", "--steps-c", "4", "--batch-size", "4",
           "--cache-teacher", "2", "--cache-dir", str(tmp_path / "cache"), "--json"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2
    assert report["stages"]["b"]["images"] == 6 * 4 * 2 and report["stages"]["b"]["teacher_forward_passes"] == 60
    assert report["student"]["final"]["test"]["n"] == 36 - 15 - 3  # the CLI's default: 1 val image per class


@pytest.mark.parametrize("method,cache", [("task-oriented", 0), ("task-oriented", 2), ("task-agnostic", 2)])
def test_labelled_images_mixed_into_distillation_batches(task, tiny_clip_spec, tmp_path, method, cache):
    """--mix-labelled: a share of every stage-(b) batch is labelled views under cross-entropy."""
    report = run_distill(cfg(task, tiny_clip_spec, tmp_path / "run", method=method, cache_teacher=cache,
                             cache_dir=str(tmp_path / "cache"), mix_labelled=0.25))
    assert report["stages"]["b"]["steps"] == 8 and report["config"]["mix_labelled"] == 0.25
    losses = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(row["loss"] == row["loss"] for row in losses)  # finite (no NaN) with the mixed term


def test_parquet_table_and_student_checkpoint_init(task, tiny_clip_spec, tmp_path):
    """A labelled set as a parquet table reads as the folder does; a finished student.pt starts the
    next run (every tensor loaded, output unchanged); a checkpoint of another architecture, or a
    path that is not there, is a clear error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curator.errors import CuratorError
    from distill.data import load_labelled
    from distill.models import Student

    folder = load_labelled(task / "labelled", labels_per_class=5, val_per_class=2, seed=0)
    rows = [(p, folder.classes[y], s) for s, items in folder.splits.items() for p, y in items]
    pq.write_table(pa.table({k: [r[i] for r in rows] for i, k in enumerate(("path", "label", "split"))}),
                   tmp_path / "labelled.parquet")
    table = load_labelled(tmp_path / "labelled.parquet")
    assert table.classes == folder.classes and table.splits == folder.splits

    first = run_distill(cfg(task, tiny_clip_spec, tmp_path / "first", method="supervised"))
    ckpt = tmp_path / "first" / "student.pt"
    warm = Student(STUDENT, 3, 32, str(ckpt)).eval()
    trained = Student(STUDENT, 3, 32)
    trained.load_state_dict(torch.load(ckpt, weights_only=True))
    x = torch.rand(2, 3, 32, 32)
    assert warm.dropped == [] and torch.allclose(warm(x), trained.eval()(x))
    assert Student(STUDENT, 5, 32, str(ckpt)).dropped == ["fc.bias", "fc.weight"]  # another task's classes
    again = run_distill(cfg(task, tiny_clip_spec, tmp_path / "second", method="supervised", student_init=str(ckpt)))
    assert again["student"]["final"]["test"]["n"] == first["student"]["final"]["test"]["n"]
    with pytest.raises(CuratorError, match="no tensor matches"):
        Student("mobilenetv3_small_050", 3, 32, str(ckpt))
    with pytest.raises(CuratorError, match="neither scratch"):
        run_distill(cfg(task, tiny_clip_spec, tmp_path / "x", student_init=str(tmp_path / "missing.pt")))
    assert not (tmp_path / "x").exists()  # nothing written before the inputs were checked


def test_a_linear_teachers_backbone_stays_frozen_without_a_cache(task, tmp_path):
    """Stage (a) in linear mode trains the head only: the backbone's BatchNorm statistics are
    bit-identical before and after, as they are on the cached path (run_stage keeps it in eval)."""
    from distill.models import Teacher

    spec = "timm:resnet18/none"  # BatchNorm throughout; deterministic init
    run_distill(cfg(task, spec, tmp_path / "run", steps_a=4, steps_b=2, steps_c=2, cache_teacher=0))
    trained = torch.load(tmp_path / "run" / "checkpoints" / "a-teacher.done.pt", weights_only=False)["modules"]["teacher"]
    fresh = Teacher(spec, 3).state_dict()
    buffers = [k for k in fresh if k.startswith("backbone.") and ("running_" in k or "num_batches" in k)]
    assert buffers
    for k in buffers:
        assert torch.equal(trained[k], fresh[k]), k
    assert not torch.equal(trained["head.weight"], fresh["head.weight"])  # the head did train


def test_bad_inputs_write_nothing_and_hardware_is_not_a_setting(task, tiny_clip_spec, tmp_path):
    """A bad --transfer leaves --out empty, so the corrected run starts; the same run resumed with other
    workers is the same run; other settings are refused, naming each, and --overwrite starts over."""
    from curator.errors import CuratorError

    out = tmp_path / "run"
    with pytest.raises(CuratorError, match="not a transfer set"):
        run_distill(cfg(task, tiny_clip_spec, out, transfer=str(tmp_path / "typo")))
    assert not out.exists()
    first = run_distill(cfg(task, tiny_clip_spec, out, method="task-agnostic"))
    assert first["teacher"]["latency_device"] == "cpu" and first["teacher"]["latency_ms_batch1"] > 0
    again = run_distill(cfg(task, tiny_clip_spec, out, method="task-agnostic", workers=1))
    assert again["stages"]["c"] == first["stages"]["c"]
    with pytest.raises(CuratorError, match="steps_c: 6 -> 7.*--overwrite"):
        run_distill(cfg(task, tiny_clip_spec, out, method="task-agnostic", steps_c=7))
    fresh = run_distill(cfg(task, tiny_clip_spec, out, method="task-agnostic", steps_c=7), overwrite=True)
    assert fresh["stages"]["c"]["steps"] == 7
