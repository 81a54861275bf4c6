"""Samples of DPS, RED-Diff, the SMC ensemble and twisted SMC stay bit-identical across refactors
of the sampler core (reference written before the sampler-core v2 refactor, issue 10; see
``tests/refactor_cases.py``). The explicit-split SMC entries were rewritten once when its
operator-norm estimate became seeded (deepinv's power method draws its start from the global
random state, so those samples were not reproducible before)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.refactor_cases import cases, run_case

REFERENCE = load_file(str(Path(__file__).parent / "data" / "sampler_reference.safetensors"))


@pytest.mark.parametrize("name", sorted(cases()))
def test_samples_bit_identical_to_reference(name):
    out = run_case(name)
    assert set(out) == {k for k in REFERENCE if k.startswith(name + ".")}
    for key, value in out.items():
        assert torch.equal(value, REFERENCE[key]), f"{key}: max difference {float((value - REFERENCE[key]).abs().max())}"
