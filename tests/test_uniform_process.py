r"""The uniform process: closed forms against the generic dense computation, the conformance
kit, UDLM's closed-form bound, and the ELBO with the exact oracle against the exact NLL.

Independent references used here:

* the generic :class:`ddkit.Process` methods, which work on the dense matrices only
  (``Process.posterior_probs(process, ...)`` etc. bypass the closed forms);
* Bayes' rule and :math:`\lim_{h\to0}\frac1h\mathrm{KL}` of the dense posteriors (the
  conformance kit's ``check_process_continuous_elbo_is_limit``);
* UDLM's closed form, written here from the paper's notation
  :math:`\bar x = V\alpha_t e_{x_0} + (1-\alpha_t)\mathbf 1`,
  :math:`\bar x_\theta = V\alpha_t\tilde x_\theta + (1-\alpha_t)\mathbf 1`;
* exact enumeration of every noisy sequence with the oracle denoiser and Gauss–Legendre
  quadrature in time.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ddkit
from ddkit.process import Process
from ddkit.testing import MarkovChain, OracleDenoiser, check_process
from ddkit.testing.oracles import all_sequences

F64 = torch.float64
SCHEDULES = ["linear", "cosine", "loglinear"]


def uniform(V=4, schedule="linear"):
    return ddkit.build("process", "uniform", vocab_size=V, schedule=schedule)


@pytest.mark.parametrize("schedule", ["linear", "loglinear"])
def test_conformance(schedule):
    report = check_process(uniform(4, schedule))
    assert "check_process_continuous_elbo_is_limit" in {r.name for r in report.results}


def test_rejects_a_single_token_vocabulary():
    from ddkit.plugins.processes.uniform import UniformProcess

    with pytest.raises(ValueError, match="vocab_size >= 2"):
        UniformProcess(1)
    with pytest.raises(ddkit.ParameterError, match="greater than or equal to 2"):
        ddkit.build("process", "uniform", vocab_size=1)


def test_marginal_rate_and_prior_closed_forms():
    V, p = 5, uniform(5, "cosine")
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    a = p.schedule.alpha(t)
    dense = p.marginal_matrix(t)
    expected = a[:, None, None] * torch.eye(V, dtype=F64) + ((1 - a) / V)[:, None, None]
    assert torch.allclose(dense, expected, atol=1e-15)
    r = p.rate_matrix(t[1])
    beta = -p.schedule.alpha_prime(t[1]) / a[1]
    assert torch.allclose(r, beta * (torch.full((V, V), 1 / V, dtype=F64) - torch.eye(V, dtype=F64)))
    assert torch.equal(p.prior_probs(), torch.full((V,), 1 / V, dtype=F64))


def _random_case(V, gen, per_token=False):
    B, N = 3, 5
    x_t = torch.randint(0, V, (B, N), generator=gen)
    x0 = torch.randint(0, V, (B, N), generator=gen)
    shape = (B, N) if per_token else (B,)
    t = 0.02 + 0.96 * torch.rand(shape, generator=gen, dtype=F64)
    s = t * torch.rand(shape, generator=gen, dtype=F64)
    mean = torch.softmax(3 * torch.randn(B, N, V, generator=gen, dtype=F64), -1)
    log_score = torch.randn(B, N, V, generator=gen, dtype=F64)
    return x0, x_t, s, t, mean, log_score


@given(V=st.integers(2, 7), seed=st.integers(0, 2**31), schedule=st.sampled_from(SCHEDULES),
       per_token=st.booleans())
def test_closed_forms_equal_the_generic_dense_computation(V, seed, schedule, per_token):
    p = uniform(V, schedule)
    x0, x_t, s, t, mean, log_score = _random_case(V, torch.Generator().manual_seed(seed), per_token)
    score = log_score.exp()
    pairs = [
        (p.posterior_probs(x_t, mean, s, t), Process.posterior_probs(p, x_t, mean, s, t)),
        (p.score_from_mean(x_t, mean, t), Process.score_from_mean(p, x_t, mean, t)),
        (p.reverse_rates(x_t, score, t), Process.reverse_rates(p, x_t, score, t)),
        (p.score_posterior(x_t, score, s, t), Process.score_posterior(p, x_t, score, s, t)),
        (p.score_entropy(x0, x_t, log_score, t), Process.score_entropy(p, x0, x_t, log_score, t)),
    ]
    for closed, dense in pairs:
        assert torch.allclose(closed, dense, rtol=1e-9, atol=1e-9 * (1 + float(dense.abs().max())))


def test_continuous_elbo_is_the_pointwise_limit_of_the_discrete_kl():
    """Per token (not only in expectation): (1/h) KL(q(x_{t-h}|x_t,x0) || p(x_{t-h}|x_t)) of the
    dense generic posteriors tends to the closed-form integrand."""
    gen = torch.Generator().manual_seed(0)
    for schedule in SCHEDULES:
        p = uniform(6, schedule)
        x0, x_t, _, t, mean, _ = _random_case(6, gen)
        t = t.clamp(0.05, 0.95)
        log_mean = mean.log()
        h = 1e-6
        true = Process.posterior_probs(p, x_t, torch.nn.functional.one_hot(x0, 6), t - h, t)
        model = Process.posterior_probs(p, x_t, mean, t - h, t)
        kl = (torch.xlogy(true, true) - torch.xlogy(true, model)).sum(-1) / h
        cont = p.continuous_elbo(x0, x_t, log_mean, t)
        assert torch.allclose(cont, kl, rtol=1e-4, atol=1e-6), (cont - kl).abs().max()
        perfect = torch.nn.functional.one_hot(x0, 6).to(F64).log()
        assert torch.allclose(p.continuous_elbo(x0, x_t, perfect, t), torch.zeros_like(cont), atol=1e-12)
        assert bool((cont >= -1e-12).all())


def udlm_integrand(V, alpha, alpha_prime, x0, x_t, x_theta):
    r"""UDLM's continuous-time NELBO integrand (Schiff et al. 2024) in the paper's notation,
    with :math:`i = x_t`:
    :math:`\frac{\alpha'_t}{V\alpha_t}\big[\frac{V}{\bar x_i} - \frac{V}{\bar x_{\theta,i}}
    - \sum_j \frac{\bar x_j}{\bar x_i}\log\frac{\bar x_{\theta,i}\bar x_j}{\bar x_{\theta,j}\bar x_i}\big]`
    (forward rates :math:`\beta_t/V`, true ratios :math:`\bar x_j/\bar x_i`, model ratios
    :math:`\bar x_{\theta,j}/\bar x_{\theta,i}`), one token at a time with Python floats."""
    xbar = [V * alpha * (j == x0) + 1 - alpha for j in range(V)]
    xbar_theta = [V * alpha * x_theta[j] + 1 - alpha for j in range(V)]
    i = x_t
    bracket = V / xbar[i] - V / xbar_theta[i]
    bracket -= sum(xbar[j] / xbar[i] * math.log(xbar_theta[i] * xbar[j] / (xbar_theta[j] * xbar[i]))
                   for j in range(V))
    return alpha_prime / (V * alpha) * bracket


def test_matches_udlms_closed_form_under_the_reparameterization():
    r"""UDLM plugs its prediction :math:`\tilde x_\theta` into :math:`q(x_s \mid x_t, x_0)`; that is
    ddkit's posterior for :math:`\mu \propto \tilde x_\theta \odot q(x_t \mid \cdot)`."""
    gen = torch.Generator().manual_seed(3)
    V, p = 5, uniform(5, "cosine")
    for _ in range(40):
        x0, x_t = (int(v) for v in torch.randint(0, V, (2,), generator=gen))
        t = float(0.05 + 0.9 * torch.rand((), generator=gen, dtype=F64))
        x_theta = torch.softmax(2 * torch.randn(V, generator=gen, dtype=F64), -1)
        tt = torch.tensor([t], dtype=F64)
        likelihood = p.marginal_probs(torch.arange(V)[None], tt)[0, :, x_t]  # q(x_t | x0 = v)
        mu = x_theta * likelihood / (x_theta * likelihood).sum()
        ours = p.continuous_elbo(torch.tensor([[x0]]), torch.tensor([[x_t]]), mu.log()[None, None], tt)
        alpha, alpha_prime = float(p.schedule.alpha(tt)), float(p.schedule.alpha_prime(tt))
        theirs = udlm_integrand(V, alpha, alpha_prime, x0, x_t, x_theta.tolist())
        assert math.isclose(float(ours), theirs, rel_tol=1e-9, abs_tol=1e-12)


