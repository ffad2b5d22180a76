"""ELBO losses: non-negativity, perfect denoisers, discrete -> continuous, unbiased estimates."""

import itertools
import math

import numpy as np
import pytest
import torch

import ddkit

V, N = 3, 3
X0 = torch.tensor([[0, 2, 1]])


def f64(x):
    return torch.tensor(x, dtype=torch.float64)


def count_denoiser(x_t, t):
    """Time-independent, depends on x_t through the number of masks (so the ELBO depends on T)."""
    masks = (x_t == V).sum(-1, keepdim=True).float()  # [B, 1]
    base = torch.tensor([[0.3, -0.2, 0.5], [0.1, 0.4, -0.3], [-0.5, 0.2, 0.6]])
    return base.expand(*x_t.shape, V) * (1.0 + masks[..., None]) + 0.1 * masks[..., None]


PATTERNS = torch.tensor(list(itertools.product([0, 1], repeat=N)), dtype=torch.bool)  # [2^N, N]
X_T = torch.where(PATTERNS, torch.full_like(PATTERNS, V, dtype=torch.long), X0)  # every masking of X0


def pattern_probs(process, t):
    """q(x_t = pattern | x0) for every masking pattern: prod alpha^(clean) (1 - alpha)^(masked)."""
    a = float(process.schedule.alpha(f64(t)))
    return torch.where(PATTERNS, 1 - a, a).double().prod(-1)


def pattern_log_mean(process):
    """The (time-independent) denoiser's log mu for every masking pattern, computed once."""
    param = ddkit.build("parameterization", "mean")
    return param.log_mean(count_denoiser, X_T, torch.zeros(len(X_T)), process).double()


def expectation(process, t, per_token):
    """E_{q(x_t|x0)} [sum_n per_token] from its value at every masking pattern."""
    return float((pattern_probs(process, t) * per_token.sum(-1)).sum())


def exact_continuous(process):
    x, w = np.polynomial.legendre.leggauss(200)
    nodes, weights = (x + 1) / 2, w / 2
    log_mean, x0 = pattern_log_mean(process), X0.expand_as(X_T)
    return sum(wi * expectation(process, ti, process.continuous_elbo(x0, X_T, log_mean, f64(ti)))
               for ti, wi in zip(nodes, weights))


def exact_discrete(process, T):
    log_mean, x0 = pattern_log_mean(process), X0.expand_as(X_T)
    return sum(expectation(process, i / T, process.discrete_elbo(x0, X_T, log_mean, f64((i - 1) / T), f64(i / T)))
               for i in range(1, T + 1))


@pytest.mark.parametrize("schedule", ["linear", "cosine", {"name": "polynomial", "exponent": 2.0}])
def test_discrete_elbo_converges_to_continuous(schedule):
    process = ddkit.build("process", "masked", vocab_size=V, schedule=schedule)
    cont = exact_continuous(process)
    gaps = [abs(exact_discrete(process, T) - cont) for T in (4, 16, 64, 256)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 2e-3 * cont
    # O(1/T): quadrupling T shrinks the gap about fourfold
    assert gaps[-2] / gaps[-1] == pytest.approx(4.0, rel=0.25)


def test_continuous_elbo_is_schedule_invariant():
    """The continuous ELBO of a time-independent denoiser depends only on the endpoints."""
    values = [exact_continuous(ddkit.build("process", "masked", vocab_size=V, schedule=s))
              for s in ["linear", "cosine", {"name": "polynomial", "exponent": 3.0}]]
    assert values[1] == pytest.approx(values[0], rel=1e-6)
    assert values[2] == pytest.approx(values[0], rel=1e-6)


@pytest.mark.parametrize("loss_name,extra", [("continuous_elbo", {"t_min": 0.0}), ("discrete_elbo", {"num_steps": 8})])
@pytest.mark.parametrize("time_sampling", ["iid", "antithetic"])
def test_monte_carlo_estimate_is_unbiased(loss_name, extra, time_sampling):
    process = ddkit.build("process", "masked", vocab_size=V, schedule="cosine")
    exact = exact_continuous(process) if loss_name == "continuous_elbo" else exact_discrete(process, 8)
    loss = ddkit.build("loss", loss_name, process=process, time_sampling=time_sampling, **extra)
    g = torch.Generator().manual_seed(0)
    # each call gives one unbiased estimate (a batch mean); the spread across calls gives the error
    estimates = torch.stack([loss(count_denoiser, X0.expand(256, N), generator=g).nats.sum(-1).double().mean()
                             for _ in range(60)])
    se = float(estimates.std() / math.sqrt(len(estimates)))
    assert abs(float(estimates.mean()) - exact) < 5.5 * se  # two-sided p < 1e-7 under normality


def test_elbo_is_non_negative_and_zero_for_a_perfect_denoiser():
    process = ddkit.build("process", "masked", vocab_size=5, schedule="cosine")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 5, (64, 12), generator=g)
    for name in ("continuous_elbo", "discrete_elbo"):
        loss = ddkit.build("loss", name, process=process)
        random = loss(lambda x, t: torch.randn(*x.shape, 5, generator=g), x0, generator=g)
        assert bool((random.nats >= 0).all()) and random.nats_per_token > 0

        def perfect_on_masks(x_t, t):
            # exact at masked positions; arbitrary (wrong) at clean ones, which must not count
            logits = torch.full((*x_t.shape, 5), -1e4)
            logits.scatter_(-1, x0[..., None], 0.0)
            wrong = torch.full_like(logits, -1e4).scatter(-1, ((x0 + 1) % 5)[..., None], 0.0)
            return torch.where((x_t == 5)[..., None], logits, wrong)

        perfect = loss(perfect_on_masks, x0, generator=g)
        assert float(perfect.nats.abs().max()) == 0.0


