"""The core's documents and registries: manifests read through their model, strategies and methods
found by name, the index's preprocessing checked on open, the IVF layer found under wrappers."""
import json

import pytest

from curator.curate import curate
from curator.errors import CuratorError
from curator.formats import CurateParams, DistillConfig, Method, TransferManifest
from curator.queries import load_queries
from curator.retrieval import PoolIndex
from curator.strategies import _STRATEGIES, register_strategy, strategy_names
from curator.transfer import read_manifest
from helpers import make_image_folder


@pytest.fixture(scope="module")
def pool(tiny_index, tmp_path_factory):
    root = tmp_path_factory.mktemp("fmt")
    tiny_index(60, classes=3, seed=21, into=root)
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
