"""The core's documents and registries: manifests read through their model, strategies and methods
found by name, the index's preprocessing checked on open, the IVF layer found under wrappers."""
import json

import numpy as np
import pytest

from curator.curate import curate
from curator.errors import CuratorError
from curator.formats import CurateParams, DistillConfig, Method, TransferManifest, load_doc
from curator.queries import load_queries
from curator.retrieval import PoolIndex
from curator.strategies import _STRATEGIES, register_strategy, strategy_names
from curator.transfer import read_manifest
from helpers import make_image_folder, tiny_index
from index_builder import BuildConfig, build_index


@pytest.fixture(scope="module")
def pool(tiny_clip_spec, tmp_path_factory):
    root = tmp_path_factory.mktemp("fmt")
    tiny_index(root, tiny_clip_spec, 60, classes=3, seed=21)
    make_image_folder(root / "queries", 4, classes=2, seed=22)
    return root


def test_manifest_is_written_and_read_through_its_model(pool, tmp_path):
    m = curate(PoolIndex.open(pool / "index"), load_queries(pool / "queries"), CurateParams(per_query=3, dedup=1.0, exclude_threshold=1.0),
               tmp_path, set_id="s")
    assert isinstance(m, TransferManifest) and m.counts.emitted == len(m.queries) * 3
    raw = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert raw["__kind__"] == "wids-shard-index-v1" and raw["index"]["name"] == "index"
    assert read_manifest(tmp_path / "s") == m
    raw["counts"]["emited"] = 1  # a typo in a hand-edited manifest is caught, with the field named
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(CuratorError, match="emited"):
        read_manifest(tmp_path / "s")


def test_every_declared_strategy_has_one_implementation_and_no_other_name_registers():
    from typing import get_args

    from curator.formats.curate import Strategy

    assert set(_STRATEGIES) == set(get_args(Strategy)) == set(strategy_names())
    with pytest.raises(CuratorError, match="not declared"):
        register_strategy("first-items")
    with pytest.raises(ValueError, match="'balanced', 'class-balanced', 'threshold' or 'random'"):
        CurateParams(strategy="first-items")


def test_every_declared_method_has_one_implementation():
    from typing import get_args

    from distill import METHODS

    assert set(METHODS) == set(get_args(Method))


def test_distill_config_defaults_are_the_cli_defaults():
    from curator.cli import make_parser

    parser = make_parser()
    distill = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "distill")[1]
    flags = {a.dest: a for a in distill._actions}
    for name, info in DistillConfig.model_fields.items():
        if name in ("progress",):
            continue
        assert name in flags, f"DistillConfig.{name} has no flag"
        if info.default not in (None, True, False) and not info.is_required() and name != "token":
            assert f"(default: {info.default})" in flags[name].help, name


def test_reopening_an_index_checks_its_preprocessing(pool, tmp_path):
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(pool / "index", copy)
    manifest = json.loads((copy / "index.json").read_text())
    manifest["encoder"]["preprocess"]["mean"] = [0.1, 0.2, 0.3]  # as if a library upgrade changed it
    (copy / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(CuratorError, match="preprocessing differs.*mean"):
        PoolIndex.open(copy).encoder()
    PoolIndex.open(pool / "index").encoder()  # the untouched index opens and embeds


def test_the_ivf_layer_is_found_under_a_pre_transform(tiny_clip_spec, pool, tmp_path):
    build_index([str(pool / "pool")], tmp_path / "opq", BuildConfig(encoder=tiny_clip_spec, workers=0, progress=False,
                                                                    index_factory="PCAR16,IVF4,Flat"))
    index = PoolIndex.open(tmp_path / "opq")
    assert index._ivf() is not None and index._search_params(50) is not None  # k-scaled nprobe kept
    vecs = index.vectors(np.arange(5))
    cells = index.cells(vecs, 1)  # near-duplicate cells in the IVF layer's own (reduced) space
    assert cells.shape == (5, 1) and (cells >= 0).all() and (cells < 4).all()
    scores, ids = index.search(vecs, 10)
    assert all(i in row for i, row in zip(range(5), ids))  # each item finds itself (ties allowed: untrained model)
    assert load_doc(tmp_path / "opq" / "index.json", type(index.manifest)).index_factory == "PCAR16,IVF4,Flat"