def test_units():
    out = ddkit.LossOutput(nats=torch.full((2, 3), math.log(4.0)), t=torch.zeros(2))
    assert out.bits_per_token == pytest.approx(2.0)
    assert out.perplexity == pytest.approx(4.0)
    assert out.bound


def test_time_sampling_ranges_and_uniformity():
    g = torch.Generator().manual_seed(0)
    for method in ("iid", "antithetic"):
        t = ddkit.sample_times(100_000, method=method, t_min=0.1, generator=g)
        assert float(t.min()) > 0.1 and float(t.max()) <= 1.0
        # mean of U[0.1, 1] is 0.55, sd 0.26; iid bound 5.5 se (antithetic is far tighter)
        assert abs(float(t.mean()) - 0.55) < 5.5 * 0.26 / math.sqrt(100_000)
        steps = ddkit.sample_steps(10_000, 7, method=method, generator=g)
        assert int(steps.min()) == 1 and int(steps.max()) == 7
    # antithetic: exactly one time per stratum of width (1 - t_min)/B
    t = ddkit.sample_times(8, method="antithetic", generator=g)
    strata = torch.sort(((1 - t) * 8).floor()).values
    assert strata.tolist() == list(range(8))


def test_bad_loss_parameters():
    process = ddkit.build("process", "masked", vocab_size=3)
    with pytest.raises(ddkit.ParameterError, match="time_sampling"):
        ddkit.build("loss", "continuous_elbo", process=process, time_sampling="sobol")
    with pytest.raises(ddkit.ParameterError, match="num_steps"):
        ddkit.build("loss", "discrete_elbo", process=process, num_steps=0)
    with pytest.raises(ddkit.ParameterError, match="process"):
        ddkit.build("loss", "continuous_elbo")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_complementary_masks_estimate_is_unbiased(schedule):
    process = ddkit.build("process", "masked", vocab_size=V, schedule=schedule)
    loss = ddkit.build("loss", "continuous_elbo", process=process, t_min=0.0, complementary_masks=True)
    g = torch.Generator().manual_seed(1)
    estimates = torch.stack([loss(count_denoiser, X0.expand(256, N), generator=g).nats.sum(-1).double().mean()
                             for _ in range(60)])
    se = float(estimates.std() / math.sqrt(len(estimates)))
    assert abs(float(estimates.mean()) - exact_continuous(process)) < 5.5 * se  # two-sided p < 1e-7


def test_complementary_masks_are_complements_and_evaluation_is_the_plain_estimator():
    process = ddkit.build("process", "masked", vocab_size=V, schedule="cosine")
    loss = ddkit.build("loss", "continuous_elbo", process=process, complementary_masks=True)
    seen = []

    def spy(x_t, t):
        seen.append(x_t.clone())
        return count_denoiser(x_t, t)

    x0 = torch.randint(0, V, (5, N), generator=torch.Generator().manual_seed(0))
    out = loss(spy, x0, generator=torch.Generator().manual_seed(2))
    (rows,) = seen
    first, second = rows.chunk(2)
    assert out.nats.shape == (5, N)
    assert torch.equal((first == V) ^ (second == V), torch.ones_like(x0, dtype=torch.bool))  # each token masked once
    assert torch.equal(torch.where(first == V, second, first), x0)
    plain = loss.evaluation()
    assert not plain.complementary_masks and plain.t_min == loss.t_min
    with pytest.raises(ValueError, match="complementary_masks needs a masked"):
        ddkit.build("loss", "continuous_elbo", process=ddkit.build("process", "uniform", vocab_size=V),
                    complementary_masks=True)
