"""The house rules (docs/architecture.md): wings import the core, never each other; the core
imports no wing, except the CLI, which loads each wing lazily inside its subcommand."""
import ast

import pytest

from conftest import REPO

WINGS = ("index_builder", "api", "distill")


def imports_of(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("wing", [w for w in WINGS if (REPO / w).is_dir()])
def test_wings_do_not_import_each_other(wing):
    for path in (REPO / wing).rglob("*.py"):
        others = set(imports_of(path)) & (set(WINGS) - {wing})
        assert not others, f"{path.relative_to(REPO)} imports {others}"


def test_core_imports_no_wing_except_lazily_in_the_cli():
    for path in (REPO / "curator").rglob("*.py"):
        wings = set(imports_of(path)) & set(WINGS)
        if path.name == "cli.py":
            top_level = {n.module.split(".")[0] for n in ast.parse(path.read_text()).body
                         if isinstance(n, ast.ImportFrom) and n.module}
            assert not top_level & set(WINGS), "cli.py must import wings inside subcommands"
        else:
            assert not wings, f"{path.relative_to(REPO)} imports {wings}"
