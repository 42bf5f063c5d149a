"""glibc's malloc keeps freed memory for CPU inference, unless the user says otherwise."""
import platform

import pytest

from curator import allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")


@glibc
def test_thresholds_are_raised_by_default(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert allocator._tune() is True


@pytest.mark.parametrize("env", [{allocator.ENV: "0"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"MALLOC_TRIM_THRESHOLD_": "131072"}])
def test_the_user_opts_out_or_sets_glibcs_own_variables(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert allocator._tune() is False


@glibc
def test_a_cpu_encoder_tunes_its_process():
    import subprocess
    import sys

    code = ("from curator import allocator; from curator.encoders.base import Encoder; import torch;"
            "assert allocator._state == {};"
            "from curator.encoders import create_encoder; create_encoder('packaged:efficientnet-lite0');"
            "print(allocator._state)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "{'tuned': True}"
