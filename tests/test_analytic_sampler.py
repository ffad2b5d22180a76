r"""The analytic (Tweedie) sampler and ancestral sampling beyond the masked process.

* With the mean parameterization the analytic step is the process's posterior, the step of
  ancestral sampling: same exact T-step law, for uniform and matrix processes.
* With the true ratios (score parameterization fed by the oracle's implied score) every step is
  the exact reverse transition, so on one position the output law is
  :math:`\sum_x \pi(x)\, q(x_0 \mid x_1 = x)` for every number of steps (only the prior
  :math:`\pi \ne q_1` separates it from the data when :math:`\alpha_1 > 0`).
* Samples follow the exact law (TV and KL bounds at failure probability 1e-6); the law
  approaches the data as steps grow; conformance with uniform, matrix and masked processes.
"""

import pytest
import torch
from test_euler_sampler import CHAIN, DRAWS, N, TIMED, V, exact_law, sample_law, uniform

import ddkit
from ddkit.testing import OracleDenoiser, check_sampler
from ddkit.testing.stats import kl_divergence, kl_types_bound, total_variation, tv_bound

F64 = torch.float64


def gaussian():
    return ddkit.build("process", "matrix", vocab_size=V, generator="gaussian", width=0.5)


def hybrid():
    return ddkit.build("process", "matrix", vocab_size=V, generator="mask_uniform", uniform_fraction=0.5)


def test_conformance():
    """Analytic with the uniform process, ancestral with a general matrix process (the masked
    process is covered in tests/test_conformance_builtins.py; the score path by the exact
    tests below)."""
    check_sampler(ddkit.build("sampler", "analytic", steps=4, parameterization=TIMED), uniform(V=4))
    check_sampler(ddkit.build("sampler", "ancestral", steps=4, parameterization=TIMED), gaussian())


@pytest.mark.parametrize("make", [uniform, gaussian, hybrid], ids=["uniform", "gaussian", "mask_uniform"])
def test_mean_analytic_step_is_the_ancestral_step(make):
    process = make()
    analytic = ddkit.build("sampler", "analytic", steps=5, parameterization=TIMED)
    law = exact_law(analytic, CHAIN, process)
    # the ancestral step, written out: sample the posterior, the last step to data
    states = ddkit.testing.oracles.all_sequences(process.num_states, N)
    oracle = OracleDenoiser(CHAIN, process)
    grid = ddkit.time_grid(5)
    mean_param = ddkit.build("parameterization", "mean", time_conditioning=True)
    push = process.prior_probs()[states].prod(-1)
    for i in range(5):
        alive = push > 0
        x = states[alive]
        t, s = grid[i].expand(len(x)), grid[i + 1].expand(len(x))
        probs = process.posterior_probs(x, mean_param.log_mean(oracle, x, t, process).double().exp(), s, t)
        if i == 4:
            probs[..., V:] = 0.0
            probs = probs / probs.sum(-1, keepdim=True)
        step = probs[:, 0]
        for n in range(1, N):
            step = (step[:, :, None] * probs[:, n, None, :]).reshape(len(x), -1)
        push = push[alive] @ step
    clean = (states < V).all(-1)
    ids = ddkit.testing.oracles.sequence_ids(states[clean], V)
    assert torch.allclose(law[ids], push[clean], atol=1e-12)


@pytest.mark.parametrize("make,sampler", [(uniform, "analytic"), (gaussian, "ancestral"), (hybrid, "ancestral")],
                         ids=["analytic-uniform", "ancestral-gaussian", "ancestral-mask_uniform"])
def test_samples_follow_the_exact_t_step_law(make, sampler):
    process = make()
    steps = 4
    built = ddkit.build("sampler", sampler, steps=steps, parameterization=TIMED)
    exact = exact_law(ddkit.build("sampler", "analytic", steps=steps, parameterization=TIMED), CHAIN, process)
    law, result = sample_law(built, process)
    assert result.nfe <= steps
    assert total_variation(law, exact) <= tv_bound(exact, DRAWS)
    assert kl_divergence(law, exact) <= kl_types_bound(V**N, DRAWS)


def test_law_approaches_the_data_as_steps_grow():
    """Measured (uniform process, cosine schedule): TV 0.166, 0.082, 0.041 for 4, 8, 16 steps."""
    truth = CHAIN.probabilities(N)
    tv = [total_variation(exact_law(ddkit.build("sampler", "analytic", steps=T, parameterization=TIMED),
                                    CHAIN, uniform()), truth) for T in (4, 8, 16)]
    assert tv[0] > tv[1] > tv[2]
    assert 1.6 < tv[1] / tv[2] < 2.4


def test_true_score_makes_every_step_exact():
    r"""One position (``N = 1``), the score parameterization fed the true ratios: the analytic
    sampler's law is :math:`\sum_x \pi(x) q(x_0 \mid x_1 = x)` whatever the number of steps,
    while Euler (first order) only approaches it."""
    process = uniform("loglinear", V=4)
    p0 = torch.tensor([0.55, 0.05, 0.3, 0.1], dtype=F64)
    q = process.marginal_matrix(torch.tensor(1.0, dtype=F64))  # q(x_1 | x_0)
    posterior_at_1 = (p0[:, None] * q) / (p0 @ q)[None, :]  # [x0, x1]
    target = posterior_at_1 @ process.prior_probs()

    def true_log_score(x_t, t):
        q_t = p0 @ process.marginal_matrix(t[0].double())
        return torch.log(q_t[None, None, :] / q_t[x_t][..., None])

    def law(name, steps):
        sampler = ddkit.build("sampler", name, steps=steps, parameterization="score")
        out = torch.zeros(4, dtype=F64)
        x = torch.arange(4)[:, None]
        probs = process.prior_probs()
        grid = ddkit.time_grid(steps)
        dist = probs.clone()
        for i in range(steps):
            t, s = grid[i].expand(4), grid[i + 1].expand(4)
            last = i == steps - 1
            step = sampler.step_probs(true_log_score(x, t), x, process, s, t, last, score=True)
            dist = dist @ step[:, 0]
        out += dist
        return out

    for steps in (1, 3, 10):
        assert torch.allclose(law("analytic", steps), target, atol=1e-12)
    euler_error = [float((law("euler", T) - target).abs().sum()) for T in (4, 16)]
    assert euler_error[0] > euler_error[1] > 0


def test_score_sampler_refuses_a_singular_start():
    process = ddkit.build("process", "masked", vocab_size=3)  # alpha_1 = 0
    sampler = ddkit.build("sampler", "analytic", steps=4, parameterization="score")
    with pytest.raises(ValueError, match="singular"):
        sampler.sample(lambda x, t: torch.zeros(*x.shape, 3), process, num_samples=2, length=3)
    uniform_zero = uniform("linear", V=3)

    def varied(x, t):  # ratios that differ per token: the singular step must not pass silently
        return torch.log(torch.arange(1, 4, dtype=torch.float64)).expand(*x.shape, 3)

    for network in (lambda x, t: torch.zeros(*x.shape, 3), varied):
        with pytest.raises(ValueError, match="singular"):
            sampler.sample(network, uniform_zero, num_samples=2, length=3)
