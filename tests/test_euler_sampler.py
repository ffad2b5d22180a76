r"""The Euler (τ-leaping) sampler: conformance with masked, uniform and matrix processes, the
single-step law against the reverse rates, filters, and the law of the samples against the
exact law of the T-step chain (computed by enumeration over all :math:`S^N` noisy states),
which approaches the data distribution as T grows.

:func:`exact_law` is shared with the analytic-sampler tests: it pushes the prior through the
sampler's own step distributions (positions are independent given the current state), so it
is the exact output law of the sampler with the exact oracle denoiser.
"""

import pytest
import torch

import ddkit
import ddkit.steps
from ddkit.testing import MarkovChain, OracleDenoiser, check_sampler
from ddkit.testing.oracles import all_sequences, sequence_ids
from ddkit.testing.stats import empirical_distribution, kl_divergence, kl_types_bound, total_variation, tv_bound

F64 = torch.float64
V, N, DRAWS = 3, 4, 20_000
CHAIN = MarkovChain(V, seed=5, concentration=0.5)
TIMED = {"name": "mean", "time_conditioning": True}  # the optimal uniform denoiser depends on t


def uniform(schedule="cosine", V=V):
    return ddkit.build("process", "uniform", vocab_size=V, schedule=schedule)


def masked(schedule="cosine", V=V):
    return ddkit.build("process", "masked", vocab_size=V, schedule=schedule)


def exact_law(sampler, model, process, denoiser=None):
    """The exact output distribution over V^N of ``sampler`` (a TransitionSampler) with the
    oracle (or ``denoiser``), by pushing the prior through every step."""
    S = process.num_states
    denoiser = denoiser or OracleDenoiser(model, process)
    states = all_sequences(S, N)
    prior = process.prior_probs()
    law = prior[states].prod(-1)  # independent prior per position
    grid = ddkit.time_grid(sampler.steps, sampler.grid)
    score = sampler.parameterization.predicts == "score"
    output = "log_score" if score else "log_mean"
    for i in range(sampler.steps):
        alive = law > 0  # the denoiser is only asked about states that can occur
        x = states[alive]
        t, s = grid[i].expand(len(x)), grid[i + 1].expand(len(x))
        last = i == sampler.steps - 1
        out = getattr(sampler.parameterization, output)(denoiser, x, t, process)
        probs = sampler.step_probs(out, x, process, s, t, last, score=score)
        step = probs[:, 0]
        for n in range(1, N):
            step = (step[:, :, None] * probs[:, n, None, :]).reshape(len(x), -1)
        law = law[alive] @ step
    clean = (states < V).all(-1)
    assert float(law[~clean].sum()) < 1e-12
    result = torch.zeros(V**N, dtype=F64)
    result[sequence_ids(states[clean], V)] = law[clean]
    return result


def sample_law(sampler, process, denoiser=None, seed=0):
    denoiser = denoiser or OracleDenoiser(CHAIN, process)
    result = sampler.sample(denoiser, process, num_samples=DRAWS, length=N,
                            generator=torch.Generator().manual_seed(seed))
    return empirical_distribution(sequence_ids(result.tokens, V), V**N), result


def test_conformance():
    """With the uniform process (mean and score parameterizations) and the mask-plus-uniform
    matrix process (an extra state that is not a mask); the masked process is covered in
    tests/test_conformance_builtins.py."""
    check_sampler(ddkit.build("sampler", "euler", steps=4, top_k=2, temperature=0.8),
                  ddkit.build("process", "matrix", vocab_size=4, generator="mask_uniform", uniform_fraction=0.3))
    check_sampler(ddkit.build("sampler", "euler", steps=4, parameterization="score"), uniform("loglinear", V=4))


@pytest.mark.parametrize("process", [uniform(), masked(), ddkit.build(
    "process", "matrix", vocab_size=V, generator="gaussian", width=0.5)], ids=["uniform", "masked", "gaussian"])
def test_samples_follow_the_exact_t_step_law(process):
    sampler = ddkit.build("sampler", "euler", steps=6, parameterization=TIMED)
    exact = exact_law(sampler, CHAIN, process)
    law, result = sample_law(sampler, process)
    assert result.nfe <= 6
    assert total_variation(law, exact) <= tv_bound(exact, DRAWS)
    assert kl_divergence(law, exact) <= kl_types_bound(V**N, DRAWS)


@pytest.mark.parametrize("process,steps", [(uniform(), (4, 8, 16, 32)), (masked(), (2, 4, 8, 16))],
                         ids=["uniform", "masked"])
