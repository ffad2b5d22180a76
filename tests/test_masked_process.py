"""The masked process against independent dense computations and Bayes' rule by enumeration."""

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ddkit

SCHEDULES = ["linear", "cosine", {"name": "polynomial", "exponent": 3.0}, "geometric", "loglinear"]
pair = st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(sorted)


def masked(schedule="linear", V=3):
    return ddkit.build("process", "masked", vocab_size=V, schedule=schedule)


@pytest.fixture(scope="module", params=SCHEDULES, ids=str)
def process(request):
    return masked(request.param)


def f64(x):
    return torch.tensor(x, dtype=torch.float64)


@given(st_=pair)
def test_transition_rows_are_distributions(process, st_):
    q = process.transition_matrix(f64(st_[0]), f64(st_[1]))
    assert q.shape == (4, 4)
    assert bool((q >= 0).all())
    torch.testing.assert_close(q.sum(-1), torch.ones(4, dtype=torch.float64))


@given(r=st.floats(0, 1), s=st.floats(0, 1), t=st.floats(0, 1))
def test_chapman_kolmogorov(process, r, s, t):
    r, s, t = sorted((r, s, t))
    lhs = process.transition_matrix(f64(r), f64(t))
    rhs = process.transition_matrix(f64(r), f64(s)) @ process.transition_matrix(f64(s), f64(t))
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(process.marginal_matrix(f64(t)),
                               process.marginal_matrix(f64(s)) @ process.transition_matrix(f64(s), f64(t)),
                               atol=1e-12, rtol=1e-9)


def test_transition_closed_form_matches_lecture():
    p = masked("cosine")
    s, t = f64(0.3), f64(0.7)
    a_s, a_t = p.schedule.alpha(s), p.schedule.alpha(t)
    e_m = torch.zeros(4, dtype=torch.float64)
    e_m[3] = 1
    expected = (a_t / a_s) * torch.eye(4, dtype=torch.float64) + (1 - a_t / a_s) * torch.ones(4, 1, dtype=torch.float64) * e_m
    torch.testing.assert_close(p.transition_matrix(s, t), expected)


@given(t=st.floats(0.0, 1.0))
def test_marginal_closed_form_equals_dense(process, t):
    x0 = torch.tensor([[0, 1, 2, 1]])
    dense = process.marginal_matrix(f64(t))[x0]
    torch.testing.assert_close(process.marginal_probs(x0, f64([t])), dense)


def test_rate_matrix_generator_and_expm():
    for schedule in SCHEDULES:
        p = masked(schedule)
        t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
        rates = p.rate_matrix(t)
        off = rates - torch.diag_embed(torch.diagonal(rates, dim1=-2, dim2=-1))
        assert bool((off >= 0).all())
        torch.testing.assert_close(rates.sum(-1), torch.zeros(7, 4, dtype=torch.float64))
        # Qbar(s, t) = expm(int_s^t R(u) du): the masked rates commute (beta(u) times a fixed matrix)
        s_, t_ = 0.2, 0.8
        nodes, weights = _gauss_legendre(64, s_, t_)
        integral = (weights[:, None, None] * p.rate_matrix(nodes)).sum(0)
        torch.testing.assert_close(torch.linalg.matrix_exp(integral),
                                   p.transition_matrix(f64(s_), f64(t_)), atol=1e-9, rtol=1e-7)


def _gauss_legendre(n, a, b):
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(n)
    return (f64((b - a) / 2 * x + (a + b) / 2), f64((b - a) / 2 * w))


def _bayes_posterior(p, x_t, x0, s, t):
    """q(x_s | x_t, x0) by enumeration: q(x_t | x_s) q(x_s | x0) / sum over x_s."""
    q_st = p.transition_matrix(f64(s), f64(t))
    q_s = p.marginal_matrix(f64(s))
    joint = torch.tensor([float(q_st[xs, x_t] * q_s[x0, xs]) for xs in range(p.num_states)],
                         dtype=torch.float64)
    return joint / joint.sum()


@given(st_=pair.filter(lambda p: p[1] - p[0] > 1e-3 and p[1] > 0.01 and p[0] > 0.0),
       weights=st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3))
