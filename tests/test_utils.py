"""Shared helpers: atomic files, input checks, generator-driven randomness, sigma broadcasting."""
from __future__ import annotations

import pytest
import torch

from invdiff.diffusion.denoiser import expand_sigma, score
from invdiff.utils import atomic_path, check_finite, check_floating, check_positive, check_shape, randn


def test_atomic_path_keeps_old_file_on_crash(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("crash in the middle")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target], "the temporary file must be removed"


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "result.txt"
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"


def test_checks_give_expected_and_got():
    with pytest.raises(ValueError, match=r"expected shape \(\*, 3\), got \(2, 4\)"):
        check_shape("x", torch.zeros(2, 4), (None, 3))
    with pytest.raises(TypeError, match="floating-point"):
        check_floating("x", torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="1 NaN/inf"):
        check_finite("y", torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="expected > 0"):
        check_positive("sigma", 0.0)
    check_positive("sigma", 0.0, allow_zero=True)


def test_randn_follows_generator_and_dtype():
    a = randn((3, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = randn((3, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert a.dtype == torch.float64 and torch.equal(a, b)


def test_expand_sigma_and_score_of_a_gaussian_denoiser():
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    s = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert expand_sigma(s, x).shape == (3, 1, 1)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        expand_sigma(torch.ones(2), x)
    # N(0, I) data: D(x, sigma) = x / (1 + sigma^2), score = -x / (1 + sigma^2).
    D = lambda x, sigma: x / (1 + expand_sigma(sigma, x) ** 2)  # noqa: E731
    torch.testing.assert_close(score(D, x, s), -x / (1 + s.reshape(3, 1, 1) ** 2))


def test_atomic_path_final_file_has_umask_mode(tmp_path):
    import os

    target = tmp_path / "table.md"
    with atomic_path(target) as tmp:
        tmp.write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)
