"""The README's runnable example, run verbatim in a scratch folder (offline: the sample images come
from the Debian package cache the other tests fill)."""
import os
import re
import subprocess

import pytest

from helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.network_local]


def runnable_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"<!-- readme-test: run -->\n```bash\n(.*?)```", text, flags=re.S)


def test_the_readme_marks_a_runnable_block():
    assert len(runnable_blocks()) == 1


def test_the_readme_example_runs_verbatim(tmp_path, samples_root):
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    env = dict(os.environ, CURATOR_CACHE=str(samples_root.parent.parent))
    script = "set -euo pipefail\n" + runnable_blocks()[0]
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "auto__beetle.png" in done.stdout and '"state":"succeeded"' in done.stdout.replace(" ", "")
    assert "8 samples read by wids" in done.stdout and "8 samples read by webdataset" in done.stdout
    assert (tmp_path / "sets" / "apples" / "manifest.json").exists()
    # the apples held out of the pool pull in food, the pool's own share of the target's kind
    import pyarrow.parquet as pq
    keys = pq.read_table(tmp_path / "sets" / "apples" / "samples.parquet").column("pool_key").to_pylist()
    food = {f.name for f in (tmp_path / "pool" / "food").iterdir()}
    assert sum(k in food for k in keys) > len(keys) / 2, keys