def test_law_approaches_the_data_as_steps_grow(process, steps):
    """Measured (cosine schedule, this chain): TV 0.194, 0.090, 0.042, 0.020 (uniform) and
    0.340, 0.128, 0.056, 0.027 (masked)."""
    truth = CHAIN.probabilities(N)
    tv = [total_variation(exact_law(ddkit.build("sampler", "euler", steps=T, parameterization=TIMED),
                                    CHAIN, process), truth) for T in steps]
    assert tv[0] > tv[1] > tv[2] > tv[3]
    assert 1.6 < tv[2] / tv[3] < 2.4  # first order: doubling the steps halves the error
    # few steps are far from the data law, beyond what sampling noise explains: the exact-law
    # comparison above would see the difference
    assert tv[0] > 3 * tv_bound(truth, DRAWS)


def test_one_step_jumps_with_the_reverse_rates():
    process = uniform("linear", V=4)
    sampler = ddkit.build("sampler", "euler", parameterization=TIMED)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (3, 5), generator=gen)
    log_mean = torch.log_softmax(torch.randn(3, 5, 4, generator=gen, dtype=F64), -1)
    t, s = torch.full((3,), 0.5, dtype=F64), torch.full((3,), 0.49, dtype=F64)
    probs = sampler.transition_probs(log_mean, x, process, s, t, last=False, score=False)
    rates = process.reverse_rates(x, process.score_from_mean(x, log_mean.exp(), t), t)
    expected = torch.nn.functional.one_hot(x, 4).to(F64) + 0.01 * rates
    assert torch.allclose(probs, expected, atol=1e-14)
    # a step longer than the holding time: the position jumps surely, in proportion to the rates
    early = torch.full((3,), 0.999, dtype=F64)
    big = sampler.transition_probs(log_mean, x, process, torch.zeros(3, dtype=F64), early, last=False, score=False)
    fast = process.reverse_rates(x, process.score_from_mean(x, log_mean.exp(), early), early)
    off = fast.masked_fill(torch.nn.functional.one_hot(x, 4).bool(), 0.0)
    assert torch.allclose(big, off / off.sum(-1, keepdim=True), atol=1e-14)
    assert torch.allclose(big.sum(-1), torch.ones(3, 5, dtype=F64))


def test_filters_reshape_where_a_position_jumps_not_whether():
    process = uniform("linear", V=5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 5, (2, 6), generator=gen)
    log_mean = torch.log_softmax(2 * torch.randn(2, 6, 5, generator=gen, dtype=F64), -1)
    t, s = torch.full((2,), 0.6, dtype=F64), torch.full((2,), 0.5, dtype=F64)
    plain = ddkit.build("sampler", "euler", parameterization=TIMED)
    probs = plain.transition_probs(log_mean, x, process, s, t, False, score=False)
    own = torch.nn.functional.one_hot(x, 5).bool()
    for params in ({"top_k": 1}, {"temperature": 0.0}, {"temperature": 0.5, "top_p": 0.6}):
        sampler = ddkit.build("sampler", "euler", parameterization=TIMED, **params)
        shaped = ddkit.steps.filter_jump_targets(probs, x, sampler.tokens)
        assert torch.allclose(shaped[own], probs[own])  # the stay probability is kept
        assert torch.allclose(shaped.sum(-1), torch.ones(2, 6, dtype=F64))
    best = probs.masked_fill(own, -1.0).argmax(-1)
    top1 = ddkit.steps.filter_jump_targets(probs, x, ddkit.build("sampler", "euler", top_k=1).tokens)
    jump = 1 - probs[own].reshape(2, 6)
    assert torch.allclose(top1.gather(-1, best[..., None])[..., 0], jump)


def test_last_step_denoises_to_data_and_prompt_is_kept():
    process = masked("linear", V=4)
    prompt = torch.tensor([[2, -1, -1, 0, -1], [-1, -1, -1, -1, 3]])
    result = ddkit.build("sampler", "euler", steps=3).sample(
        lambda x_t, t: torch.zeros(*x_t.shape, 4), process, prompt=prompt,
        generator=torch.Generator().manual_seed(0), record_trajectory=True)
    assert bool((result.tokens < 4).all())
    assert torch.equal(result.tokens[prompt >= 0], prompt[prompt >= 0])
    assert all(torch.equal(state[prompt >= 0], prompt[prompt >= 0]) for state in result.trajectory)
    assert result.nfe <= result.steps <= 3


# -- full noise (alpha_1 = 0): infinite clocks must not turn zero rates into NaN ----------------


