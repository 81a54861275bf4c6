"""`invdiff demo --quick`: runs end to end, writes its files, and its metrics are right."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from invdiff.cli import main


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "| task |" in text and "over TV" in text
    res = json.loads((out / "results.json").read_text())
    methods = {(r["task"], r["method"]) for r in res["rows"]}
    for task, base in (("ct", "FBP"), ("mri", "zero-filled")):
        for m in (base, "TV", "DPS", "RED-Diff", "DDS"):
            assert (task, m) in methods
    assert all(np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 for r in res["rows"])
    assert (out / "demo.png").stat().st_size > 0 and (out / "demo.md").exists()
    with h5py.File(out / "results.h5") as f:
        truth = f["ct/truth"][()]
        fbp = f["ct/FBP/mean"][()]
        std, mean = f["ct/DDS/std"][()], f["ct/DDS/mean"][()]
        assert std.shape == truth.shape
        # the uncertainty columns: Pearson correlation of |error| and std over the pixels (numpy),
        # a coverage fraction and an ESS between 1 and N
        unc = next(r for r in res["rows"] if r["task"] == "ct" and r["method"] == "DDS")
        corr = np.corrcoef(np.abs(mean - truth).ravel(), std.ravel())[0, 1]
        assert unc["err_std_corr"] == pytest.approx(corr, abs=2e-3)
        assert 0 <= unc["coverage90"] <= 1 and unc["min_ess"] == pytest.approx(4)  # 4 equally weighted draws
        assert all(r["coverage90"] == "" for r in res["rows"] if r["method"] != "DDS")
        # the PSNR in the table is that of the stored arrays (independent numpy computation)
        row = next(r for r in res["rows"] if r["task"] == "ct" and r["method"] == "FBP")
        assert row["psnr"] == pytest.approx(10 * np.log10(1 / np.mean((fbp - truth) ** 2)), abs=1e-4)
        # MRI metrics are on the magnitude
        t, z = f["mri/truth"][()], f["mri/zero-filled/mean"][()]
        row = next(r for r in res["rows"] if r["task"] == "mri" and r["method"] == "zero-filled")
        mag = lambda a: np.sqrt((a**2).sum(1))
        assert row["psnr"] == pytest.approx(10 * np.log10(1 / np.mean((mag(z) - mag(t)) ** 2)), abs=1e-4)


def test_demo_bad_task():
    assert main(["demo", "--tasks", "pet", "--quick"]) == 2
