"""The sampler base API: weighted moments against numpy, the measurement set-up, NaN handling,
trajectory recording and NFE counting."""
from __future__ import annotations

import deepinv as dinv
import numpy as np
import pytest
import torch

from invdiff.operators import Matrix
from invdiff.samplers.likelihood import PoissonLikelihood
from invdiff.samplers.base import (
    CountingDenoiser,
    PosteriorSamples,
    Recorder,
    Sampler,
    handle_nonfinite,
    make_problem,
)


def test_weighted_mean_std_ess_match_numpy():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(7, 3, 2, 4, generator=g, dtype=torch.float64)
    logw = 3 * torch.randn(7, 3, generator=g, dtype=torch.float64)
    out = PosteriorSamples(samples, logw)
    s, w = samples.numpy(), np.exp(logw.numpy())
    for b in range(3):
        mean = np.average(s[:, b], axis=0, weights=w[:, b])
        var = np.average((s[:, b] - mean) ** 2, axis=0, weights=w[:, b])
        np.testing.assert_allclose(out.mean()[b].numpy(), mean, rtol=1e-12)
        np.testing.assert_allclose(out.std()[b].numpy(), np.sqrt(var), rtol=1e-12)
        wn = w[:, b] / w[:, b].sum()
        np.testing.assert_allclose(float(out.ess()[b]), 1 / (wn**2).sum(), rtol=1e-12)


def test_unweighted_moments_and_log_weight_shift_invariance():
    samples = torch.randn(5, 2, 3, dtype=torch.float64)
    out = PosteriorSamples(samples, None)
    torch.testing.assert_close(out.mean(), samples.mean(0))
    torch.testing.assert_close(out.std(), samples.std(0, unbiased=False))
    assert torch.allclose(out.ess(), torch.full((2,), 5.0, dtype=torch.float64))
    lw = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(PosteriorSamples(samples, lw).mean(), PosteriorSamples(samples, lw + 1e4).mean())


def test_posterior_samples_validates_shapes():
    with pytest.raises(ValueError, match="n_samples, B"):
        PosteriorSamples(torch.zeros(3, 2, 4), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="n_samples, B"):
        PosteriorSamples(torch.zeros(3), None)


def test_make_problem_noise_level_and_repeat():
    physics = dinv.physics.Denoising(noise_model=dinv.physics.GaussianNoise(0.2))
    y = torch.arange(8.0).reshape(2, 1, 2, 2)
    p = make_problem(y, physics, n_samples=3)
    assert p.y.shape == (6, 1, 2, 2) and p.x_shape == (1, 2, 2) and p.n == 6
    torch.testing.assert_close(p.fold(p.y)[2], y)  # sample-major: every copy is the whole batch
    assert torch.allclose(p.sigma_y, torch.tensor(0.2))
    p2 = make_problem(y, physics, sigma_y=torch.tensor([0.1, 0.3]))  # explicit, per measurement
    assert p2.sigma_y.flatten().tolist() == pytest.approx([0.1, 0.3])
    # negative log-likelihood ||y - A x||^2 / (2 sigma_y^2)
    x = torch.zeros(6, 1, 2, 2)
    torch.testing.assert_close(p.nll(x), (p.y**2).flatten(1).sum(1) / (2 * 0.2**2))


def test_make_problem_poisson_whitening():
    physics = Matrix(torch.eye(3), noise_model=dinv.physics.PoissonNoise(gain=0.5))
    y = torch.tensor([[0.0, 1.0, 4.0]])
    p = make_problem(y, physics)
    assert isinstance(p.likelihood, PoissonLikelihood)
    # Var y = g * max(y, g): the DPS Lambda weighting, floored at one count
    torch.testing.assert_close(p.whitened_residual(torch.zeros(1, 3)), y / torch.sqrt(0.5 * torch.tensor([0.5, 1.0, 4.0])))


def test_make_problem_errors():
    physics = Matrix(torch.eye(2))  # noiseless: no sigma_y
    with pytest.raises(ValueError, match="sigma_y"):
        make_problem(torch.zeros(1, 2), physics)
    with pytest.raises(ValueError, match="finite"):
        make_problem(torch.tensor([[0.0, float("inf")]]), physics, sigma_y=0.1)
    with pytest.raises(ValueError, match="> 0"):
        make_problem(torch.zeros(1, 2), physics, sigma_y=0.0)
    with pytest.raises(TypeError, match="floating"):
        make_problem(torch.zeros(1, 2, dtype=torch.long), physics, sigma_y=0.1)
    with pytest.raises(ValueError, match="n_samples"):
        make_problem(torch.zeros(1, 2), physics, n_samples=0, sigma_y=0.1)

    class Prior:
        x_shape = (3,)

        def __call__(self, x, sigma):
            return x

    with pytest.raises(ValueError, match=r"mismatch.*\(3,\).*\(2,\)"):
        make_problem(torch.zeros(1, 2), physics, sigma_y=0.1, prior=Prior())
    # a batched operator (one matrix per measurement) cannot follow the repeat of samples
    batched = Matrix(torch.randn(2, 2, 2), sigma=0.1)
    with pytest.raises(ValueError, match="does not broadcast"):
        make_problem(torch.zeros(2, 2), batched, n_samples=3)


