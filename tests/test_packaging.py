"""The distribution installs `operators/` and `datasets/` as `invdiff.operators` / `invdiff.datasets`.

Checked for both install modes: the editable install this test suite runs from, and a regular
wheel built from the source tree and installed (without dependencies) into a fresh target folder.
Neither exposes top-level `operators` or `datasets` packages.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib.util, json, sys
import invdiff, invdiff.operators, invdiff.datasets, invdiff.operators.registry
print(json.dumps({
    "invdiff": invdiff.__file__,
    "operators": invdiff.operators.__file__,
    "datasets": invdiff.datasets.__file__,
    "top_operators": importlib.util.find_spec("operators") is not None,
    "top_datasets_is_ours": (importlib.util.find_spec("datasets") or type("s", (), {"origin": ""})).origin.startswith(sys.argv[1]),
    "version": invdiff.__version__,
}))
"""


def _probe(env: dict, cwd: Path, root_marker: str) -> dict:
    import json

    out = subprocess.run(
        [sys.executable, "-c", PROBE, root_marker], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_editable_install_maps_operators_and_datasets(tmp_path):
    info = _probe(dict(os.environ), tmp_path, str(ROOT))
    assert Path(info["operators"]) == ROOT / "operators" / "__init__.py"
    assert Path(info["datasets"]) == ROOT / "datasets" / "__init__.py"
    assert not info["top_operators"], "a top-level `operators` package must not be importable"
    assert not info["top_datasets_is_ours"]


def test_wheel_install_maps_operators_and_datasets(tmp_path):
    dist, target = tmp_path / "dist", tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("invdiff-*.whl")
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert inst.returncode == 0, inst.stderr[-3000:]
    assert not (target / "operators").exists() and not (target / "datasets").exists()
    # Sub-packages of the mapped folders are shipped too (e.g. operators/pde/).
    for folder in ("operators", "datasets"):
        for sub in (ROOT / folder).rglob("__init__.py"):
            rel = sub.relative_to(ROOT / folder)
            assert (target / "invdiff" / folder / rel).exists(), f"{folder}/{rel} missing from the wheel"
    env = dict(os.environ, PYTHONPATH=str(target))
    info = _probe(env, tmp_path, str(ROOT))
    assert Path(info["invdiff"]).is_relative_to(target)
    assert Path(info["operators"]) == target / "invdiff" / "operators" / "__init__.py"
    assert Path(info["datasets"]) == target / "invdiff" / "datasets" / "__init__.py"
    assert not info["top_operators"]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)
    return [b.strip() for b in blocks]


def test_readme_starts_with_two_setup_commands_and_ci_runs_the_second():
    cmds = _readme_commands()
    assert len(cmds) >= 2
    run_job, run_tests = cmds[0], cmds[1]
    assert "invdiff demo" in run_job
    assert "pytest" in run_tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert run_tests in ci, ".ci/run must run the README's test command verbatim"
    # Both commands install the same way.
    assert run_job.split("&& .venv/bin/invdiff")[0] == run_tests.split("&& .venv/bin/python -m pytest")[0]


@pytest.mark.parametrize("pin", ["torch==2.14.1", "torchvision==0.29.1"])
def test_ci_pins_torch_pair(pin):
    assert pin in (ROOT / "constraints.txt").read_text().split()


#: what the wheel may carry in shipped weights and their cards (``invdiff/assets``), in bytes: the
#: issues' "assets budget" (20 MB), so that ``pip install`` stays small
ASSETS_BUDGET = 20_000_000


def test_shipped_assets_stay_within_the_budget():
    files = [p for p in (ROOT / "invdiff" / "assets").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    total = sum(p.stat().st_size for p in files)
    largest = sorted(files, key=lambda p: p.stat().st_size)[-3:]
    assert total <= ASSETS_BUDGET, f"invdiff/assets holds {total / 1e6:.1f} MB (budget {ASSETS_BUDGET / 1e6:.0f} MB); largest: {largest}"
