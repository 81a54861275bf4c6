"""Source hygiene that breaks rendered docs silently: math in non-raw docstrings.

``"\\tau"`` in a non-raw string is a TAB followed by ``au``, ``"\\frac"`` a form feed, ``"\\mu"``
a SyntaxWarning (an error in future Pythons). Docstrings with LaTeX must be raw or escape every
backslash.
"""
from __future__ import annotations

import ast
import pathlib
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("invdiff", "operators", "datasets") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_invalid_escapes_and_no_control_characters_in_docstrings(path):
    src = path.read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = compile(src, str(path), "exec", flags=ast.PyCF_ONLY_AST)  # invalid escapes raise here
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                bad = sorted({repr(c) for c in doc if c in "\a\b\f\t\v"})
                assert not bad, f"{path.name}: docstring of {getattr(node, 'name', 'module')} contains {bad}"
