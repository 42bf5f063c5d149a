"""Shared fixtures: offline environment, a tiny open_clip model, generated and real images."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from curator._torchvision_shim import import_torchvision  # noqa: E402

import_torchvision()

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip_spec(tmp_path_factory) -> str:
    """An untrained 32-px open_clip model: the real code path, a fraction of the cost."""
    path = tmp_path_factory.mktemp("models") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return f"open_clip:{path}/none"


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def pattern_image(seed: int, size: int = 48) -> Image.Image:
    """A distinct image per seed: a colour field with a seeded block pattern."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    arr = np.tile(base, (size, size, 1)).astype(np.uint8)
    for _ in range(4):
        x, y = rng.integers(0, size - 8, 2)
        arr[y:y + 8 + seed % 8, x:x + 8] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


def make_image_folder(root: Path, n: int, *, classes: int = 3, seed: int = 0) -> list[Path]:
    paths = []
    for i in range(n):
        path = root / f"class{i % classes}" / f"img{i:04d}.{'jpg' if i % 2 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        pattern_image(seed * 100_000 + i).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def samples_root() -> Path:
    """Real labelled images (Debian's Tux Paint stamps), fetched once into the repo cache."""
    from curator.samples import fetch_samples

    cache = Path(os.environ.get("CURATOR_CACHE", REPO / ".cache")) / "samples"
    return fetch_samples(["tuxpaint"], cache)["tuxpaint"]
