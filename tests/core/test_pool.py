import hashlib

import pytest

from helpers import write_tar, pattern_image, png_bytes
from curator.errors import CuratorError
from curator.pool import expand_tar_spec, input_kind, list_items, plan_tasks, read_range, scan_tar


def test_tar_items_are_one_ranged_read_away(tmp_path):
    path = tmp_path / "pool-00000.tar"
    blobs = write_tar(path, 5)
    items = scan_tar(str(path))
    assert [it.key for it in items] == sorted(blobs)
    for it in items:
        data = read_range(it.source, it.offset, it.size)
        assert hashlib.sha256(data).digest() == hashlib.sha256(blobs[it.key]).digest()
        assert it.caption == f"caption {int(it.key)}" and '"i"' in it.meta


def test_brace_patterns_and_plans(tmp_path):
    for s in range(3):
        write_tar(tmp_path / f"pool-{s:05d}.tar", 2, start=10 * s)
    urls = expand_tar_spec(str(tmp_path / "pool-{00000..00002}.tar"))
    assert len(urls) == 3
    tasks = plan_tasks([str(tmp_path / "pool-{00000..00002}.tar")], shard_size=100)
    assert [t.shard_id for t in tasks] == ["00000", "00001", "00002"] and tasks[0].kind == "tar"
    assert sum(len(list_items(t)) for t in tasks) == 6


def test_folder_plans_are_sorted_and_chunked(tmp_path):
    for i in range(7):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(pattern_image(i)))
    (tmp_path / "notes.txt").write_text("not an image")
    tasks = plan_tasks([str(tmp_path)], shard_size=3)
    assert [len(t.files) for t in tasks] == [3, 3, 1]
    assert tasks[0].files == ["0.png", "1.png", "2.png"]


def test_input_kinds_and_errors(tmp_path):
    assert input_kind("urls.parquet") == "urls" and input_kind("a.tar") == "tar"
    assert input_kind(str(tmp_path)) == "folder"
    with pytest.raises(CuratorError, match="compressed tars"):
        input_kind("x.tar.gz")
    with pytest.raises(CuratorError, match="not a folder"):
        input_kind(str(tmp_path / "missing"))
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(CuratorError, match="cannot read as a tar"):
        scan_tar(str(bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CuratorError, match="no .jpg"):
        plan_tasks([str(tmp_path / "empty")], 10)


def test_question_mark_globs_name_tars_and_url_queries_are_not_part_of_the_name(tmp_path):
    for s in range(3):
        write_tar(tmp_path / f"pool-0000{s}.tar", 1, start=s)
    spec = str(tmp_path / "pool-0000?.tar")
    assert input_kind(spec) == "tar" and len(plan_tasks([spec], shard_size=10)) == 3
    assert input_kind("https://host/pool-00001.tar?token=abc") == "tar"
