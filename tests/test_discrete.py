"""Masked discrete diffusion and discrete posterior samplers, against exact references:
closed-form conditionals and losses of factorised mixtures, enumeration of every sequence,
categorical frequencies with z-score bounds."""
from __future__ import annotations

import math

import pytest
import torch

from invdiff import samplers
from invdiff.diffusion.discrete import (Codebook, all_masked, all_sequences, ancestral_sample, conditionals,
                                        empirical_prior, first_hitting_sample, intensity_quantizer, make_schedule,
                                        mdlm_loss, random_mixture, sample_categorical)
from invdiff.operators import Matrix
from invdiff.samplers.discrete_exact import exact_posterior, tv_distance

torch.set_num_threads(1)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_float64_categorical_frequencies():
    p = torch.tensor([0.5, 0.3, 0.15, 0.049, 0.001], dtype=torch.float64)
    n = 40000
    draws = sample_categorical(p.log().expand(n, -1), _gen(0))
    freq = torch.bincount(draws, minlength=5).double() / n
    se = (p * (1 - p) / n).sqrt()
    assert bool(((freq - p).abs() <= 4.5 * se).all()), (freq, p)  # 4.5 sigma per cell, 5 cells
    assert sample_categorical(p.log(), temperature=0.0).item() == 0


@pytest.mark.parametrize("name", ["loglinear", "cosine"])
def test_schedule_closed_forms(name):
    s = make_schedule(name)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    assert float(s.alpha(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(1.0)
    assert float(s.alpha(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-12)
    h = 1e-6
    fd = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
    assert torch.allclose(s.dalpha(t), fd, atol=1e-6)
    expected = 1 / t if name == "loglinear" else 0.5 * math.pi * torch.sin(0.5 * math.pi * t) / (1 - torch.cos(0.5 * math.pi * t))
    assert torch.allclose(s.weight(t), expected)
    counts = s.unmasked_counts(10, 7)
    assert counts[-1] == 10 and all(b >= a for a, b in zip(counts, counts[1:]))
    with pytest.raises(ValueError):
        make_schedule("linear")


def test_codebook_roundtrip_and_straight_through():
    cb = intensity_quantizer(17, (1, 8, 8))
    tok = torch.randint(0, 17, (3, 64), generator=_gen(1))
    assert torch.equal(cb.encode(cb.decode(tok)), tok)
    e = torch.rand(2, 64, 1, requires_grad=True)
    q = cb.quantize(e)
    assert torch.allclose(q.detach() * 16, (q.detach() * 16).round(), atol=1e-5)
    q.sum().backward()
    assert torch.equal(e.grad, torch.ones_like(e))
    with pytest.raises(ValueError, match="no mask tokens"):
        cb.decode(torch.full((1, 64), 17))


def _brute_conditionals(prior, z):
    V, L = prior.vocab_size, prior.seq_len
    X = all_sequences(V, L)
    p = prior.log_prob(X).exp()
    out = torch.zeros(z.shape[0], L, V, dtype=torch.float64)
    for b in range(z.shape[0]):
        ok = ((X == z[b]) | (z[b] == V)).all(1)
        pb = p * ok
        for l in range(L):
            out[b, l] = torch.bincount(X[:, l], weights=pb, minlength=V) / pb.sum()
    return out


def test_mixture_conditionals_against_enumeration():
    prior = random_mixture(3, 5, 3, generator=_gen(2))
    assert float(prior.log_prob(all_sequences(3, 5)).exp().sum()) == pytest.approx(1.0, abs=1e-12)
    z = prior.sample(6, _gen(3))
    masks = torch.rand(6, 5, generator=_gen(4)) < 0.6
    z = torch.where(masks, torch.full_like(z, 3), z)
    z[0] = 3  # fully masked: the marginals
    got = conditionals(prior, z).exp()
    ref = _brute_conditionals(prior, z)
    assert torch.allclose(got, ref, atol=1e-10)


def test_empirical_oracle_conditionals():
    data = torch.tensor([[0, 1, 2], [0, 2, 2], [1, 1, 0]])
    prior = empirical_prior(data, 3, eps=1e-9)
    got = conditionals(prior, torch.tensor([[0, 3, 3]])).exp()[0]
    assert torch.allclose(got[1], torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(got[2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
def test_mdlm_loss_is_exact_nll_for_the_exact_prior(schedule):
    """With exact conditionals the MDLM bound is tight: E[loss] = -log p(x)."""
    prior = random_mixture(3, 6, 3, generator=_gen(5))
    x = prior.sample(1, _gen(6))
    n = 20000
    losses = mdlm_loss(prior, x.expand(n, -1), schedule, generator=_gen(7), t_min=1e-6)
    mean, se = float(losses.mean()), float(losses.std() / math.sqrt(n))
    target = -float(prior.log_prob(x))
    assert abs(mean - target) < 4.5 * se + 1e-3, (mean, target, se)


def test_first_hitting_sampler_is_exact():
    """One uniformly chosen token per call is an exact draw of the joint (chi-square bound)."""
    prior = random_mixture(2, 4, 3, generator=_gen(8))
    n = 20000
    out = first_hitting_sample(prior, n, generator=_gen(9))
    assert out.nfe == 4
    X = all_sequences(3, 4)
    p = prior.log_prob(X).exp()
    idx = (out.tokens * torch.tensor([27, 9, 3, 1])).sum(1)
    counts = torch.bincount(idx, minlength=81).double()
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 80 + 5 * math.sqrt(2 * 80), chi2  # dof 80: mean 80, sd ~12.6
    tv_anc = tv_distance(ancestral_sample(prior, 5000, steps=32, generator=_gen(10)).tokens, X, p, 3)
    assert tv_anc < 0.07  # sampling floor ~ 0.5 * sum sqrt(2 p / (pi n)) ~ 0.045 at n = 5000
    conf = first_hitting_sample(prior, 8, tokens_per_step=2, order="confidence", generator=_gen(11))
    assert conf.nfe == 2 and not bool((conf.tokens == 3).any())


def _enumeration_problem(seed=0, L=8, V=3, sigma=0.3):
    g = _gen(seed)
    cb = Codebook(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64), (L,))
    prior = random_mixture(4, L, V, generator=g, codebook=cb)
    A = 2 * torch.randn(3, L, generator=g, dtype=torch.float64) / L ** 0.5
    phys = Matrix(A, sigma=sigma)
    x = cb.decode(prior.sample(1, g), dtype=torch.float64)
    y = phys.A(x) + sigma * torch.randn(1, 3, generator=g, dtype=torch.float64)
    support, probs = exact_posterior(prior, y, phys)
    return prior, phys, y, support, probs


def test_aps_closer_than_unguided_to_the_exact_posterior():
    prior, phys, y, support, probs = _enumeration_problem()
    n = 1000
    tv = {}
    for name in ("aps", "masked-unguided"):
        out = samplers.make(name, prior, steps=8).sample(y, phys, n_samples=n, generator=_gen(1))
        assert out.samples.shape == (n, 1, 8) and out.nfe == 8
        tv[name] = tv_distance(out.trace["tokens"][:, 0], support, probs, 3)
    # sampling floor at n = 1000 is ~0.08; measured: APS ~0.80, unguided ~0.96
    assert tv["aps"] < tv["masked-unguided"] - 0.08, tv


def test_masked_smc_converges_with_particles():
    prior, phys, y, support, probs = _enumeration_problem()
    tvs = {}
    for N, runs in ((4, 256), (128, 8)):  # 1024 weighted particles in total each
        # independent runs as a batch of copies of y (particles interact only within a column)
        out = samplers.make("masked-smc", prior, steps=8).sample(y.repeat(runs, 1), phys, n_samples=N, generator=_gen(100))
        toks = out.trace["tokens"].transpose(0, 1).reshape(N * runs, -1)
        ws = torch.softmax(out.log_weights.double(), 0).T.reshape(-1)
        tvs[N] = tv_distance(toks, support, probs, 3, ws)
    assert tvs[128] < tvs[4] - 0.05, tvs  # measured: 4 particles 0.81, 128 particles 0.63


def test_svdd_counts_candidate_calls_and_beats_unguided_fit():
    prior, phys, y, support, probs = _enumeration_problem()
    out = samplers.make("svdd", prior, steps=4, candidates=3).sample(y, phys, n_samples=200, generator=_gen(2))
    assert out.nfe == 4 * 3 + 1
    ref = samplers.make("masked-unguided", prior, steps=4).sample(y, phys, n_samples=200, generator=_gen(2))
    res = lambda o: float(((phys.A(o.samples[:, 0]) - y) ** 2).sum(1).mean())
    assert res(out) < res(ref)


def test_discrete_samplers_bad_input():
    prior, phys, y, *_ = _enumeration_problem()
    with pytest.raises(TypeError, match="codebook"):
        samplers.make("aps", random_mixture(2, 8, 3, generator=_gen(0)))
    with pytest.raises(ValueError, match="kl_weight"):
        samplers.make("aps", prior, kl_weight=-1.0)
    with pytest.raises(ValueError):
        conditionals(prior, torch.full((1, 8), 7))
    with pytest.raises(ValueError, match="shape mismatch"):
        samplers.make("aps", prior).sample(torch.zeros(1, 3), Matrix(torch.ones(3, 5), sigma=0.1))
    assert {"aps", "svdd", "masked-smc", "masked-unguided"} <= set(samplers.available())


@pytest.mark.parametrize("name,kw", [("transformer", dict(width=16, layers=1, heads=2)), ("conv", dict(width=16, blocks=1))])
def test_network_shapes_and_gradients(name, kw):
    from invdiff.diffusion.discrete.networks import build_discrete_network

    net = build_discrete_network(name, 17, 64, **kw)
    assert net.logits(all_masked(net, 2)).shape == (2, 64, 17)
    loss = mdlm_loss(net, torch.randint(0, 17, (4, 64), generator=_gen(0)), generator=_gen(1)).mean()
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    # a token's logits depend on the other tokens (context is used)
    z = all_masked(net, 1)
    z2 = z.clone()
    z2[0, 9] = 5
    assert not torch.allclose(net.logits(z)[0, 0], net.logits(z2)[0, 0])


def test_digits_data_and_shipped_prior():
    from invdiff.datasets.digits import load_digits
    from invdiff.diffusion.discrete.training import load_discrete_prior

    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and int(images.min()) == 0 and int(images.max()) == 16
    # class counts of the UCI test part as scikit-learn documents them
    assert torch.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    prior = load_discrete_prior("digits-mdlm")
    assert prior.x_shape == (1, 8, 8) and prior.vocab_size == 17 and prior.seq_len == 64
    for key in ("command", "seed", "steps", "data", "ema_test_loss_nats_per_image"):
        assert key in prior.card
    test, _ = load_digits("test")
    test = test.reshape(-1, 64)[:150]
    # the best factorised model (per-pixel marginals of the training split) needs its entropy
    train, _ = load_digits("train")
    train = train.reshape(-1, 64)
    p = torch.stack([torch.bincount(train[:, l], minlength=17) for l in range(64)]).double() / train.shape[0]
    marginal_entropy = float(-(p * p.clamp_min(1e-300).log()).sum())  # 107.5 nats
    loss = float(mdlm_loss(prior, test.repeat(2, 1), generator=_gen(0)).mean())
    assert loss < marginal_entropy - 15, (loss, marginal_entropy)  # measured ~79 nats
    with pytest.raises(ValueError, match="unknown discrete prior"):
        load_discrete_prior("no-such-prior")


def test_hamming_mh_targets_its_enumerated_law():
    """The likelihood step of SGDD: MH chains reach exp(-nll(z) - eta d_H(x, z)), enumerated."""
    from invdiff.samplers.sgdd import hamming_mh

    prior, phys, y, *_ = _enumeration_problem(L=5)
    X = all_sequences(3, 5)
    nll = lambda tok: 0.5 * ((phys.A(prior.codebook.decode(tok, dtype=torch.float64)) - y) ** 2).sum(1)  # noqa: E731
    x = torch.tensor([[0, 1, 2, 1, 0]])
    n = 4000
    for eta in (0.0, 0.7):
        target = torch.softmax(-(nll(X) + eta * (X != x).sum(1)).double(), 0)
        z, acc = hamming_mh(x.repeat(n, 1), x.repeat(n, 1), eta, nll, 3, steps=150, block=1, generator=_gen(3))
        floor = tv_distance(X[torch.multinomial(target, n, True, generator=_gen(4))], X, target, 3)
        assert 0.1 < acc < 0.9
        assert tv_distance(z, X, target, 3) < floor + 0.03, floor  # measured: 0.07-0.09, floor ~0.075


def test_sgdd_closer_than_unguided_to_the_exact_posterior():
    prior, phys, y, support, probs = _enumeration_problem()
    n = 1000
    out = samplers.make("sgdd", prior, iterations=16, mh_steps=50).sample(y, phys, n_samples=n, generator=_gen(1))
    assert out.nfe == 16 and out.samples.shape == (n, 1, 8)
    ref = samplers.make("masked-unguided", prior, steps=16).sample(y, phys, n_samples=n, generator=_gen(1))
    tv = tv_distance(out.trace["tokens"][:, 0], support, probs, 3)
    tv_ref = tv_distance(ref.trace["tokens"][:, 0], support, probs, 3)
    # measured: SGDD ~0.71, unguided ~0.95 (floor ~0.08 at n = 1000)
    assert tv < tv_ref - 0.15, (tv, tv_ref)
    with pytest.raises(ValueError, match="t_min"):
        samplers.make("sgdd", prior, t_min=0.5, t_max=0.2)


def test_phantom_tasks_and_signals():
    from invdiff.benchmarks.aps_tasks import TASKS, Pooled, make_task, phantom_signals

    tokens, x = phantom_signals(3, offset=5)
    assert tokens.shape == (3, 1024) and x.shape == (3, 1, 32, 32)
    # nearest of 16 levels on [0, 1]: within half a level step of the phantom
    from invdiff.diffusion.discrete import intensity_quantizer

    assert float((intensity_quantizer(16, (1, 32, 32)).decode(tokens) - x).abs().max()) <= 0.5 / 15 + 1e-6
    assert torch.equal(phantom_signals(2, offset=6)[0], tokens[1:])  # slices of one fixed pool
    g = _gen(0)
    u, v = torch.randn(2, 1, 32, 32, generator=g), torch.randn(2, 1, 16, 16, generator=g)
    sr = make_task("sr2", size=32)
    assert math.isclose(float((sr.A(u) * v).sum()), float((u * sr.A_adjoint(v)).sum()), rel_tol=1e-5)
    for task in TASKS:
        op = make_task(task, size=32)
        assert op.A(u).shape[0] == 2 and Pooled(op).A(torch.randn(2, 1, 64, 64, generator=g)).shape == op.A(u).shape
    with pytest.raises(ValueError, match="size"):
        make_task("sr2", size=16)


def test_shipped_phantom_prior_beats_the_factorised_marginals():
    from invdiff.diffusion.discrete.training import discrete_data, load_discrete_prior

    prior = load_discrete_prior("phantom32-mdlm")
    assert prior.x_shape == (1, 32, 32) and prior.vocab_size == 16 and prior.seq_len == 1024
    for key in ("command", "seed", "steps", "data", "ema_test_loss_nats_per_image", "wall_seconds"):
        assert key in prior.card
    assert not prior.card.get("partial")
    # per-pixel marginals of 400 training-distribution phantoms (another seed): their entropy is
    # the loss of the best factorised model; a prior that uses context must do much better
    train, _ = discrete_data({"dataset": "ct-phantom", "size": 32, "n": 400, "seed": 99}, 16)
    p = torch.nn.functional.one_hot(train, 16).double().mean(0)
    marginal_entropy = float(-(p * p.clamp_min(1e-300).log()).sum())
    test, _ = discrete_data({"dataset": "ct-phantom", "size": 32, "split": "test", "n_test": 12}, 16)
    loss = float(mdlm_loss(prior, test.repeat(2, 1), generator=_gen(0)).mean())
    assert loss < 0.55 * marginal_entropy, (loss, marginal_entropy)  # measured: marginals ~1360 nats, the prior ~530


def test_patch_vq_tokenizer():
    from invdiff.diffusion.discrete.vq import PatchCodebook, train_patch_vq, vq_distortion
    from invdiff.datasets.phantoms import ct_phantoms

    # images built from code patches decode exactly from their tokens
    codes = torch.rand(5, 4, generator=_gen(0))
    cb = PatchCodebook(codes, (1, 4, 6), patch=2)
    tokens = torch.randint(0, 5, (3, 6), generator=_gen(1))
    x = cb.decode(tokens)
    assert x.shape == (3, 1, 4, 6) and torch.equal(x[0, 0, 2:4, 2:4].flatten(), codes[tokens[0, 4]])
    assert torch.equal(cb.encode(x), tokens)
    # Lloyd's iterations never increase the distortion
    ph = ct_phantoms(64, size=16, generator=_gen(2))
    d = [vq_distortion(train_patch_vq(ph, 32, patch=4, iters=k, generator=_gen(3)), ph) for k in (0, 1, 3, 10)]
    assert all(b <= a + 1e-7 for a, b in zip(d, d[1:])) and d[-1] < 0.7 * d[0], d
    # APS runs on patch tokens (expected code patches, straight-through quantisation)
    from invdiff.benchmarks.aps_tasks import make_task

    ph32 = ct_phantoms(8, size=32, generator=_gen(4))
    vq = train_patch_vq(ph32, 8, patch=4, iters=5, generator=_gen(4))
    prior = random_mixture(2, vq.seq_len, 8, generator=_gen(5), codebook=vq)
    phys = make_task("sr2", size=32)
    out = samplers.make("aps", prior, steps=4, inner_steps=3).sample(phys.A(ph32[:1]), phys, n_samples=2)
    assert out.samples.shape == (2, 1, 1, 32, 32)
    with pytest.raises(ValueError, match="multiples"):
        PatchCodebook(codes, (1, 5, 6), patch=2)
