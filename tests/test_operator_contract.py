"""The operator contract, over every registered factory (``invdiff.operators.available()``).

Each factory is called with the common arguments (``sigma``, ``gain``, ``noise_model``,
``generator``, ``device``, ``dtype``, :mod:`invdiff.operators.common`) at a small size, and
checked for: ``x_shape``/``y_shape`` (against the shape ``A`` returns), ``op.linear`` (against
deepinv's ``LinearPhysics``), the adjoint identity of linear operators (float64 and float32),
the dtype and device it was asked for, noise that the generator makes reproducible, and the one
rule for conflicting or bad common arguments. A factory added later is picked up
automatically; give it a small configuration in ``SMALL`` of ``tests/operator_configs.py`` if its defaults are slow.
"""
from __future__ import annotations

import math

import pytest
import torch
from deepinv.physics import GaussianNoise, LinearPhysics

from invdiff import operators
from tests.operator_configs import small

F64 = torch.float64
NAMES = sorted(operators.available())


def supports_poisson(op) -> bool:
    return getattr(op, "supports_poisson", True)


def rand(shape, seed, dtype=F64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("name", NAMES)
def test_common_arguments_shapes_linearity_dtype(name):
    op = small(name, sigma=0.05, generator=torch.Generator().manual_seed(0), device="cpu", dtype=F64)
    xs, ys = tuple(op.x_shape), tuple(op.y_shape)
    assert all(isinstance(n, int) and n >= 1 for n in (*xs, *ys)), (xs, ys)
    assert op.linear is (isinstance(op, LinearPhysics))
    x = rand((2, *xs), 1)
    y = op.A(x)
    assert tuple(y.shape) == (2, *ys) and y.dtype == F64
    # dtype and device honoured: every floating buffer is float64 and on the CPU
    for b in op.buffers():
        assert b.device.type == "cpu"
        if b.is_floating_point():
            assert b.dtype == F64, f"{name}: a {tuple(b.shape)} buffer is {b.dtype}"
    op32 = small(name)  # the same operator with its default dtype: same map (to float32 rounding)
    y32 = op32.A(x)
    assert float((y - y32).norm()) <= 1e-5 * float(y32.norm()) + 1e-12, f"{name}: dtype=float64 changed the operator"
    if op.linear:
        v = rand((2, *ys), 2)
        err = ((y * v).sum() - (x * op.A_adjoint(v)).sum()).abs() / (y.norm() * v.norm())
        assert err < 1e-12, f"{name}: float64 adjoint mismatch {float(err):.2e}"
        u32, v32 = x.float(), v.float()
        Au = op32.A(u32)
        err32 = ((Au * v32).sum() - (u32 * op32.A_adjoint(v32)).sum()).abs() / (Au.norm() * v32.norm())
        assert err32 < 1e-5, f"{name}: float32 adjoint mismatch {float(err32):.2e}"


@pytest.mark.parametrize("name", NAMES)
def test_generator_makes_the_noise_reproducible(name):
    def noisy(seed, **kw):
        op = small(name, sigma=0.1, generator=torch.Generator().manual_seed(seed), **kw)
        x = rand((2, *op.x_shape), 3, torch.float32)
        return op(x), op.A(x)

    (a, clean), (b, _), (c, _) = noisy(7), noisy(7), noisy(8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    r = (a - clean)[(a - clean) != 0]  # MRI-style operators put noise on sampled entries only
    assert r.numel() > 0
    # the level: std of n >= 16 draws within 5 sd of 0.1 (relative sd of a std ~ 1/sqrt(2n))
    if r.numel() >= 16:
        assert abs(float(r.std()) - 0.1) < 5 * 0.1 / math.sqrt(2 * r.numel())


@pytest.mark.parametrize("name", NAMES)
def test_gain_is_poisson_noise_or_rejected(name):
    op = small(name)
    if not supports_poisson(op):
        with pytest.raises(ValueError, match="gain"):
            small(name, gain=0.5)
        return
    ops = [small(name, gain=0.5, generator=torch.Generator().manual_seed(s)) for s in (1, 1)]
    assert type(ops[0].noise_model).__name__ == "PoissonNoise"
    x = rand((1, *op.x_shape), 4, torch.float32)
    z = ops[0].A(x).abs()  # any non-negative intensities
    assert torch.equal(ops[0].noise_model(z), ops[1].noise_model(z))


@pytest.mark.parametrize("name", NAMES)
def test_conflicting_or_bad_common_arguments_are_rejected(name):
    with pytest.raises(ValueError, match="noise_model or sigma"):
        small(name, sigma=0.1, noise_model=GaussianNoise(0.1))
    with pytest.raises(ValueError, match="noise_model or gain"):
        small(name, gain=0.1, noise_model=GaussianNoise(0.1))
    for bad in (float("inf"), float("nan"), -0.1):
        with pytest.raises(ValueError, match="sigma"):
            small(name, sigma=bad)
    with pytest.raises(ValueError, match="gain"):
        small(name, gain=0.0)
    with pytest.raises(TypeError, match="generator"):
        small(name, sigma=0.1, generator=0)
    with pytest.raises(TypeError, match="dtype"):
        small(name, dtype=torch.int64)
    with pytest.raises(ValueError, match="device"):
        small(name, device="no-such-device")


def test_noise_model_and_generator_rule():
    x = torch.ones(1, 5)
    # a model without its own generator gets (a copy with) the given one: reproducible
    draws = [operators.make("matrix", m=5, n=5, noise_model=GaussianNoise(0.1), generator=torch.Generator().manual_seed(0))(x)
             for _ in range(2)]
    assert torch.equal(*draws)
    mine = GaussianNoise(0.1)
    operators.make("matrix", m=5, n=5, noise_model=mine, generator=torch.Generator().manual_seed(0))
    assert mine.rng is None  # the caller's object is not changed
    with pytest.raises(ValueError, match="own generator"):
        operators.make("matrix", noise_model=GaussianNoise(0.1, rng=torch.Generator()), generator=torch.Generator())
    same = torch.Generator().manual_seed(1)
    operators.make("matrix", noise_model=GaussianNoise(0.1, rng=same), generator=same)  # the same one: fine


@pytest.mark.parametrize("name,kw,match", [
    ("blur-motion", dict(l=0.0), "l"),
    ("blur-motion", dict(l=-1.0), "l"),
    ("blur-gaussian", dict(blur_sigma=float("inf")), "blur_sigma"),
    ("blur-uniform", dict(kernel_size=0), "size"),
    ("ct-sparse-view", dict(views=0), "angles"),
    ("ct-sparse-view", dict(n_detectors=10), "fan"),
    ("ct-limited-angle", dict(max_angle=float("nan")), "max_angle"),
    ("ct-fan", dict(source_distance=float("inf")), "source_distance"),
    ("mri-4x", dict(acceleration=float("nan")), "acceleration"),
    ("matrix", dict(s_max=float("inf")), "s_max"),
    ("pde-burgers", dict(nu=float("inf")), "nu"),
    ("pde-heat", dict(velocity=float("nan")), "velocity"),
    ("pde-heat", dict(kappa=float("inf")), "kappa"),
    ("pde-ns2d", dict(forcing_amplitude=float("inf")), "forcing_amplitude"),
    ("pde-subsample-time", dict(n_frames=0), "n_frames"),
])
def test_broken_settings_fail_at_construction(name, kw, match):
    with pytest.raises(ValueError, match=match):
        small(name, **kw)


def test_complex_noise_option_is_circular_with_complex_std_sigma():
    from invdiff.operators.common import resolve_common

    z = torch.zeros(4000, 2)
    draws = [resolve_common(sigma=0.2, complex_noise=True, generator=torch.Generator().manual_seed(0)).noise_model(z) for _ in range(2)]
    assert torch.equal(*draws)
    # E|n|^2 = sigma^2: each channel has std sigma / sqrt 2; 8000 draws, relative sd 1/sqrt(2 * 8000) < 0.8%
    std = float(draws[0].std())
    assert abs(std - 0.2 / 2**0.5) < 5 * (0.2 / 2**0.5) / (2 * z.numel()) ** 0.5
    with pytest.raises(ValueError, match="gain"):
        resolve_common(gain=0.1, complex_noise=True)


def test_complex_channel_conversions_live_in_one_module():
    # operators/ and datasets/ convert (real, imag) channels only through invdiff.operators.complex
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"view_as_real\(|view_as_complex\(|torch\.complex\(|stack\(\[\s*\w+\.real,\s*\w+\.imag\]")
    offenders = [f"{p.relative_to(root)}:{i}" for folder in ("operators", "datasets") for p in sorted((root / folder).rglob("*.py"))
                 if p.name != "complex.py" for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"use invdiff.operators.complex instead: {offenders}"
