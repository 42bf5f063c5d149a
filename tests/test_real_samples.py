"""Retrieval quality with real weights on real images (Debian's Tux Paint stamps)."""
import shutil
from collections import Counter

import numpy as np
import pytest

from curator.retrieval import PoolIndex
from index_builder import BuildOptions, build_index

pytestmark = pytest.mark.slow
PER_CLASS = 12


@pytest.fixture(scope="module")
def tux_subset(samples_root, tmp_path_factory):
    """Up to 12 stamps from each category with at least 12: a quick but real labelled pool."""
    root = tmp_path_factory.mktemp("tux")
    for cat in sorted(p for p in samples_root.iterdir() if p.is_dir()):
        files = sorted(cat.glob("*.png"))
        if len(files) >= PER_CLASS:
            (root / cat.name).mkdir()
            for f in files[:PER_CLASS]:
                shutil.copy(f, root / cat.name / f.name)
    return root


def test_leave_one_out_category_accuracy_is_far_above_chance(tux_subset, tmp_path):
    out = tmp_path / "idx"
    build_index([str(tux_subset)], out, BuildOptions(encoder="packaged:efficientnet-lite0", workers=1,
                                                     batch_size=32, progress=False))
    index = PoolIndex.open(out)
    cats = np.array([k.split("/")[0] for k in index.items.column("key").to_pylist()])
    vecs = np.vstack([index.index.reconstruct(i) for i in range(index.ntotal)])
    _, ids = index.search(vecs, 2)
    accuracy = float((cats[ids[:, 1]] == cats).mean())
    chance = max(Counter(cats).values()) / len(cats)
    print(f"leave-one-out 1-NN accuracy {accuracy:.3f} over {len(cats)} stamps in "
          f"{len(set(cats))} categories (majority {chance:.3f})")
    assert len(set(cats)) >= 8
    assert accuracy > 0.5 and accuracy > 3 * chance