def test_sampling_is_seeded_and_draws_x0_or_a_uniform_token():
    p = uniform(4)
    x0 = torch.randint(0, 4, (64, 16), generator=torch.Generator().manual_seed(0))
    t = torch.full((64,), 0.3, dtype=F64)
    a = p.sample_marginal(x0, t, generator=torch.Generator().manual_seed(1))
    b = p.sample_marginal(x0, t, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.long
    assert torch.equal(p.sample_marginal(x0, torch.zeros(64, dtype=F64)), x0)
    prior = p.sample_prior((4, 5), generator=torch.Generator().manual_seed(2))
    assert prior.shape == (4, 5) and bool(((prior >= 0) & (prior < 4)).all())


# -- the ELBO with the exact oracle ----------------------------------------------------------

V, N = 3, 4
CHAIN = MarkovChain(V, seed=3, concentration=0.5)
X0 = CHAIN.sample(2, N, torch.Generator().manual_seed(1))
STATES = all_sequences(V, N)  # every noisy sequence x_t


def expected_integrand(process, oracle, x0, times):
    r""":math:`\mathbb E_{q(x_t \mid x_0)} \sum_n \ell_n(x_0, x_t, t)` for each time in ``times``
    (a list), by enumeration of every noisy sequence x_t; one batched oracle call."""
    K, M = len(times), len(STATES)
    t = torch.tensor(times, dtype=F64).repeat_interleave(M)
    x_t, rows = STATES.repeat(K, 1), x0.expand(K * M, -1)
    log_q = process.marginal_probs(rows, t).log().gather(-1, x_t[..., None])[..., 0].sum(-1)
    integrand = process.continuous_elbo(rows, x_t, oracle(x_t, t), t).sum(-1)
    return (log_q.exp() * integrand).reshape(K, M).sum(-1)


def quadrature(process, oracle, x0, lower=0.0, upper=1.0, nodes=40):
    r""":math:`\int_{lower}^{upper}`, Gauss–Legendre in :math:`u` with
    :math:`t = lower + (upper - lower)u^2` (the integrand grows like :math:`t^{-1/2}` at 0)."""
    u, w = np.polynomial.legendre.leggauss(nodes)
    u, w = (u + 1) / 2, w / 2
    width = upper - lower
    values = expected_integrand(process, oracle, x0, (lower + width * u**2).tolist())
    return float((torch.tensor(w * width * 2 * u) * values).sum())


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_oracle_elbo_equals_the_exact_nll(schedule):
    """alpha_1 = 0: the prior is reached exactly and the bound is tight for the optimal
    denoiser (quadrature error below 1e-5 at 40 nodes; a blurred denoiser sits far above)."""
    process = uniform(V, schedule)
    oracle = OracleDenoiser(CHAIN, process)
    assert not oracle.time_independent
    for i in range(len(X0)):
        nll = float(-CHAIN.log_prob(X0[i:i + 1]))
        assert abs(quadrature(process, oracle, X0[i:i + 1]) - nll) < 1e-5
    blurred = lambda x_t, t: oracle(x_t, t) / 2  # noqa: E731
    assert quadrature(process, blurred, X0[:1]) > float(-CHAIN.log_prob(X0[:1])) + 1e-2


def test_oracle_elbo_with_alpha_1_above_zero_misses_exactly_the_prior_kl():
    r"""With :math:`\alpha_1 = \varepsilon` the continuous part of the bound for the exact
    reverse process is :math:`-\log p(x_0) - \mathrm{KL}(q(x_1 \mid x_0) \,\|\, q(x_1))`
    (:math:`q(x_1)` the data pushed to :math:`t = 1`), and adding the prior term
    :math:`\mathrm{KL}(q(x_1 \mid x_0) \,\|\, \text{uniform})` bounds the NLL from above."""
    process = uniform(V, {"name": "loglinear", "eps": 0.05})
    oracle = OracleDenoiser(CHAIN, process)
    ones = torch.ones(len(STATES), dtype=F64)
    probs = CHAIN.probabilities(N)
    q1_given = torch.stack([process.marginal_probs(STATES[j].expand(len(STATES), -1), ones)
                            .gather(-1, STATES[..., None])[..., 0].prod(-1) for j in range(len(STATES))])
    q1 = probs @ q1_given  # [x_1]
    for i in range(len(X0)):
        row = q1_given[int((STATES == X0[i]).all(-1).nonzero())]
        kl = float((row * (row.log() - q1.log())).sum())
        nll = float(-CHAIN.log_prob(X0[i:i + 1]))
        elbo = quadrature(process, oracle, X0[i:i + 1])
        assert abs(elbo - (nll - kl)) < 1e-5
        assert elbo + float(process.prior_kl(X0[i:i + 1]).sum()) >= nll


def test_continuous_elbo_loss_with_the_oracle_estimates_the_exact_nll():
    r"""Through the loss (time sampling, noising kernel, mean parameterization with time
    conditioning): the Monte-Carlo estimate over :math:`[t_{min}, 1]` equals the NLL minus the
    omitted piece :math:`\int_0^{t_{min}}` (by quadrature) within 5 standard errors
    (two-sided :math:`p \approx 6\cdot10^{-7}` under the CLT, per sequence)."""
    process, t_min, rows = uniform(V, "linear"), 1e-3, 3000
    oracle = OracleDenoiser(CHAIN, process)
    loss = ddkit.build("loss", "continuous_elbo", process=process, time_sampling="iid", t_min=t_min,
                       parameterization={"name": "mean", "time_conditioning": True})
    out = loss(oracle, X0.repeat_interleave(rows, 0), generator=torch.Generator().manual_seed(2))
    per_sequence = out.nats.double().sum(-1).reshape(len(X0), rows)
    mean, se = per_sequence.mean(-1), per_sequence.std(-1) / math.sqrt(rows)
    for i in range(len(X0)):
        omitted = quadrature(process, oracle, X0[i:i + 1], upper=t_min, nodes=24)
        expected = float(-CHAIN.log_prob(X0[i:i + 1])) - omitted
        assert abs(float(mean[i]) - expected) <= 5 * float(se[i]), (float(mean[i]), expected, float(se[i]))
