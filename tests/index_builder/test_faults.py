"""Faults: build-index SIGKILLed at 10 random moments, resumed each time, ends as the uninterrupted
build does: the same items in the same ids, the same vectors."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from curator.retrieval import PoolIndex
from helpers import REPO, make_image_folder
from index_builder import BuildConfig, build_index

pytestmark = pytest.mark.slow


def test_build_killed_at_seven_random_points_resumes_to_the_same_index(tmp_path, tiny_clip_spec):
    pool, out, ref = tmp_path / "pool", tmp_path / "idx", tmp_path / "ref"
    make_image_folder(pool, 160, classes=4, seed=3)
    cmd = [sys.executable, "-m", "curator.cli", "build-index", "--input", str(pool), "--out", str(out),
           "--encoder", tiny_clip_spec, "--workers", "0", "--batch-size", "4", "--shard-size", "8", "-q"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rng, kills = random.Random(7), 0
    for _ in range(7):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(1.0, 5.5))  # start-up, planning, embedding or the index step
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode()[-2000:]
    assert kills >= 4  # most runs really were cut short
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    build_index([str(pool)], ref, BuildConfig(encoder=tiny_clip_spec, workers=0, batch_size=4, shard_size=8,
                                              progress=False))
    resumed, clean = PoolIndex.open(out), PoolIndex.open(ref)
    assert resumed.ntotal == clean.ntotal == 160
    columns = ("id", "key", "sha256", "shard_id", "row")
    assert resumed.items.select(columns).equals(clean.items.select(columns))
    ids = np.arange(160)
    np.testing.assert_array_equal(resumed.vectors(ids), clean.vectors(ids))
    assert not list((out / "shards").glob(".*.tmp*"))