def test_a_steep_schedule_keeps_rates_finite_at_full_noise():
    """With |alpha'(1)| >= 4 and alpha_1 = 0 (polynomial exponent 5) the clock -alpha'/alpha
    overflows to inf at t = 1; the rates that are zero (impossible transitions) stay zero, the
    reverse rates of the mean's ratios (0 at alpha = 0) are zero, and Euler samples."""
    steep = {"name": "polynomial", "exponent": 5}
    absorbing = ddkit.build("process", "masked", vocab_size=V, schedule=steep)
    generator = ddkit.build("process", "matrix", vocab_size=V, generator="absorbing", schedule=steep)
    for process in (absorbing, generator):
        rates = process.rate_matrix(torch.tensor(1.0, dtype=torch.float64))
        assert not bool(torch.isnan(rates).any())
        off_diagonal = ~torch.eye(rates.shape[-1], dtype=torch.bool)
        assert bool((rates[off_diagonal] == 0).sum() > 0)  # impossible transitions stay impossible
    x_t = torch.full((2, N), V)
    mean = torch.full((2, N, V), 1.0 / V, dtype=torch.float64)
    t = torch.ones(2, dtype=torch.float64)
    reverse = absorbing.reverse_rates(x_t, absorbing.score_from_mean(x_t, mean, t), t)
    assert bool((reverse == 0).all())  # at full noise nothing unmasks yet
    result = ddkit.build("sampler", "euler", steps=8).sample(
        OracleDenoiser(CHAIN, absorbing), absorbing, num_samples=64, length=N,
        generator=torch.Generator().manual_seed(0))
    assert bool((result.tokens < V).all())


def test_score_parameterization_is_refused_where_the_rates_at_t1_are_infinite():
    sampler = ddkit.build("sampler", "euler", steps=4, parameterization="score")
    with pytest.raises(ValueError, match="alpha_1 > 0"):
        sampler.sample(lambda x, t: torch.zeros(*x.shape, V), masked("cosine"), num_samples=2, length=N)
    loglinear = masked("loglinear")  # alpha_1 = eps > 0: allowed
    out = sampler.sample(lambda x, t: torch.zeros(*x.shape, V), loglinear, num_samples=2, length=N,
                         generator=torch.Generator().manual_seed(0))
    assert bool((out.tokens < V).all())


def test_uniform_closed_form_analytic_step_refuses_the_singular_start_like_the_generic_one():
    process = uniform("linear")
    x_t = torch.tensor([[0, 1, 2, 1]])
    score = torch.rand(1, N, V, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    s, t = torch.tensor([0.75], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="singular"):
        ddkit.Process.score_posterior(process, x_t, score, s, t)
    with pytest.raises(ValueError, match="singular"):
        process.score_posterior(x_t, score, s, t)
    s, t = torch.tensor([0.25], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    torch.testing.assert_close(process.score_posterior(x_t, score, s, t),
                               ddkit.Process.score_posterior(process, x_t, score, s, t))


@pytest.mark.parametrize("schedule", ["linear", "cosine", "loglinear"])
def test_masked_euler_step_equals_the_closed_form_rates(schedule):
    """Independent of the generic rate machinery: on the masked process a mask jumps to j at
    the rate R(t)[j, m] s_j = beta_t * alpha_t/(1 - alpha_t) mu_j = -alpha'_t/(1 - alpha_t) mu_j
    (mean parameterization), or beta_t s_j with the network's own ratios (score); a clean
    token never jumps."""
    process = masked(schedule)
    gen = torch.Generator().manual_seed(3)
    x = torch.tensor([[V, 0, V, 2], [1, V, V, V]])
    t, s = torch.full((2,), 0.6, dtype=F64), torch.full((2,), 0.59, dtype=F64)
    h = 0.01
    alpha, slope = process.schedule.alpha(t), process.schedule.alpha_prime(t)
    clean = torch.nn.functional.one_hot(x, V + 1).to(F64)
    mask = (x == V)[..., None]

    log_mean = torch.log_softmax(torch.randn(2, N, V, generator=gen, dtype=F64), -1)
    probs = ddkit.build("sampler", "euler", parameterization=TIMED).transition_probs(log_mean, x, process, s, t, last=False, score=False)
    jump = h * (-slope / (1 - alpha))[:, None, None] * log_mean.exp()
    expected = torch.cat([jump, 1 - jump.sum(-1, keepdim=True)], -1)
    torch.testing.assert_close(probs, torch.where(mask, expected, clean), rtol=0, atol=1e-13)

    log_score = torch.randn(2, N, V, generator=gen, dtype=F64) - 2.0
    score_sampler = ddkit.build("sampler", "euler", parameterization={"name": "score", "time_conditioning": True})
    probs = score_sampler.transition_probs(log_score, x, process, s, t, last=False, score=True)
    jump = h * (-slope / alpha)[:, None, None] * log_score.exp()
    expected = torch.cat([jump, 1 - jump.sum(-1, keepdim=True)], -1)
    torch.testing.assert_close(probs, torch.where(mask, expected, clean), rtol=0, atol=1e-13)
