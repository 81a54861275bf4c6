"""Samples of DPS, RED-Diff, the SMC ensemble and twisted SMC stay bit-identical across refactors
of the sampler core (reference written before the sampler-core v2 refactor, issue 10; see
``tests/refactor_cases.py``). The explicit-split SMC entries were rewritten once when its
operator-norm estimate became seeded (deepinv's power method draws its start from the global
random state, so those samples were not reproducible before).

The MRI cases go through torch's CPU FFT, whose rounding depends on the instruction set it
dispatches to (the reference was written on an AVX-512 machine; an AVX2-only one differs by up to
2e-5 after a few sampler steps, the log-weights, of order 1e4, by 3e-2): they are compared with
``|a - b| <= 1e-4 + 1e-5 |b|``, the others bit for bit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.refactor_cases import cases, run_case

#: tolerance of the cases that use the CPU FFT (module docstring)
FFT_ATOL, FFT_RTOL = 1e-4, 1e-5
REFERENCE = load_file(str(Path(__file__).parent / "data" / "sampler_reference.safetensors"))


@pytest.mark.parametrize("name", sorted(cases()))
def test_samples_bit_identical_to_reference(name):
    out = run_case(name)
    assert set(out) == {k for k in REFERENCE if k.startswith(name + ".")}
    atol, rtol = (FFT_ATOL, FFT_RTOL) if name.endswith("_mri") else (0.0, 0.0)
    for key, value in out.items():
        ref = REFERENCE[key]
        assert value.shape == ref.shape and value.dtype == ref.dtype, key
        excess = float(((value - ref).abs() - atol - rtol * ref.abs()).max())
        assert excess <= 0, f"{key}: max difference {float((value - ref).abs().max())} (allowed {atol} + {rtol} |ref|)"
