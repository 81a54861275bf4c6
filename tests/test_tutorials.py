"""The tutorials (``tutorials/*.ipynb``) run top to bottom in their small setting, and are committed
without outputs.

Each notebook is executed by nbclient with ``INVDIFF_TUTORIAL_SMALL=1`` (its first code cell reads
it and shrinks sizes and steps) in a kernel started by *this* interpreter (a kernelspec written to
a temporary ``JUPYTER_PATH`` entry, which takes precedence over any user-installed ``python3``
kernel), so the fresh virtual environment of CI is the one that is tested. A failing cell fails the
test with the cell's traceback. Each notebook takes about 30-50 s on one core of the shared CI
machine (most of it imports and the kernel start-up); a notebook that cannot stay under about
60 s in its small setting belongs under ``SLOW``.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
SLOW: set[str] = set()  # notebook names over ~60 s in the small setting (none so far)


def _params():
    for p in NOTEBOOKS:
        marks = [pytest.mark.slow] if p.name in SLOW else []
        yield pytest.param(p, id=p.stem, marks=marks)


def test_there_are_tutorials():
    names = [p.name for p in NOTEBOOKS]
    for prefix in ("01_", "02_", "03_", "04_", "05_"):
        assert any(n.startswith(prefix) for n in names), f"missing tutorial {prefix}*: found {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    text = path.read_text()
    assert "output_type" not in text, f"{path.name}: outputs committed; strip them (jupyter nbconvert --clear-output --inplace)"
    nb = json.loads(text)
    counts = [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c is None for c in counts), f"{path.name}: execution counts committed: {counts}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_small_setting_and_readme_link(path):
    nb = json.loads(path.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "INVDIFF_TUTORIAL_SMALL" in "".join(first["source"]), f"{path.name}: the first code cell must read INVDIFF_TUTORIAL_SMALL"
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"tutorials/{re.escape(path.name)}", readme), f"README.md does not link tutorials/{path.name}"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernelspec that starts ipykernel with this interpreter, first on the Jupyter path."""
    spec = tmp_path / "jupyter" / "kernels" / "invdiff-tutorial"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "invdiff tutorial (test interpreter)",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter") + os.pathsep + os.environ.get("JUPYTER_PATH", ""))
    monkeypatch.setenv("INVDIFF_TUTORIAL_SMALL", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return "invdiff-tutorial"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", list(_params()))
def test_notebook_runs(path, kernel_name, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.read(path, as_version=4)
    work = tmp_path / "work"  # the notebook's working directory: nothing is written into the repository
    work.mkdir()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name=kernel_name, resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError (with the cell and its traceback) on the first failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