def test_posterior_equals_bayes_rule(process, st_, weights):
    s, t = st_
    V = process.vocab_size
    mean = torch.tensor(weights, dtype=torch.float64)
    mean = mean / mean.sum()
    for x_t in range(process.num_states):
        q_t = process.marginal_matrix(f64(t))
        # mixture over x0 of the true posteriors, restricted to x0 consistent with x_t
        reachable = [x0 for x0 in range(V) if q_t[x0, x_t] > 0]
        if not reachable:
            continue
        expected = sum(mean[x0] * _bayes_posterior(process, x_t, x0, s, t) for x0 in reachable)
        expected = expected / sum(mean[x0] for x0 in reachable)
        got = process.posterior_probs(torch.tensor([[x_t]]), mean.view(1, 1, V), f64([s]), f64([t]))[0, 0]
        # for clean x_t only x0 = x_t is reachable, and the posterior ignores mean
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)
        generic = ddkit.Process.posterior_probs(process, torch.tensor([[x_t]]), mean.view(1, 1, V),
                                                f64([s]), f64([t]))[0, 0]
        if x_t == process.mask_id:
            torch.testing.assert_close(got, generic, atol=1e-10, rtol=1e-8)


def test_discrete_elbo_closed_form_equals_generic_kl():
    p = masked("cosine", V=4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 4, (3, 5), generator=g)
    x_t = p.sample_marginal(x0, f64([0.6, 0.6, 0.6]), generator=g)
    log_mean = torch.randn(3, 5, 4, generator=g, dtype=torch.float64).log_softmax(-1)
    s, t = f64([0.2, 0.4, 0.5]), f64([0.6, 0.6, 0.55])
    torch.testing.assert_close(p.discrete_elbo(x0, x_t, log_mean, s, t),
                               ddkit.Process.discrete_elbo(p, x0, x_t, log_mean, s, t))


def test_continuous_elbo_is_limit_of_discrete_term():
    # KL of step (t - h, t) divided by h -> continuous integrand as h -> 0
    p = masked("cosine", V=4)
    x0 = torch.tensor([[0, 1, 2, 3]])
    x_t = torch.tensor([[4, 1, 4, 4]])
    log_mean = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64).log_softmax(-1)
    t, h = 0.5, 1e-7
    limit = p.discrete_elbo(x0, x_t, log_mean, f64([t - h]), f64([t])) / h
    torch.testing.assert_close(p.continuous_elbo(x0, x_t, log_mean, f64([t])), limit, rtol=1e-5, atol=1e-9)


def test_prior_reached_at_one():
    p = masked("linear")
    torch.testing.assert_close(p.marginal_matrix(f64(1.0))[:, 3], torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(p.prior_probs(), f64([0, 0, 0, 1]))
    assert float(p.prior_kl(torch.tensor([[0, 1]])).sum()) == 0.0
    assert torch.isinf(masked("loglinear").prior_kl(torch.tensor([[0]]))).all()


def test_sample_marginal_frequencies():
    """Masking frequency per time vs alpha_t, with a bound of 5.5 standard errors (p < 1e-7)."""
    p = masked("cosine", V=5)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.randint(0, 5, (n, 1), generator=g)
    for t in (0.1, 0.5, 0.9):
        x_t = p.sample_marginal(x0, f64(t).expand(n), generator=g)
        a = float(p.schedule.alpha(f64(t)))
        frac_clean = float((x_t == x0).double().mean())
        assert bool(((x_t == x0) | (x_t == 5)).all())
        se = (a * (1 - a) / n) ** 0.5
        assert abs(frac_clean - a) < 5.5 * se


def test_sample_prior_is_all_masks():
    p = masked(V=7)
    assert bool((p.sample_prior((2, 3)) == 7).all())


def test_time_shapes_per_sequence_and_per_token_agree():
    p = masked("cosine")
    x0 = torch.tensor([[0, 1, 2], [2, 1, 0]])
    t_seq = f64([0.3, 0.8])
    t_tok = t_seq[:, None].expand(2, 3)
    torch.testing.assert_close(p.marginal_probs(x0, t_seq), p.marginal_probs(x0, t_tok))


def test_all_masking_patterns_sum_to_one():
    # the factorised marginal is a distribution over the S^N joint states
    p = masked("cosine", V=2)
    x0 = torch.tensor([[0, 1, 1]])
    probs = p.marginal_probs(x0, f64([0.4]))[0]
    total = sum(float(probs[0, a] * probs[1, b] * probs[2, c])
                for a, b, c in itertools.product(range(3), repeat=3))
    assert total == pytest.approx(1.0)


def test_invalid_vocab_size():
    with pytest.raises(ddkit.ParameterError, match="vocab_size"):
        ddkit.build("process", "masked", vocab_size=0)
    with pytest.raises(ddkit.ParameterError, match="vocab_size"):
        ddkit.build("process", "masked")
