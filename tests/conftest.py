"""Shared fixtures: offline environment, a tiny open_clip model, generated and real images."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402

from curator._torchvision_shim import import_torchvision  # noqa: E402

import_torchvision()

from helpers import REPO, TINY_CLIP  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_spec(tmp_path_factory) -> str:
    """An untrained 32-px open_clip model: the real code path, a fraction of the cost."""
    path = tmp_path_factory.mktemp("models") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return f"open_clip:{path}/none"


@pytest.fixture(scope="session")
def samples_root() -> Path:
    """Real labelled images (Debian's Tux Paint stamps), fetched once into the repo cache."""
    from curator.samples import fetch_samples

    cache = Path(os.environ.get("CURATOR_CACHE", REPO / ".cache")) / "samples"
    return fetch_samples(["tuxpaint"], cache)["tuxpaint"]


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL cluster for the session (see tests/postgres.py); skips, saying why, where the
    server is not installed, unless CURATOR_REQUIRE_POSTGRES=1 (CI), where that fails."""
    from postgres import INSTALL_HINT, Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CURATOR_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL server binaries not found, and CURATOR_REQUIRE_POSTGRES=1: {INSTALL_HINT}")
        pytest.skip(f"PostgreSQL server binaries not found (initdb): {INSTALL_HINT}")
    cluster = Cluster(bindir).start()
    yield cluster
    cluster.stop()
