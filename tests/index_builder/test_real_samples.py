"""Retrieval quality with real weights on real images (Debian's Tux Paint stamps)."""
import shutil
from collections import Counter

import numpy as np
import pytest

from curator.retrieval import PoolIndex
from index_builder import BuildConfig, build_index

pytestmark = pytest.mark.slow
MIN_CLASS, MAX_CLASS = 12, 30


@pytest.fixture(scope="module")
def tux_subset(samples_root, tmp_path_factory):
    """Up to 30 stamps (every other one) of each category with at least 12: a quick but real labelled pool."""
    root = tmp_path_factory.mktemp("tux")
    for cat in sorted(p for p in samples_root.iterdir() if p.is_dir()):
        files = sorted(cat.glob("*.png"))
        if len(files) >= MIN_CLASS:
            (root / cat.name).mkdir()
            for f in (files[::2] if len(files) > MAX_CLASS else files)[:MAX_CLASS]:
                shutil.copy(f, root / cat.name / f.name)
    return root


@pytest.fixture(scope="module")
def tux_index(tux_subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("tux-index")
    build_index([str(tux_subset)], out, BuildConfig(encoder="packaged:efficientnet-lite0", workers=1,
                                                     batch_size=32, progress=False))
    return PoolIndex.open(out)


def test_leave_one_out_category_accuracy_is_far_above_chance(tux_index):
    index = tux_index
    cats = np.array([k.split("/")[0] for k in index.items.column("key").to_pylist()])
    vecs = np.vstack([index.index.reconstruct(i) for i in range(index.ntotal)])
    _, ids = index.search(vecs, 2)
    accuracy = float((cats[ids[:, 1]] == cats).mean())
    chance = max(Counter(cats).values()) / len(cats)
    print(f"leave-one-out 1-NN accuracy {accuracy:.3f} over {len(cats)} stamps in "
          f"{len(set(cats))} categories (majority {chance:.3f})")
    assert len(set(cats)) >= 8
    assert accuracy > 0.5 and accuracy > 3 * chance


def test_balanced_transfer_set_is_mostly_the_query_categories(tux_index, tux_subset, tmp_path):
    """Issue 3: a set curated from a few images per category is mostly of those categories."""
    from curator.curate import curate
    from curator.formats import CurateParams
    from curator.queries import Query
    import pyarrow.parquet as pq

    keys = tux_index.items.column("key").to_pylist()
    sizes = Counter(k.split("/")[0] for k in keys)
    targets = [c for c, _ in sizes.most_common(3)]  # a neutral rule: the three largest categories
    queries = [Query(f"{c}/{p.name}", p.read_bytes(), c) for c in targets
               for p in sorted((tux_subset / c).glob("*.png"))[::9][:2]]
    m = curate(tux_index, queries, CurateParams(per_query=4), tmp_path, set_id="tux")
    rows = pq.read_table(tmp_path / "tux" / "samples.parquet").to_pylist()
    own = sum(r["pool_key"].split("/")[0] == r["query_label"] for r in rows) / len(rows)
    chance = sum(sizes[q.label] for q in queries) / len(queries) / len(keys)
    print(f"balanced set of {len(rows)} from {len(queries)} queries of {targets}: {own:.0%} share the "
          f"query's category (a random draw: {chance:.0%}); excluded {m.counts.excluded}")
    assert m.counts.emitted == 4 * len(queries) and m.counts.excluded >= len(queries)
    assert own >= 0.5 and own > 2.5 * chance
