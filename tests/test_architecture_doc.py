"""The new-sampler example of docs/architecture.md runs and samples the exact posterior mean of a
Gaussian problem it can solve (first coordinate observed with noise 0.1: mean 1 / 1.01)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from invdiff.diffusion.gmm import Gaussian
from invdiff.operators import Matrix


def test_architecture_example_sampler_runs():
    src = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    code = re.search(r"```python\n(.*?)```", src, re.S).group(1)
    assert len(code.strip().splitlines()) <= 25  # the "20-line example" stays short
    ns: dict = {}
    exec(code.replace("from invdiff.samplers.registry import register", "register = lambda *a: (lambda c: c)"), ns)
    prior = Gaussian(torch.zeros(2, dtype=torch.float64), 1.0)
    physics = Matrix(torch.eye(2, dtype=torch.float64)[:1], sigma=0.1)
    out = ns["ProxSampler"](prior, steps=30, progress=False).sample(
        torch.ones(1, 1, dtype=torch.float64), physics, n_samples=400, generator=torch.Generator().manual_seed(0))
    # exact posterior: N(1/1.01, 0.01/1.01) on the first coordinate; 5 standard errors of the mean
    assert abs(float(out.mean()[0, 0]) - 1 / 1.01) < 5 * (0.01 / 1.01) ** 0.5 / 400**0.5 + 0.02
