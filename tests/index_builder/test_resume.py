"""Kill a real build with SIGKILL mid-way, run it again, and check only the rest is redone."""
import os
import signal
import subprocess
import sys
import time

from helpers import REPO, make_image_folder
from curator.formats import IndexManifest, load_doc
from curator.retrieval import PoolIndex
from index_builder import BuildConfig, build_index


def test_killed_build_resumes_where_it_stopped(tmp_path, tiny_clip_spec):
    pool, out, ref = tmp_path / "pool", tmp_path / "idx", tmp_path / "ref"
    make_image_folder(pool, 320, classes=4)
    cmd = [sys.executable, "-m", "curator.cli", "build-index", "--input", str(pool), "--out", str(out),
           "--encoder", tiny_clip_spec, "--workers", "0", "--batch-size", "2", "--shard-size", "8", "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    shards = out / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list(shards.glob("*.done.json"))) >= 3 if shards.exists() else False:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = {p.name for p in shards.glob("*.done.json")}
    assert 3 <= len(done_at_kill) < 40, proc.stderr.read().decode()[-2000:]
    assert not (out / "index.json").exists()

    mtimes = {n: (shards / n).stat().st_mtime_ns for n in done_at_kill}
    opts = BuildConfig(encoder=tiny_clip_spec, workers=0, batch_size=16, shard_size=8, progress=False)
    report = build_index([str(pool)], out, opts)
    assert report.shards_total == 40 and report.shards_reused >= len(done_at_kill)
    assert all((shards / n).stat().st_mtime_ns == t for n, t in mtimes.items())  # not redone
    assert not list(shards.glob(".*.tmp*"))

    clean = build_index([str(pool)], ref, opts)
    assert report.items == clean.items == 320
    import pyarrow as pa
    keys = lambda d: PoolIndex.open(d).items.column("key").to_pylist()
    assert keys(out) == keys(ref)
    assert load_doc(out / "index.json", IndexManifest).ntotal == 320
