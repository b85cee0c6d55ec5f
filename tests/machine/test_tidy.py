"""Mechanical style rules for the machine layer and the example machines:
no pickle or eval (decoders accept data only), no wall clock and no global
random generator (apply must be deterministic)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ["rsm/statemachine.py", "rsm/sessions.py", "rsm/lmdb_machine.py",
         "examples/counter/machine.py", "examples/kvstore/machine.py"]
FORBIDDEN_MODULES = {"pickle", "marshal", "shelve", "dill", "time", "datetime", "socket", "asyncio", "secrets"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", FILES)
def test_no_pickle_eval_clock_or_global_random(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text(), path)
    assert set() == imported_modules(tree) & FORBIDDEN_MODULES
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path}:{node.lineno}"
        # The random module may only be used for its Random class (seeded).
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "random":
            assert "Random" == node.attr, f"{path}:{node.lineno}: random.{node.attr}"
