"""Worker processes die with the process that started them (a killed build leaves no orphans)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO

PARENT = """
import os, sys, time
from curator.processes import spawn_pool
if __name__ == "__main__":
    pool = spawn_pool(1)
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 60)
    time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_when_its_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    worker = int(parent.stdout.readline())
    os.kill(worker, 0)  # alive while its parent is
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"worker {worker} outlived its killed parent")
