"""The house rules (docs/architecture.md): wings import the core, never each other; the core
imports no wing, except the CLI's command modules, which load a wing lazily inside ``run``;
experiments sit above the wings; no test module imports another."""
import ast
import os
import subprocess
import sys

import pytest

from helpers import REPO

WINGS = ("index_builder", "api", "distill")
ABOVE = "experiments"   # composes wings (never the service); nothing imports it but the CLI


def imports_of(path, top_level_only=False):
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("wing", WINGS)
def test_wings_do_not_import_each_other_or_experiments(wing):
    for path in (REPO / wing).rglob("*.py"):
        others = set(imports_of(path)) & (set(WINGS) - {wing} | {ABOVE})
        assert not others, f"{path.relative_to(REPO)} imports {others}"


def test_core_imports_no_wing_except_lazily_in_commands():
    for path in (REPO / "curator").rglob("*.py"):
        rel = path.relative_to(REPO)
        if rel.parts[:2] == ("curator", "commands") or rel.name == "cli.py":
            top = set(imports_of(path, top_level_only=True)) & (set(WINGS) | {ABOVE})
            assert not top, f"{rel} must import wings inside run(), not at the top ({top})"
        else:
            wings = set(imports_of(path)) & (set(WINGS) | {ABOVE})
            assert not wings, f"{rel} imports {wings}"


def test_experiments_never_reach_into_the_service():
    for path in (REPO / ABOVE).rglob("*.py"):
        assert "api" not in set(imports_of(path)), f"{path.relative_to(REPO)} imports the service wing"


def test_no_test_module_imports_another():
    for path in (REPO / "tests").rglob("*.py"):
        names = set(imports_of(path))
        assert not {n for n in names if n.startswith("test_") or n == "conftest"}, \
            f"{path.relative_to(REPO)} imports a test module; shared code belongs in tests/helpers.py"


def test_documents_cross_boundaries_as_core_models():
    """Every document's model is defined in the core's formats package, not in a wing."""
    for wing in WINGS + (ABOVE,):
        for path in (REPO / wing).rglob("*.py"):
            tree = ast.parse(path.read_text())
            formats = [n.value.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                       and isinstance(n.value, str) and n.value.startswith("curator.") and "/" in n.value]
            assert not formats, f"{path.relative_to(REPO)} defines document formats {formats}; move them to curator.formats"


def test_every_top_level_package_is_installed(tmp_path):
    """The installed ``curator`` command, run from any folder, can load every package its commands
    import lazily: ``experiments`` was once left out, and ``curator bench kt`` died on an ImportError."""
    packages = sorted(p.name for p in REPO.iterdir() if (p / "__init__.py").is_file())
    assert {"curator", "index_builder", "api", "distill", "experiments"} <= set(packages)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import importlib, sys; [importlib.import_module(p) for p in sys.argv[1:]]"
    proc = subprocess.run([sys.executable, "-c", code, *packages], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


PRODUCT = ("curator", "index_builder", "api", "distill", "experiments")
#: The HTTP protocol and the store's rows are models: none of them is indexed as a dict.
UNTYPED = ('["state"]', '["config"]', '["params"]', '["id"]')


def test_no_product_file_is_over_400_lines():
    long = [f"{p.relative_to(REPO)}: {n}" for pkg in PRODUCT for p in (REPO / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400]
    assert not long, long


def test_protocol_documents_are_models_not_dicts():
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for folder in ("curator", "distill", "api/routers")
             for p in (REPO / folder).rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
             if any(u in line for u in UNTYPED)]
    assert not found, found


def test_no_deferred_import_closes_a_cycle_in_the_core():
    """The formats import no strategy registry, encoders register their schemes on import, and
    experiments' reports need nothing from the bench module."""
    assert "strategies" not in set(imports_of_relative(REPO / "curator" / "formats" / "curate.py"))
    assert "kt" not in set(imports_of_relative(REPO / "experiments" / "kt_report.py"))
    registry = (REPO / "curator" / "encoders" / "registry.py").read_text()
    assert "_load_builtin" not in registry


def imports_of_relative(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module.split(".")[-1]
