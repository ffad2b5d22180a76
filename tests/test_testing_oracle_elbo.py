r"""The masked-diffusion ELBO with the exact oracle denoiser equals the exact NLL.

For the optimal denoiser the continuous-time bound is tight: over
:math:`\alpha \in [0, 1]`,

.. math::  \int_0^1 \frac{d\alpha}{1-\alpha}\, \mathbb E_{x_\alpha}\Big[\sum_{n \text{ masked}}
           -\log p(x_0^n \mid x_\alpha)\Big] = -\log p(x_0)

whatever the schedule (only the endpoints matter). The loss ``continuous_elbo`` integrates
over :math:`t \in [t_{min}, 1]`, i.e. over :math:`\alpha \in [\alpha_1, \alpha(t_{min})]`. The
two omitted pieces are computed from the oracle to first order: near :math:`\alpha = 1` only
one token is masked at a time and the integrand tends to
:math:`g_1 = \sum_n -\log p(x_0^n \mid x_0^{\setminus n})`; near :math:`\alpha = 0` every
token is masked and it tends to :math:`g_0 = \sum_n -\log p(x_0^n)`. So the estimate's
expectation is :math:`-\log p(x_0) - (1 - \alpha(t_{min}))\,g_1 - \alpha_1 g_0 + O(\epsilon^2)`
with :math:`\epsilon \le 10^{-3}` here (the :math:`O(\epsilon^2)` remainder is below
:math:`10^{-4}` nats, far under the statistical resolution).

With :math:`t_{min} = 0` the estimator's variance is infinite for schedules with
:math:`\alpha'_0 \ne 0` (the weight :math:`1/t` meets a masked fraction :math:`\propto t`), so
a small :math:`t_{min} = 10^{-3}` keeps the standard error meaningful. Times are drawn iid so
that rows are independent; the bound is 5 standard errors of the mean (two-sided
:math:`p \approx 6 \cdot 10^{-7}` per comparison under the CLT, 15 comparisons).
"""

import math

import pytest
import torch

import ddkit
from ddkit.testing import MarkovChain, OracleDenoiser

V, N, ROWS, T_MIN = 4, 8, 4000, 1e-3
CHAIN = MarkovChain(V, seed=3, concentration=0.5)
X0 = CHAIN.sample(3, N, torch.Generator().manual_seed(1))


def omitted_pieces(oracle, process, x0):
    """First-order integrals of the pieces alpha in [alpha(t_min), 1] and [0, alpha_1]."""
    mask = process.mask_id
    rows = torch.arange(len(x0))
    a = process.schedule.alpha(torch.tensor([T_MIN, 1.0], dtype=torch.float64))
    all_masked = oracle(torch.full_like(x0, mask), torch.zeros(len(x0)))
    g0 = -all_masked.gather(-1, x0[..., None])[..., 0].sum(-1)
    g1 = torch.zeros(len(x0), dtype=torch.float64)
    for n in range(x0.shape[1]):
        x_t = x0.clone()
        x_t[:, n] = mask
        g1 -= oracle(x_t, torch.zeros(len(x0)))[rows, n, x0[:, n]]
    return (1 - a[0]) * g1 + a[1] * g0


@pytest.mark.parametrize("schedule", ["linear", "cosine", {"name": "polynomial", "exponent": 3.0},
                                      "loglinear", "geometric"],
                         ids=["linear", "cosine", "poly3", "loglinear", "geometric"])
def test_continuous_elbo_with_the_oracle_is_the_exact_nll(schedule):
    process = ddkit.build("process", "masked", vocab_size=V, schedule=schedule)
    loss = ddkit.build("loss", "continuous_elbo", process=process, time_sampling="iid", t_min=T_MIN)
    oracle = OracleDenoiser(CHAIN, process)
    out = loss(oracle, X0.repeat_interleave(ROWS, 0), generator=torch.Generator().manual_seed(2))
    per_sequence = out.nats.double().sum(-1).reshape(len(X0), ROWS)
    mean = per_sequence.mean(-1)
    standard_error = per_sequence.std(-1) / math.sqrt(ROWS)
    nll = -CHAIN.log_prob(X0)
    expected = nll - omitted_pieces(oracle, process, X0)
    assert bool(((mean - expected).abs() <= 5 * standard_error).all()), (mean, expected, standard_error)


@pytest.mark.parametrize("blur", [1.0, 2.0], ids=["oracle", "blurred"])
def test_expected_elbo_over_the_data_is_the_entropy_only_for_the_oracle(blur):
    """Over fresh data x0 ~ chain, E[NELBO] = H(X_{1:N}) + E[KL] for the model behind the
    denoiser: the oracle (blur 1) hits the exact entropy, logits divided by 2 ("blurred")
    sit many standard errors above it, so the comparison above has power."""
    process = ddkit.build("process", "masked", vocab_size=V, schedule="cosine")
    loss = ddkit.build("loss", "continuous_elbo", process=process, time_sampling="iid", t_min=T_MIN)
    oracle = OracleDenoiser(CHAIN, process)
    x0 = CHAIN.sample(3 * ROWS, N, torch.Generator().manual_seed(5))
    out = loss(lambda x_t, t: oracle(x_t, t) / blur, x0, generator=torch.Generator().manual_seed(6))
    per_row = out.nats.double().sum(-1)
    if blur == 1.0:
        per_row = per_row + omitted_pieces(oracle, process, x0)
    mean, se = float(per_row.mean()), float(per_row.std()) / math.sqrt(len(per_row))
    entropy = CHAIN.entropy(N)
    if blur == 1.0:
        assert abs(mean - entropy) <= 5 * se, (mean, entropy, se)
    else:  # omitting the (positive) pieces only lowers the estimate: a conservative control
        assert mean - entropy > 5 * se, (mean, entropy, se)