def test_signal_shape_from_adjoint_or_argument():
    physics = dinv.physics.Inpainting(img_size=(1, 4, 4), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.1))
    assert make_problem(torch.zeros(1, 1, 4, 4), physics).x_shape == (1, 4, 4)

    class NonLinear(dinv.physics.Physics):
        def A(self, x, **kw):
            return x.pow(2).sum(dim=(1, 2, 3))[:, None]

    nl = NonLinear(noise_model=dinv.physics.GaussianNoise(0.1))
    with pytest.raises(ValueError, match="x_shape"):
        make_problem(torch.zeros(1, 1), nl)
    assert make_problem(torch.zeros(1, 1), nl, x_shape=(1, 2, 2)).x_shape == (1, 2, 2)


def test_recorder_and_nonfinite_handling():
    p = make_problem(torch.zeros(2, 3), Matrix(torch.eye(3), sigma=0.1), n_samples=2)
    rec = Recorder(3, p)
    for i in range(8):
        rec(i, torch.full((4, 3), float(i)), last=i == 7)
    trace = rec.into({})
    assert trace["trajectory_steps"] == [0, 3, 6, 7]
    assert trace["trajectory"].shape == (4, 2, 2, 3) and float(trace["trajectory"][-1, 0, 0, 0]) == 7.0
    with pytest.raises(ValueError, match="record_every"):
        Recorder(0, p)

    x = torch.tensor([[1.0, float("nan")], [2.0, 3.0]])
    with pytest.raises(FloatingPointError, match=r"step 5.*rows \[0\]"):
        handle_nonfinite(x, 5, "raise")
    trace = {}
    fixed = handle_nonfinite(x, 5, "clip", fallback=torch.full_like(x, -1.0), trace=trace)
    assert fixed.tolist() == [[1.0, -1.0], [2.0, 3.0]] and trace["nonfinite"] == [(5, 1)]


def test_counting_denoiser_and_base_contract():
    seen = []
    D = CountingDenoiser(lambda x, s: seen.append(s) or x)
    D(torch.zeros(3, 2), 0.5)
    assert D.nfe == 1 and seen[0].shape == (3,) and float(seen[0][0]) == 0.5  # float sigma -> (B,)
    with pytest.raises(ValueError, match="shape"):
        CountingDenoiser(lambda x, s: x[:1])(torch.zeros(3, 2), 0.5)
    with pytest.raises(TypeError, match="prior"):
        Sampler(3.0)
    with pytest.raises(ValueError, match="on_nan"):
        Sampler(lambda x, s: x, on_nan="ignore")

    class Identity(Sampler):  # the smallest sampler: returns the adjoint n_samples times
        def _sample(self, problem, generator, record):
            x = problem.physics.A_adjoint(problem.y)
            record(0, x, last=True)
            return PosteriorSamples(problem.fold(x), None, nfe=self.denoiser.nfe)

    y = torch.randn(2, 3)
    out = Identity(lambda x, s: x).sample(y, Matrix(torch.eye(3), sigma=0.1), n_samples=4, record_every=1)
    assert out.samples.shape == (4, 2, 3) and out.trace["trajectory"].shape == (1, 4, 2, 3)
    torch.testing.assert_close(Identity(lambda x, s: x)(y, Matrix(torch.eye(3), sigma=0.1)), y)
    with pytest.raises(TypeError, match="generator"):
        Identity(lambda x, s: x).sample(y, Matrix(torch.eye(3), sigma=0.1), generator=0)


def test_benchmark_exact_weights_match_gmm_posterior():
    """The image benchmark's exact posterior weights over an empirical prior agree with the
    closed-form GaussianMixture posterior (an independent implementation: Kalman update)."""
    from invdiff.benchmarks.samplers import exact_weights
    from invdiff.diffusion.gmm import GaussianMixture

    g = torch.Generator().manual_seed(0)
    images = torch.randn(12, 5, generator=g, dtype=torch.float64)
    A = torch.randn(2, 5, generator=g, dtype=torch.float64)
    y = torch.randn(1, 2, generator=g, dtype=torch.float64)
    prior = GaussianMixture(torch.full((12,), 1 / 12, dtype=torch.float64), images, 0.0)
    post = prior.posterior(A, y[0], 0.7)
    torch.testing.assert_close(exact_weights(images, Matrix(A), y, 0.7), post.weights)


@pytest.mark.parametrize("renoise_corrected", [False, True])
def test_loop_renoises_with_the_network_or_the_corrected_estimate(renoise_corrected):
    """One DDIM (eta = 0) step from sigma 2 to 1 with a hook that returns a constant c, prior N(0, I):
    x0_hat = x / 5, and x_1 = c + (x_0 - x0_hat) / 2 (the network's noise estimate, DDS) or
    x_1 = c + (x_0 - c) / 2 (the corrected estimate's own, ``renoise_corrected``)."""
    from invdiff.diffusion.gmm import Gaussian
    from invdiff.samplers.loop import DiffusionLoop

    c = torch.full((3,), 0.7, dtype=torch.float64)

    class Const(DiffusionLoop):
        def correct(self, x0_hat, problem, i, state):
            return c.expand_as(x0_hat).clone()

    Const.renoise_corrected = renoise_corrected
    loop = Const(Gaussian(torch.zeros(3, dtype=torch.float64), 1.0), 2, sigmas=torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64),
                 method="ddim", solver_options={"eta": 0.0}, progress=False, on_nan="raise")
    physics = Matrix(torch.eye(3, dtype=torch.float64), sigma=0.1)
    out = loop.sample(torch.zeros(1, 3, dtype=torch.float64), physics, generator=torch.Generator().manual_seed(0), record_every=1)
    x0, x1 = out.trace["trajectory"][0].reshape(3), out.trace["trajectory"][1].reshape(3)
    expected = c + (x0 - c) / 2 if renoise_corrected else c + (x0 - x0 / 5) / 2
    torch.testing.assert_close(x1, expected)
