"""Sliced Wasserstein against exact references: scipy's 1-D W1, replication = integer weights,
and the closed form SW_2 of a translation."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import wasserstein_distance

from invdiff.metrics import sliced_wasserstein, wasserstein_1d


def test_one_dimension_equals_scipy_w1_with_weights():
    """In d = 1 every direction is +-1, so SW_1 is W_1 exactly (scipy, weighted, unequal sizes)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 1, generator=g, dtype=torch.float64), 1.5 + 2 * torch.rand(23, 1, generator=g, dtype=torch.float64)
    wa, wb = torch.rand(37, generator=g, dtype=torch.float64), torch.rand(23, generator=g, dtype=torch.float64)
    ref = wasserstein_distance(a[:, 0].numpy(), b[:, 0].numpy(), wa.numpy(), wb.numpy())
    got = sliced_wasserstein(a, b, n_projections=3, p=1, generator=g, weights_a=wa, weights_b=wb)
    assert got.item() == pytest.approx(ref, rel=1e-10)
    ref_u = wasserstein_distance(a[:, 0].numpy(), b[:, 0].numpy())
    assert sliced_wasserstein(a, b, n_projections=2, p=1, generator=g).item() == pytest.approx(ref_u, rel=1e-10)


def test_equal_size_w2_is_sorted_matching():
    u, v = torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[0.0, 5.0, 1.0]])
    # sorted: (1, 2, 3) vs (0, 1, 5): W2^2 = (1 + 1 + 4) / 3
    assert wasserstein_1d(u, v).item() == pytest.approx(math.sqrt(2.0))


def test_integer_weights_equal_replication():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(40, 3, generator=g, dtype=torch.float64)
    counts = torch.tensor([1, 2, 3, 1, 4])
    rep = a.repeat_interleave(counts, dim=0)
    w = sliced_wasserstein(a, b, 64, generator=torch.Generator().manual_seed(2), weights_a=counts.double())
    r = sliced_wasserstein(rep, b, 64, generator=torch.Generator().manual_seed(2))
    assert w.item() == pytest.approx(r.item(), rel=1e-12)


def test_translation_closed_form():
    """Shifting by m gives W_2 = |theta . m| per direction, so SW_2^2 = |m|^2 / d. With L = 4000
    directions in d = 4 the estimate of E[(theta.m)^2] has relative sd sqrt(Var/L) = 1.6%;
    (Var = 3|m|^4 / (d(d+2)) - |m|^4 / d^2), and the bound 8% is 5 sd."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(300, 4, generator=g, dtype=torch.float64)
    m = torch.tensor([2.0, -1.0, 0.5, 3.0], dtype=torch.float64)
    sw2 = sliced_wasserstein(a, a + m, n_projections=4000, generator=g).item() ** 2
    assert sw2 == pytest.approx(float(m @ m) / 4, rel=0.08)


def test_flattens_extra_axes_and_is_zero_on_itself():
    x = torch.randn(6, 2, 3, 3)
    assert sliced_wasserstein(x, x).item() == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: sliced_wasserstein(torch.zeros(5), torch.zeros(5, 1)),
        lambda: sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 3)),
        lambda: sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 2), n_projections=0),
        lambda: sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 2), p=0.5),
        lambda: sliced_wasserstein(torch.full((5, 2), float("nan")), torch.zeros(5, 2)),
        lambda: sliced_wasserstein(torch.zeros(5, 2), torch.zeros(4, 2), weights_a=torch.ones(4)),
        lambda: sliced_wasserstein(torch.zeros(5, 2), torch.zeros(4, 2), weights_a=-torch.ones(5)),
    ],
)
def test_bad_input(call):
    with pytest.raises(ValueError):
        call()


def test_bad_types():
    with pytest.raises(TypeError):
        sliced_wasserstein(torch.zeros(5, 2, dtype=torch.long), torch.zeros(5, 2))
