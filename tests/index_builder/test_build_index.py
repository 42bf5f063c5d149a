import json
import shutil

import numpy as np
import pytest

from helpers import make_image_folder, pattern_image, png_bytes
from curator.cli import main
from curator.errors import CuratorError, PlanMismatchError
from curator.formats import BuildReport, IndexManifest, ShardDone, load_doc
from curator.retrieval import PoolIndex
from index_builder import BuildConfig, build_index
from helpers import write_tar


def opts(spec, **kw):
    base = dict(encoder=spec, batch_size=8, workers=0, shard_size=10, progress=False)
    base.update(kw)
    return BuildConfig(**base)


@pytest.fixture
def messy_pool(tmp_path):
    """24 good images, 2 exact duplicates, a corrupt file, a truncated JPEG, a non-image."""
    root = tmp_path / "pool"
    paths = make_image_folder(root, 24)
    shutil.copy(paths[0], root / "class0" / "dup-a.png")
    shutil.copy(paths[3], root / "class1" / "dup-b.jpg")
    (root / "class2" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    jpeg = png_bytes(pattern_image(999, size=128), "JPEG")
    (root / "class2" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "class2" / "text.jpg").write_text("hello, not an image")
    return root


def test_build_skips_bad_files_and_dedups(messy_pool, tmp_path, tiny_clip_spec):
    out = tmp_path / "idx"
    report = build_index([str(messy_pool)], out, opts(tiny_clip_spec, workers=1))
    assert report.items == 24 and report.duplicates == 2 and report.skipped == 3
    assert set(report.skipped_by_reason) <= {"corrupt", "truncated", "not_an_image"}
    assert sorted(s.key.split("/")[-1] for s in report.skipped_items) == ["corrupt.png", "text.jpg", "truncated.jpg"]
    manifest = load_doc(out / "index.json", IndexManifest)
    assert manifest.index_factory == "Flat" and manifest.ntotal == 24 and manifest.recall_at_10 == 1.0
    assert manifest.encoder.spec == tiny_clip_spec and manifest.embedding_shards == ["00000", "00001", "00002"]
    load_doc(out / "build-report.json", BuildReport)


def test_search_finds_each_item_itself(messy_pool, tmp_path, tiny_clip_spec):
    out = tmp_path / "idx"
    build_index([str(messy_pool)], out, opts(tiny_clip_spec))
    index = PoolIndex.open(out)
    blob = (messy_pool / "class1" / "img0004.png").read_bytes()
    scores, ids = index.search(index.embed_images([blob]), 3)
    top = index.hits(scores[0], ids[0])[0]
    assert top.key == "class1/img0004.png" and top.score > 0.999
    assert index.fetch(top.id) == blob  # the original bytes, by one ranged read


def test_tar_input_keeps_captions_and_json(tmp_path, tiny_clip_spec):
    write_tar(tmp_path / "pool-00000.tar", 6)
    write_tar(tmp_path / "pool-00001.tar", 6, start=6)
    out = tmp_path / "idx"
    build_index([str(tmp_path / "pool-{00000..00001}.tar")], out, opts(tiny_clip_spec))
    index = PoolIndex.open(out)
    rows = index.items.to_pylist()
    assert len(rows) == 12 and rows[7]["caption"] == "caption 7" and json.loads(rows[7]["meta"]) == {"i": 7}
    assert rows[7]["shard_id"] == "00001" and rows[7]["width"] == 48


def test_rerun_reuses_shards_and_changed_inputs_are_refused(messy_pool, tmp_path, tiny_clip_spec):
    out = tmp_path / "idx"
    build_index([str(messy_pool)], out, opts(tiny_clip_spec))
    marker = out / "shards" / "00001.done.json"
    before = marker.stat().st_mtime_ns
    again = build_index([str(messy_pool)], out, opts(tiny_clip_spec))
    assert again.shards_reused == again.shards_total == 3 and marker.stat().st_mtime_ns == before
    with pytest.raises(PlanMismatchError, match="shard_size"):
        build_index([str(messy_pool)], out, opts(tiny_clip_spec, shard_size=5))
    fresh = build_index([str(messy_pool)], out, opts(tiny_clip_spec, shard_size=5, overwrite=True))
    assert fresh.shards_total == 6 and fresh.shards_reused == 0


def test_forced_ivf_factory_is_tuned_and_memory_mapped(tmp_path, tiny_clip_spec):
    root = tmp_path / "pool"
    make_image_folder(root, 400, classes=4)
    out = tmp_path / "idx"
    build_index([str(root)], out, opts(tiny_clip_spec, shard_size=200, batch_size=64,
                                       index_factory="IVF8,SQ8", target_recall=0.9, recall_queries=100))
    manifest = load_doc(out / "index.json", IndexManifest)
    assert manifest.index_factory == "IVF8,SQ8" and manifest.nprobe in (1, 2, 4, 8)
    assert manifest.recall_at_10 >= 0.9 or manifest.nprobe == 8
    assert manifest.train_size == 400
    index = PoolIndex.open(out)
    assert index.index.ntotal == 400


def test_bad_factory_and_budget_are_clear(messy_pool, tmp_path, tiny_clip_spec):
    with pytest.raises(CuratorError, match="index_factory"):
        build_index([str(messy_pool)], tmp_path / "a", opts(tiny_clip_spec, index_factory="NotAnIndex"))
    with pytest.raises(CuratorError, match="fits --max-index-memory"):
        build_index([str(messy_pool)], tmp_path / "b", opts(tiny_clip_spec, max_index_memory=100))


def test_cli_build_and_search_json(messy_pool, tmp_path, tiny_clip_spec, capsys):
    out = tmp_path / "idx"
    rc = main(["build-index", "--input", str(messy_pool), "--out", str(out), "--encoder", tiny_clip_spec,
               "--workers", "0", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 24
    rc = main(["search", "--index", str(out), "--image", str(messy_pool / "class0" / "img0000.png"),
               "-k", "2", "--json"])
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert rc == 0 and len(hits) == 2 and hits[0]["score"] > 0.999


def test_cli_errors_exit_2_with_a_message(messy_pool, tmp_path, tiny_clip_spec, capsys):
    rc = main(["build-index", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
               "--encoder", tiny_clip_spec])
    assert rc == 2 and "not a folder" in capsys.readouterr().err
    rc = main(["build-index", "--input", str(messy_pool), "--out", str(tmp_path / "o"),
               "--encoder", "open_clip:ViT-B-32/laion2b_s34b_b79k", "-q"])
    assert rc == 2 and "packaged:efficientnet-lite2" in capsys.readouterr().err
    rc = main(["search", "--index", str(tmp_path / "missing"), "--image", "x.png"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    build_index([str(messy_pool)], tmp_path / "idx", opts(tiny_clip_spec))
    rc = main(["search", "--index", str(tmp_path / "idx"), "--image", str(messy_pool / "class2" / "text.jpg")])
    err = capsys.readouterr().err
    assert rc == 2 and "text.jpg" in err and "not_an_image" in err and "Traceback" not in err


def test_shard_done_marker_is_valid(messy_pool, tmp_path, tiny_clip_spec):
    out = tmp_path / "idx"
    build_index([str(messy_pool)], out, opts(tiny_clip_spec))
    done = load_doc(out / "shards" / "00000.done.json", ShardDone)
    vecs = np.load(out / "shards" / "00000.npy")
    assert vecs.dtype == np.float16 and vecs.shape == (done.n_items, 32)


def test_shards_sharing_one_loader_match_a_loader_per_shard(messy_pool, tmp_path, tiny_clip_spec):
    """Consecutive shards read through one DataLoader (batches straddle shard borders) give the
    same outputs, in the same order, as a loader per shard; a shard of only bad files is written too."""
    from curator.encoders import create_encoder
    from curator.pool import plan_tasks
    from index_builder.embed_images import EmbedOptions, embed_shards

    bad_only = tmp_path / "bad"
    bad_only.mkdir()
    (bad_only / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    (bad_only / "b.jpg").write_text("not an image")
    tasks = plan_tasks([str(messy_pool), str(bad_only), str(messy_pool)], 7)
    encoder = create_encoder(tiny_clip_spec)
    seen: list[int] = []
    runs = {}
    for name, loader_items in (("per-shard", 1), ("shared", 10**6)):
        opts = EmbedOptions(batch_size=5, workers=1, loader_items=loader_items)
        runs[name] = list(embed_shards(tasks, encoder, tmp_path / name, opts, on_items=seen.append))
    assert [d.shard_id for d in runs["shared"]] == [t.shard_id for t in tasks] == [d.shard_id for d in runs["per-shard"]]
    assert sum(seen) == 2 * (29 * 2 + 2)
    for a, b in zip(runs["per-shard"], runs["shared"]):
        assert (a.n_items, a.n_skipped, [s.key for s in a.skipped]) == (b.n_items, b.n_skipped, [s.key for s in b.skipped])
        va, vb = (np.load(tmp_path / run / "shards" / f"{a.shard_id}.npy") for run in ("per-shard", "shared"))
        assert va.shape == vb.shape and np.allclose(va.astype(np.float32), vb.astype(np.float32), atol=2e-3)
        assert (tmp_path / "shared" / "shards" / f"{a.shard_id}.done.json").exists()
    assert any(d.n_skipped == 2 and d.n_items == 0 for d in runs["shared"])  # the bad-only shard


def test_a_failed_command_leaves_nothing_that_blocks_the_corrected_one(messy_pool, tmp_path, tiny_clip_spec, capsys):
    """A typo'd encoder writes nothing to --out; the corrected command then runs. A real change of
    settings is refused with each difference named (old -> new) and --overwrite offered."""
    out = tmp_path / "idx"
    assert main(["build-index", "-i", str(messy_pool), "-o", str(out), "--encoder", "packaged:efficientnet-lite9",
                 "-q"]) == 2
    assert "unknown packaged encoder" in capsys.readouterr().err and not out.exists()
    args = ["build-index", "-i", str(messy_pool), "-o", str(out), "--encoder", tiny_clip_spec, "--workers", "0", "-q"]
    assert main(args + ["--shard-size", "10"]) == 0
    first = load_doc(out / "build-report.json", BuildReport)
    assert first.embed_images_per_s > 0
    assert main(args + ["--shard-size", "10"]) == 0  # a finished build run again keeps its real figures
    assert load_doc(out / "build-report.json", BuildReport) == first
    capsys.readouterr()
    assert main(args + ["--shard-size", "12", "--keep-duplicates"]) == 2
    err = capsys.readouterr().err
    assert "shard_size: 10 -> 12" in err and "keep_duplicates: False -> True" in err and "--overwrite" in err


def test_files_follow_the_umask_and_folder_captions_are_read(tmp_path, tiny_clip_spec):
    import os
    import stat

    make_image_folder(tmp_path / "pool", 4, classes=1)
    (tmp_path / "pool" / "class0" / "img0000.txt").write_text("a red square\n")
    old = os.umask(0o022)
    try:
        build_index([str(tmp_path / "pool")], tmp_path / "idx", opts(tiny_clip_spec))
    finally:
        os.umask(old)
    for name in ("index.json", "gen-00000/items.arrow", "build-report.json", "gen-00000/index.faiss"):
        assert stat.S_IMODE((tmp_path / "idx" / name).stat().st_mode) == 0o644, name  # readable by a service user
    captions = dict(zip(*(PoolIndex.open(tmp_path / "idx").items.column(c).to_pylist() for c in ("key", "caption"))))
    assert captions["class0/img0000.png"] == "a red square" and captions["class0/img0001.jpg"] is None


def test_exact_duplicates_take_their_first_copys_vector_without_a_forward_pass(messy_pool, tmp_path, tiny_clip_spec):
    """The pool twice over (and its 2 duplicate files): with the memo, the encoder sees each content once,
    and every shard's vectors match a run that encodes every item."""
    from curator.encoders import create_encoder
    from curator.pool import plan_tasks
    from index_builder.embed_images import EmbedOptions, embed_shards

    tasks = plan_tasks([str(messy_pool), str(messy_pool)], 7)
    encoder = create_encoder(tiny_clip_spec)
    real, rows = encoder.encode_images, []

    def counting(pixels):
        rows.append(len(pixels))
        return real(pixels)
    encoder.encode_images = counting
    runs = {}
    for name, memo in (("every", 0), ("memo", 1000)):
        rows.clear()
        runs[name] = (list(embed_shards(tasks, encoder, tmp_path / name, EmbedOptions(batch_size=5, workers=0,
                                                                                    memo_items=memo))), sum(rows))
    assert runs["every"][1] == 2 * 26 and runs["memo"][1] == 24  # 26 decodable files, 24 distinct contents
    for a, b in zip(runs["every"][0], runs["memo"][0]):
        va, vb = (np.load(tmp_path / run / "shards" / f"{a.shard_id}.npy").astype(np.float32) for run in ("every", "memo"))
        assert a.n_items == b.n_items and np.allclose(va, vb, atol=2e-3)


def test_the_vector_memo_forgets_the_oldest_past_its_limit(tiny_clip_spec):
    import torch

    from curator.encoders import create_encoder
    from index_builder.memo import VectorMemo

    encoder = create_encoder(tiny_clip_spec)
    pixels = torch.rand(4, 3, encoder.image_size, encoder.image_size)
    memo = VectorMemo(limit=2)
    first = memo.encode(encoder, pixels, ["a", "b", "a", None])
    assert memo.reused == 1 and np.array_equal(first[0], first[2]) and list(memo.vectors) == ["a", "b"]
    memo.encode(encoder, pixels[:1], ["c"])
    assert list(memo.vectors) == ["b", "c"]  # "a" was the oldest
