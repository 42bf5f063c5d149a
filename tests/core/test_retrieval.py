"""The pool index as curations read it: its recorded preprocessing, and the IVF layer under any wrapping."""
import json
import shutil

import numpy as np
import pytest

from curator.errors import CuratorError
from curator.formats import load_doc
from curator.retrieval import PoolIndex


def test_reopening_an_index_checks_its_preprocessing(tiny_index, tmp_path):
    index = tiny_index(60, classes=3, seed=21)
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    manifest = json.loads((copy / "index.json").read_text())
    manifest["encoder"]["preprocess"]["mean"] = [0.1, 0.2, 0.3]  # as if a library upgrade changed it
    (copy / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(CuratorError, match="preprocessing differs.*mean"):
        PoolIndex.open(copy).encoder()
    PoolIndex.open(index).encoder()  # the untouched index opens and embeds


def test_the_ivf_layer_is_found_under_a_pre_transform(tiny_index):
    path = tiny_index(60, classes=3, seed=21, index_factory="PCAR16,IVF4,Flat")
    index = PoolIndex.open(path)
    assert index._ivf() is not None and index._search_params(50) is not None  # k-scaled nprobe kept
    vecs = index.vectors(np.arange(5))
    cells = index.cells(vecs, 1)  # near-duplicate cells in the IVF layer's own (reduced) space
    assert cells.shape == (5, 1) and (cells >= 0).all() and (cells < 4).all()
    scores, ids = index.search(vecs, 10)
    assert all(i in row for i, row in zip(range(5), ids))  # each item finds itself (ties allowed: untrained model)
    assert load_doc(path / "index.json", type(index.manifest)).index_factory == "PCAR16,IVF4,Flat"
