"""``--runner ray``: the same work units on a local Ray instance (2 CPUs), the same files out."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import REAL_ENCODER, REPO, make_image_folder
from curator.formats import BuildConfig
from curator.retrieval import PoolIndex
from index_builder import build_index

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raypool")
    make_image_folder(root / "pool", 64, classes=3)
    return root / "pool"


def same_index(a: Path, b: Path) -> None:
    """Same items in the same order, the same vectors, the same neighbours."""
    pa_, pb = PoolIndex.open(a), PoolIndex.open(b)
    assert pa_.items.column("key").to_pylist() == pb.items.column("key").to_pylist()
    ids = np.arange(pa_.ntotal)
    va, vb = pa_.vectors(ids), pb.vectors(ids)
    assert np.abs(va - vb).max() < 2e-3  # float16 storage; one model, thread counts may differ
    assert (pa_.search(va[:20], 5)[1] == pb.search(va[:20], 5)[1]).all()


def _embedding_actor() -> int | None:
    """The pid of a Ray encoder actor busy embedding a shard (its process title says so)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if b"ray::_EmbedActor.embed" in fh.read():
                        return int(entry)
            except OSError:
                continue
    return None


def test_ray_builds_the_in_process_index_even_when_a_worker_is_killed(tmp_path, pool):
    """2 encoder actors on a local Ray instance; one is SIGKILLed mid-shard. Ray restarts it and retries
    that shard, and the index is the in-process runner's: same items, vectors and neighbours."""
    cfg = dict(encoder=REAL_ENCODER, workers=0, shard_size=8, progress=False)
    build_index([str(pool)], tmp_path / "local", BuildConfig(**cfg))
    cmd = [sys.executable, "-m", "curator.cli", "build-index", "--input", str(pool), "--out", str(tmp_path / "ray"),
           "--encoder", REAL_ENCODER, "--workers", "0", "--shard-size", "8", "--runner", "ray",
           "--index-workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    killed = None
    deadline = time.time() + 300  # a loaded 2-core CI machine can take minutes to start Ray and its actors
    while killed is None and proc.poll() is None and time.time() < deadline:
        pid = _embedding_actor()
        if pid:
            os.kill(pid, signal.SIGKILL)
            killed = pid
        time.sleep(0.05)
    out, err = proc.communicate(timeout=300)
    assert killed, f"no Ray encoder actor was seen embedding (build-index exited {proc.returncode})"
    assert proc.returncode == 0, err.decode()[-3000:]
    same_index(tmp_path / "local", tmp_path / "ray")
    assert b"Traceback" not in err
