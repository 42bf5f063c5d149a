"""Transfer sets by reference: about 100 bytes a sample instead of a copy, yet the same shards, byte for
byte, whether assembled from the pool, materialized later, or copied at curation time."""
import hashlib
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import make_image_folder
from curator.cli import main
from curator.curate import curate
from curator.errors import CuratorError
from curator.formats import CurateParams
from curator.queries import load_queries
from curator.refshards import read_segments, total_size
from curator.retrieval import PoolIndex
from curator.transfer import materialize, read_manifest, shard_path_or_layout
from distill.data import transfer_items
from index_builder import BuildConfig, build_index


@pytest.fixture(scope="module")
def sets(tiny_index, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("refsets")
    tiny_index(40, classes=2, seed=95, into=tmp_path)
    make_image_folder(tmp_path / "queries", 2, classes=2, seed=96)
    pool, queries = PoolIndex.open(tmp_path / "index"), load_queries(tmp_path / "queries")
    params = dict(per_query=9, shard_size=4, dedup=1.0, exclude_threshold=1.0)
    curate(pool, queries, CurateParams(**params), tmp_path / "ref", set_id="s")
    curate(pool, queries, CurateParams(**params, materialize="copy"), tmp_path / "copy", set_id="s")
    return tmp_path


def test_a_set_by_reference_holds_no_image_and_assembles_the_copied_bytes(sets):
    ref, copy = sets / "ref" / "s", sets / "copy" / "s"
    assert not list(ref.glob("*.tar")) and len(list(copy.glob("*.tar"))) == 5
    manifest = read_manifest(ref)
    assert manifest.shardlist == read_manifest(copy).shardlist  # same sizes, sha256 and md5 per shard
    for shard in manifest.shardlist:
        segs = shard_path_or_layout(ref, shard.url)
        data = b"".join(read_segments(segs))
        assert data == (copy / shard.url).read_bytes() and total_size(segs) == shard.filesize
        assert hashlib.sha256(data).hexdigest() == shard.sha256
        assert b"".join(read_segments(segs, 700, 2100)) == data[700:2100]  # any byte range
    with tarfile.open(copy / manifest.shardlist[0].url) as tar:
        assert len(tar.getnames()) == 2 * manifest.shardlist[0].nsamples
    rows = (ref / "samples.parquet").stat().st_size
    assert rows < sum(s.filesize for s in manifest.shardlist) / 2  # references, not images (43 B a sample at scale)
    assert pq.ParquetFile(ref / "samples.parquet").metadata.num_row_groups == len(manifest.shardlist)


def test_materialize_writes_the_shards_and_checks_every_sample(sets, capsys):
    assert main(["materialize", str(sets / "ref" / "s"), "--out", str(sets / "done")]) == 0
    for shard in read_manifest(sets / "copy" / "s").shardlist:
        assert (sets / "done" / "s" / shard.url).read_bytes() == (sets / "copy" / "s" / shard.url).read_bytes()
    assert read_manifest(sets / "done" / "s") == read_manifest(sets / "ref" / "s")
    assert main(["materialize", str(sets / "ref" / "s"), "--out", str(sets / "done")]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err


def test_a_changed_or_vanished_pool_item_is_an_error_that_names_it(sets, capsys):
    row = pq.read_table(sets / "ref" / "s" / "samples.parquet").to_pylist()[0]
    original = open(row["source"], "rb").read()
    with open(row["source"], "r+b") as fh:  # same size, different bytes
        fh.seek(row["offset"] + row["size"] // 2)
        fh.write(b"\x00\x01\x02\x03")
    assert main(["materialize", str(sets / "ref" / "s"), "--out", str(sets / "out")]) == 2
    err = capsys.readouterr().err
    assert row["pool_key"] in err and "changed" in err
    assert not (sets / "out" / "s").exists() and not [p for p in (sets / "out").iterdir()]
    with pytest.raises(CuratorError, match=row["pool_key"]):
        transfer_items(sets / "ref" / "s")
    open(row["source"], "wb").write(original[: row["offset"]])  # now it is gone
    with pytest.raises(CuratorError, match="gone"):
        b"".join(read_segments(shard_path_or_layout(sets / "ref" / "s", row["shard"])))
    open(row["source"], "wb").write(original)


def test_distillation_reads_a_set_by_reference_from_the_pool(sets):
    items = transfer_items(sets / "ref" / "s")
    copied = transfer_items(sets / "copy" / "s")
    assert len(items) == len(copied) == read_manifest(sets / "ref" / "s").counts.emitted
    assert all(src.startswith(str((sets / "pool").resolve())) for (src, _, _), _ in items)


@pytest.mark.parametrize("name", ["00000000.png", "00000001.json", "a" * 100, "ü-ä.webp", "d/" * 60 + "k.jpg"])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 77_777, 8 ** 11 - 1, 8 ** 11])
def test_headers_are_the_standard_librarys_byte_for_byte(name, size):
    from curator.refshards import _stdlib_header, header

    if size >= 8 ** 11:  # what USTAR cannot hold is refused the same way
        with pytest.raises(ValueError):
            header(name, size)
        return
    assert header(name, size) == _stdlib_header(name, size)
    with pytest.raises(ValueError):
        header("x" * 120, size)


def test_samples_unreadable_at_curation_are_left_out_and_both_modes_still_agree(tiny_clip_spec, tmp_path):
    """Shards are written in parallel, each on its own: a pool file changed or gone after indexing
    leaves its sample out (counted), keys stay the sample's place in the selection, a shard left with
    nothing is not listed, and by-reference bytes still equal the copy's."""
    make_image_folder(tmp_path / "pool", 12, classes=1, seed=97)
    build_index([str(tmp_path / "pool")], tmp_path / "index", BuildConfig(encoder=tiny_clip_spec, workers=0,
                                                                           progress=False))
    pool = PoolIndex.open(tmp_path / "index")
    queries = load_queries(tmp_path / "pool")[:1]
    params = dict(per_query=12, shard_size=2, dedup=1.0, exclude_threshold=1.0)
    curate(pool, queries, CurateParams(**params), tmp_path / "probe", set_id="p")  # the order items are taken in
    sources = pq.read_table(tmp_path / "probe" / "p" / "samples.parquet").column("source").to_pylist()
    Path(sources[2]).write_bytes(b"changed")
    Path(sources[3]).unlink()  # shard 1 (samples 2 and 3) loses both
    Path(sources[6]).unlink()
    ref = curate(pool, queries, CurateParams(**params), tmp_path / "ref", set_id="s")
    copy = curate(pool, queries, CurateParams(**params, materialize="copy"), tmp_path / "copy", set_id="s")
    assert ref.shardlist == copy.shardlist and ref.counts.unreadable == 3 and ref.counts.emitted == 9
    assert "transfer-00001.tar" not in {s.url for s in ref.shardlist}
    keys = pq.read_table(tmp_path / "ref" / "s" / "samples.parquet").column("key").to_pylist()
    assert keys == [f"{i:08d}" for i in range(12) if i not in (2, 3, 6)]
    assert pq.ParquetFile(tmp_path / "ref" / "s" / "samples.parquet").metadata.num_row_groups == len(ref.shardlist)
    for shard in ref.shardlist:
        data = b"".join(read_segments(shard_path_or_layout(tmp_path / "ref" / "s", shard.url)))
        assert data == (tmp_path / "copy" / "s" / shard.url).read_bytes()
        with tarfile.open(tmp_path / "copy" / "s" / shard.url) as tar:
            assert len(tar.getnames()) == 2 * shard.nsamples


def test_a_large_set_written_by_a_process_pool_has_the_same_bytes(sets, monkeypatch):
    """Above PROCESS_MIN_SAMPLES shards are written by spawned processes: the same set, byte for byte."""
    import curator.transfer as transfer

    monkeypatch.setattr(transfer, "PROCESS_MIN_SAMPLES", 0)
    monkeypatch.setattr(transfer, "usable_cpus", lambda: 2)
    pool, queries = PoolIndex.open(sets / "index"), load_queries(sets / "queries")
    params = dict(per_query=9, shard_size=4, dedup=1.0, exclude_threshold=1.0, materialize="copy")
    manifest = curate(pool, queries, CurateParams(**params), sets / "pooled", set_id="s")
    assert manifest.shardlist == read_manifest(sets / "copy" / "s").shardlist
    for shard in manifest.shardlist:
        assert (sets / "pooled" / "s" / shard.url).read_bytes() == (sets / "copy" / "s" / shard.url).read_bytes()
    assert (pq.read_table(sets / "pooled" / "s" / "samples.parquet") ==
            pq.read_table(sets / "copy" / "s" / "samples.parquet"))
