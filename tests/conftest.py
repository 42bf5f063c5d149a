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

from helpers import REPO, TINY_CLIP, build_tiny_index  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_spec(tmp_path_factory) -> str:
    """An untrained 32-px open_clip model: the real code path, a fraction of the cost."""
    path = tmp_path_factory.mktemp("models") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return f"open_clip:{path}/none"


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, tiny_clip_spec):
    """``tiny_index(n, classes=2, seed=0, encoder=None, **config)``: the path of an index over ``n``
    generated images (its pool beside it, in ``../pool``), built once per session for each set of
    arguments. Tests read it, never change it: one that appends to an index or edits its pool
    builds its own."""
    cache, built = tmp_path_factory.mktemp("tiny-indexes"), {}

    def get(n: int, *, classes: int = 2, seed: int = 0, encoder: str | None = None, into: Path | None = None,
            **config) -> Path:
        """``into``: also link ``into/index`` and ``into/pool`` to it, where a test keeps its files."""
        key = json.dumps([n, classes, seed, encoder or tiny_clip_spec, config], sort_keys=True)
        if key not in built:
            built[key] = build_tiny_index(cache / f"i{len(built)}", encoder or tiny_clip_spec, n, classes=classes,
                                          seed=seed, **config)
        if into is not None:
            into.mkdir(parents=True, exist_ok=True)
            for name in ("index", "pool"):
                (into / name).symlink_to(built[key].parent / name)
        return built[key]
    return get


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
