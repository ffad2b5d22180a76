"""The ReMDM remasking rule: the posterior's coefficients, marginal preservation against exact
enumeration with the oracle denoiser, the loop's stationary plateau, the sampled step against
its formula, and sigma = 0 as plain ancestral sampling, bit for bit."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ddkit
from ddkit.plugins.unmasking_rules.remdm import remasking_bound, remasking_probs
from ddkit.testing import MarkovChain, OracleDenoiser
from ddkit.testing.oracles import all_sequences
from ddkit.testing.stats import tv_bound

F64 = torch.float64
V, N = 3, 3


def masked(schedule="linear", V=V):
    return ddkit.build("process", "masked", vocab_size=V, schedule=schedule)


def flat(x_t, t):
    return torch.sin(torch.arange(x_t.shape[1] * V, dtype=torch.float32).reshape(x_t.shape[1], V))[None].expand(
        x_t.shape[0], -1, -1) * 2.0


def sample(sampler, process, seed=0, **kwargs):
    kwargs.setdefault("num_samples", 4)
    kwargs.setdefault("length", 8)
    return sampler.sample(flat, process, generator=torch.Generator().manual_seed(seed), record_trajectory=True,
                          **kwargs)


@pytest.mark.parametrize("rule", [{"name": "remdm", "strategy": "none"},
                                  {"name": "remdm", "strategy": "cap", "eta": 0.0},
                                  {"name": "remdm", "strategy": "rescale", "eta": 0.0}])
@pytest.mark.parametrize("options", [{}, {"temperature": 0.7, "top_p": 0.9}, {"final_argmax": True, "cache": False}])
def test_sigma_zero_is_ancestral_bit_for_bit(rule, options):
    base = ddkit.build("sampler", "ancestral", steps=12, **options)
    remdm = ddkit.build("sampler", "ancestral", steps=12, rule=rule, **options)
    prompt = torch.full((4, 8), -1)
    prompt[:, 0] = 1
    for kwargs in ({}, {"prompt": prompt, "num_samples": None, "length": None}):
        a, b = sample(base, masked(), **kwargs), sample(remdm, masked(), **kwargs)
        assert torch.equal(a.tokens, b.tokens) and a.nfe == b.nfe and a.steps == b.steps
        assert all(torch.equal(x, y) for x, y in zip(a.trajectory, b.trajectory))


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_coefficients_are_probabilities_for_every_sigma_up_to_the_bound(a, b, fraction):
    alpha_t, alpha_s = sorted([a, b])
    if alpha_t >= 1.0:
        return
    alpha_t, alpha_s = torch.tensor(alpha_t, dtype=F64), torch.tensor(alpha_s, dtype=F64)
    sigma = fraction * remasking_bound(alpha_s, alpha_t)
    x = torch.tensor([[0, 1, 2, V]])
    mean = torch.softmax(torch.randn(1, 4, V, generator=torch.Generator().manual_seed(0), dtype=F64), -1)
    probs = remasking_probs(x, mean, alpha_s, alpha_t, sigma, V)
    assert bool((probs >= -1e-15).all()) and bool((probs <= 1 + 1e-15).all())
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 4, dtype=F64))
    # just above the bound a coefficient leaves [0, 1] (unless the bound is 1 and sigma is capped by it)
    bound = float(remasking_bound(alpha_s, alpha_t))
    if bound < 1.0 and alpha_t > 0:
        over = remasking_probs(x, mean, alpha_s, alpha_t, torch.tensor(bound * 1.01 + 1e-6, dtype=F64), V)
        assert float(over[0, 3, V]) < 0


def test_forward_backward_sigma_is_clamped_to_the_bound():
    """Unclamped, (alpha_s - alpha_t)/alpha_t exceeds (1 - alpha_s)/alpha_t near t = 0 (here
    alpha = 1 - t^2 on a uniform grid: at t = 2/T, s = 1/T it is 3/T^2 against 1/T^2)."""
    sampler = ddkit.build("sampler", "ancestral", steps=10, rule={"name": "remdm", "strategy": "fb"})
    process = masked({"name": "polynomial", "exponent": 2.0})
    result = sample(sampler, process, num_samples=2)
    assert bool((result.tokens < V).all())
    grid = ddkit.time_grid(10)
    alpha = process.schedule.alpha(grid)
    raw = (alpha[1:] - alpha[:-1]) / alpha[:-1]
    bound = remasking_bound(alpha[1:], alpha[:-1])
    assert bool((raw[1:-1] > bound[1:-1]).any())  # the clamp is exercised on this grid
    state = ddkit.SamplerState(x=torch.full((1, 2), V), fixed=torch.zeros(1, 2, dtype=torch.bool),
                               t=torch.ones(1, dtype=F64), process=process,
                               calls=ddkit.DenoiserCalls(flat, process, sampler.parameterization))
    sampler.rule.start(state, grid)
    sigma = state.scratch["remdm_sigma"]
    torch.testing.assert_close(sigma[:-1], torch.minimum(raw, bound)[:-1].clamp(min=0))
    assert float(sigma[-1]) == 0.0


def exact_step_marginals(process, chain, t, s_alpha, t_alpha, sigma):
    """Per-position law of x_s after one remasking step from the exact law of x_t, by
    enumeration of x_t (with the exact denoiser)."""
    S = V + 1
    xs = all_sequences(S, N)
    x0s = all_sequences(V, N)
    p0 = chain.probabilities(N)
    tt = torch.full((len(xs),), t, dtype=F64)  # float64 times: the oracle's alpha must be exact
    q = process.marginal_probs(x0s, torch.full((len(x0s),), t, dtype=F64))  # [V^N, N, S]
    # q_t(x_t) = sum_x0 p(x0) prod_n q(x_t^n | x0^n)
    joint = torch.ones(len(x0s), len(xs), dtype=F64)
    for n in range(N):
        joint = joint * q[:, n, :][:, xs[:, n]]
    q_t = p0 @ joint
    oracle = OracleDenoiser(chain, process)
    mean = torch.softmax(oracle(xs, tt).to(F64), -1)
    probs = remasking_probs(xs, mean, s_alpha, t_alpha, sigma, V)  # [S^N, N, S]
    return torch.einsum("x,xns->ns", q_t, probs), chain.token_marginals(N)


@pytest.mark.parametrize("strategy", ["cap", "rescale", "fb", "none", "loop_plateau"])
def test_remasking_keeps_the_masked_diffusion_marginals(strategy):
    chain = MarkovChain(V, seed=4, concentration=0.7)
    process = masked()
    t, s = 0.6, 0.45
    a_t, a_s = 1 - t, 1 - s
    bound = float(remasking_bound(torch.tensor(a_s), torch.tensor(a_t)))
    sigma = {"cap": min(0.3, bound), "rescale": 0.5 * bound, "fb": min((a_s - a_t) / a_t, bound), "none": 0.0,
             "loop_plateau": 0.2}[strategy]
    if strategy == "loop_plateau":
        a_s = a_t
    law, clean = exact_step_marginals(process, chain, t, torch.tensor(a_s, dtype=F64), torch.tensor(a_t, dtype=F64),
                                      torch.tensor(sigma, dtype=F64))
    torch.testing.assert_close(law[:, :V], a_s * clean.to(F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(law[:, V], torch.full((N,), 1 - a_s, dtype=F64), rtol=0, atol=1e-12)


def test_conf_raises_the_mask_probability_as_documented():
    """conf remasks clean positions only (masked ones have sigma 0): the mask probability of
    a position after the step is 1 - alpha_s + alpha_t * sigma_clean, not 1 - alpha_s."""
    chain = MarkovChain(V, seed=4, concentration=0.7)
    t, s = 0.6, 0.45
    a_t, a_s = torch.tensor(1 - t, dtype=F64), torch.tensor(1 - s, dtype=F64)
    xs = all_sequences(V + 1, N)
    sigma = torch.where(xs == V, torch.tensor(0.0, dtype=F64), torch.tensor(0.3, dtype=F64))
    law, _ = exact_step_marginals(masked(), chain, t, a_s, a_t, sigma)
    torch.testing.assert_close(law[:, V], torch.full((N,), float(1 - a_s + a_t * 0.3), dtype=F64),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("strategy", ["conf", "rescale"])
def test_conf_weights_sum_to_one_over_the_sequence(strategy):
    """conf remasks about sigma_max tokens per sequence in total; rescale with eta = 1
    remasks sigma_max per clean token (Hoeffding bound on the mean count, failure
    probability 1e-6)."""
    process = masked()
    draws, length = 40_000, 5
    rule = ddkit.build("unmasking_rule", "remdm", strategy=strategy, **({"eta": 1.0} if strategy == "rescale" else {}))
    sampler = ddkit.build("sampler", "ancestral", steps=4, rule=rule, cache=False)
    x = torch.tensor([[V, 0, 1, 2, 0]]).expand(draws, -1).contiguous()
    state = ddkit.SamplerState(x=x.clone(), fixed=torch.zeros_like(x, dtype=torch.bool),
                               t=torch.ones(draws, dtype=F64), process=process,
                               calls=ddkit.DenoiserCalls(flat, process, sampler.parameterization),
                               generator=torch.Generator().manual_seed(9))
    grid = ddkit.time_grid(4)
    rule.start(state, grid)
    if strategy == "conf":  # clean tokens with different confidences
        state.confidence = torch.tensor([[math.inf, 0.9, 0.5, 0.2, 0.7]], dtype=F64).expand(draws, -1).clone()
    new = rule.step(state, 1, grid[2].expand(draws), grid[1].expand(draws), last=False, tokens=sampler.tokens,
                    argmax=False, backend="auto")
    remasked = ((x != V) & (new == V)).sum(-1).to(F64).mean()
    bound = float(remasking_bound(process.schedule.alpha(grid[2]), process.schedule.alpha(grid[1])))
    expected = bound if strategy == "conf" else 4 * bound
    assert abs(float(remasked) - expected) < length * math.sqrt(math.log(2 / 1e-6) / (2 * draws))


def test_loop_plateau_keeps_the_expected_number_of_masks():
    rule = ddkit.build("unmasking_rule", "remdm", strategy="loop")
    sampler = ddkit.build("sampler", "ancestral", steps=40, rule=rule)
    process = masked()
    grid = ddkit.time_grid(40)
    state = ddkit.SamplerState(x=torch.full((1, 4), V), fixed=torch.zeros(1, 4, dtype=torch.bool),
                               t=torch.ones(1, dtype=F64), process=process,
                               calls=ddkit.DenoiserCalls(flat, process, sampler.parameterization))
    rule.start(state, grid)
    plateau = (grid[:-1] > rule.t_off) & (grid[:-1] <= rule.t_on)
    assert int(plateau.sum()) == 20  # (t_on - t_off) * T steps
    sigma, unmask = state.scratch["remdm_sigma"], state.scratch["remdm_unmask"]
    a = rule.alpha_on
    assert torch.allclose(sigma[plateau], torch.full_like(sigma[plateau], rule.eta))
    assert torch.allclose(unmask[plateau], torch.full_like(unmask[plateau], rule.eta * a / (1 - a)))
    # expected masks after a plateau step from the stationary level (1 - a) per position
    masks_after = (1 - a) * (1 - unmask[plateau]) + a * sigma[plateau]
    assert torch.allclose(masks_after, torch.full_like(masks_after, 1 - a), atol=1e-15)
    assert float(sigma[~plateau].abs().max()) == 0.0


@pytest.mark.parametrize("rule", [{"name": "remdm", "strategy": "cap", "eta": 0.4},
                                  {"name": "remdm", "strategy": "rescale", "eta": 0.8},
                                  {"name": "remdm", "strategy": "fb"}])
def test_the_sampled_step_follows_the_formula(rule):
    """One step t -> s from a fixed x_t: the per-position frequencies of 40,000 draws match
    remasking_probs (total variation within the McDiarmid bound, failure probability 1e-6
    per position, Bonferroni over positions)."""
    process = masked()
    sampler = ddkit.build("sampler", "ancestral", steps=4, rule=rule, cache=False)
    draws = 40_000
    x_t = torch.tensor([[V, 0, V, 2, 1]]).expand(draws, -1).contiguous()
    grid = ddkit.time_grid(4)  # the step 0.75 -> 0.5
    ruled = sampler.rule
    state = ddkit.SamplerState(x=x_t.clone(), fixed=torch.zeros_like(x_t, dtype=torch.bool),
                               t=torch.ones(draws, dtype=F64), process=process,
                               calls=ddkit.DenoiserCalls(flat, process, sampler.parameterization),
                               generator=torch.Generator().manual_seed(5))
    ruled.start(state, grid)
    t, s = grid[1].expand(draws), grid[2].expand(draws)
    new = ruled.step(state, 1, s, t, last=False, tokens=sampler.tokens, argmax=False, backend="auto")
    alpha = process.schedule.alpha(grid)
    sigma = state.scratch["remdm_sigma"][1]
    assert 0 < float(sigma) <= float(remasking_bound(alpha[2], alpha[1]))
    mean = torch.softmax(flat(x_t[:1], t[:1]).to(F64), -1)
    expected = remasking_probs(x_t[:1], mean, alpha[2], alpha[1], sigma, V)[0]
    for n in range(x_t.shape[1]):
        freq = torch.bincount(new[:, n], minlength=V + 1).to(F64) / draws
        tv = 0.5 * float((freq - expected[n]).abs().sum())
        assert tv < tv_bound(expected[n], draws, delta=1e-6 / x_t.shape[1]), (n, freq, expected[n])


def test_remasking_happens_and_fixed_positions_never_change():
    sampler = ddkit.build("sampler", "ancestral", steps=64, rule={"name": "remdm", "strategy": "cap", "eta": 0.2})
    prompt = torch.full((8, 6), -1)
    prompt[:, 2] = 0
    result = sample(sampler, masked(), prompt=prompt, num_samples=None, length=None)
    masks = torch.stack([(x == V).sum() for x in result.trajectory])
    assert bool((masks[1:] > masks[:-1]).any())  # some step added masks back
    assert all(bool((x[:, 2] == 0).all()) for x in result.trajectory)
    assert bool((result.tokens < V).all()) and result.steps == 64


def test_conf_strategy_records_confidences_and_remasks_the_least_confident_more():
    sampler = ddkit.build("sampler", "ancestral", steps=32, rule={"name": "remdm", "strategy": "conf"})
    result = sample(sampler, masked(), num_samples=16)
    assert bool((result.tokens < V).all())
    masks = torch.stack([(x == V).sum() for x in result.trajectory])
    assert bool((masks[1:] > masks[:-1]).any())


def test_loop_with_a_time_conditioned_denoiser_gets_the_remapped_time():
    times = []

    def recording(x_t, t):
        times.append(float(t[0]))
        return torch.zeros(*x_t.shape, V)

    timed = ddkit.build("parameterization", "mean", time_conditioning=True)
    rule = {"name": "remdm", "strategy": "loop"}
    process = masked("cosine")
    sampler = ddkit.build("sampler", "ancestral", steps=20, rule=rule, cache=False)
    sampler.sample(recording, process, num_samples=1, length=4, parameterization=timed,
                   generator=torch.Generator().manual_seed(0))
    grid = ddkit.time_grid(20)
    alphas = process.schedule.alpha(torch.tensor(times, dtype=F64))
    loop = sampler.rule.loop_alpha(grid[:-1])
    plateau = (grid[:-1] > 0.05) & (grid[:-1] <= 0.55)
    expected = torch.where(plateau, 0.9, loop)[: len(times)]
    torch.testing.assert_close(alphas, expected, rtol=0, atol=1e-6)  # times reach networks in float32


def test_loop_refuses_a_time_conditioned_denoiser_with_a_schedule_without_inverse():
    class NoInverse(ddkit.Schedule):
        def alpha(self, t):
            return 1 - t

        def alpha_prime(self, t):
            return -torch.ones_like(t)

    process = ddkit.build("process", "masked", vocab_size=V, schedule=NoInverse())
    sampler = ddkit.build("sampler", "ancestral", steps=8, rule={"name": "remdm", "strategy": "loop"})
    timed = ddkit.build("parameterization", "mean", time_conditioning=True)
    with pytest.raises(ValueError, match="remdm loop remaps time.*no inverse"):
        sampler.sample(flat, process, num_samples=1, length=4, parameterization=timed)
    sampler.sample(flat, process, num_samples=1, length=4)  # without time conditioning it runs


@pytest.mark.parametrize("bad", [{"strategy": "loop", "t_on": 0.1, "t_off": 0.2}, {"eta": 1.5},
                                 {"strategy": "maybe"}, {"eta": float("nan")}, {"strategy": "fb", "eta": 0.1},
                                 {"strategy": "conf", "eta": 0.5}])
def test_bad_parameters_are_refused(bad):
    with pytest.raises((ddkit.ParameterError, ValueError)):
        ddkit.build("unmasking_rule", "remdm", **bad)


def test_defaults_are_the_papers():
    assert ddkit.build("unmasking_rule", "remdm", strategy="cap").eta == 0.008
    assert ddkit.build("unmasking_rule", "remdm", strategy="rescale").eta == 0.015
    loop = ddkit.build("unmasking_rule", "remdm", strategy="loop")
    assert (loop.t_on, loop.t_off, loop.alpha_on, loop.eta) == (0.55, 0.05, 0.9, 0.02)
    assert math.isclose(float(loop.loop_alpha(torch.tensor(0.55, dtype=F64))), 0.9)
