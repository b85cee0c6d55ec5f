"""Mechanical style rules that keep the core pure and the project pickle-free."""

from __future__ import annotations

import ast
from pathlib import Path

import rsm

ROOT = Path(rsm.__file__).parent
FORBIDDEN_IN_CORE = {"asyncio", "socket", "time", "random", "threading", "lmdb", "os", "select", "subprocess", "datetime", "selectors"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_consensus_core_does_no_io_and_draws_no_global_randomness() -> None:
    files = sorted((ROOT / "consensus").glob("*.py"))
    assert files
    for path in files:
        bad = imported_modules(path) & FORBIDDEN_IN_CORE
        assert set() == bad, f"{path.name} imports {sorted(bad)}"


def test_consensus_core_imports_only_lower_layers() -> None:
    for path in sorted((ROOT / "consensus").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rsm."):
                assert node.module.startswith(("rsm.consensus", "rsm.errors")), f"{path.name}: {node.module}"


def test_no_pickle_or_eval_anywhere() -> None:
    for path in sorted(ROOT.rglob("*.py")):
        assert not imported_modules(path) & {"pickle", "marshal", "shelve"}, path
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec"}, f"{path}: {node.func.id}()"
