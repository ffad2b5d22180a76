"""Correctors against exact answers: the forward–backward, DFM and informed correctors with
the exact denoiser of a small Markov chain (and its exact leave-one-out conditionals), on a
space small enough to enumerate every noisy sequence.

Every statistical check compares an empirical law of ``n`` independent sequences with an
exact law and allows ``ddkit.testing.stats.tv_bound`` (failure probability 1e-6 for iid draws)
plus any exact, enumerated bias of the discretised kernel; seeds are fixed.
"""

import math

import pytest
import torch

import ddkit
from ddkit.plugins.correctors.dfm import euler_step_probs
from ddkit.plugins.correctors.forward_backward import corrector_rates, exponential_step_probs, masked_rates
from ddkit.testing import LeaveOneOutOracle, MarkovChain, OracleDenoiser
from ddkit.testing.oracles import all_sequences, sequence_ids
from ddkit.testing.stats import empirical_distribution, total_variation, tv_bound

V, N = 3, 3
S_TIME = 0.4


def chain():
    return MarkovChain(V, seed=0, concentration=0.5)


def masked(schedule="linear"):
    return ddkit.build("process", "masked", vocab_size=V, schedule=schedule)


def uniform():
    return ddkit.build("process", "uniform", vocab_size=V)


def parameterization_for(process):
    # the optimal uniform-diffusion denoiser depends on t; the masked one does not
    return ddkit.build("parameterization", "mean", time_conditioning=process.mask_id is None)


def noisy_law(model, process, s):
    """Every noisy sequence ``Z`` ([M, N]) and its exact probability under q_s."""
    S = process.num_states
    Z = all_sequences(S, N)
    X0, p0 = all_sequences(V, N), model.probabilities(N)
    channel = process.marginal_matrix(torch.tensor(s, dtype=torch.float64)).to(torch.float64)[:V]  # [V, S]
    likelihood = channel[X0[:, None, :], Z[None, :, :]].prod(-1)  # [x0, z]
    return Z, p0 @ likelihood


def state_at(x, s, denoiser, process, *, generator=None, fixed=None):
    return ddkit.SamplerState(
        x=x.clone(), fixed=torch.zeros_like(x, dtype=torch.bool) if fixed is None else fixed,
        t=torch.full((x.shape[0],), s, dtype=torch.float64), process=process, generator=generator,
        calls=ddkit.DenoiserCalls(denoiser, process, parameterization_for(process)))


def product_kernel(Z, probs):
    """K[z, z'] = prod_n probs[z, n, z'_n] for per-position step probabilities [M, N, S]."""
    K = torch.ones(len(Z), len(Z), dtype=torch.float64)
    for n in range(N):
        K = K * probs[:, n][:, Z[:, n]]
    return K


def generator_matrix(Z, rates, S):
    """G[z, z'] = rates[z, n, z'_n] for z' differing from z at position n alone; rows sum to 0."""
    M = len(Z)
    G = torch.zeros(M, M, dtype=torch.float64)
    for n in range(N):
        for y in range(S):
            moved = Z.clone()
            moved[:, n] = y
            G[torch.arange(M), sequence_ids(moved, S)] += torch.where(Z[:, n] == y, 0.0, rates[:, n, y])
    return G - torch.diag(G.sum(1))


def exact_samples(model, process, s, n, seed):
    """n independent draws of q_s: x0 from the chain, noised by the process."""
    g = torch.Generator().manual_seed(seed)
    return process.sample_marginal(model.sample(n, N, g), torch.full((n,), s, dtype=torch.float64), generator=g)


def law_of(x, S):
    return empirical_distribution(sequence_ids(x, S), S**N)


# -- forward-backward --------------------------------------------------------------------

@pytest.mark.parametrize("make_process", [masked, lambda: masked("cosine"), uniform], ids=["masked", "masked-cosine", "uniform"])
def test_forward_backward_rates_have_q_s_as_stationary_law(make_process):
    """q_s (R + R_hat) = 0 exactly with the exact reverse rates (up to the float32 mean)."""
    model, process = chain(), make_process()
    Z, q = noisy_law(model, process, S_TIME)
    rates = corrector_rates(state_at(Z, S_TIME, OracleDenoiser(model, process), process))
    G = generator_matrix(Z, rates, process.num_states)
    assert float(G.abs().max()) > 0.5  # the chain moves
    assert float((q @ G).abs().max()) < 1e-6 * float(G.abs().max())


def test_forward_backward_without_the_forward_rates_would_not_be_stationary():
    """The check above has power: the reverse rates alone move q_s (the marginal flows to data)."""
    model, process = chain(), masked()
    Z, q = noisy_law(model, process, S_TIME)
    state = state_at(Z, S_TIME, OracleDenoiser(model, process), process)
    reverse = process.reverse_rates(Z, state.calls.log_score(Z, state.t).exp(), state.t)
    reverse = reverse.masked_fill(torch.nn.functional.one_hot(Z, process.num_states).bool(), 0.0)
    assert float((q @ generator_matrix(Z, reverse, process.num_states)).abs().max()) > 0.01


def test_forward_backward_step_is_the_exponential_form_and_second_order():
    """One step holds the rates fixed: P(stay) = exp(-h sum), targets in proportion to the
    rates; the joint kernel moves q_s by O(h^2) (positions jump together)."""
    model, process = chain(), masked()
    Z, q = noisy_law(model, process, S_TIME)
    rates = corrector_rates(state_at(Z, S_TIME, OracleDenoiser(model, process), process))
    h = torch.full((len(Z),), 0.1, dtype=torch.float64)
    probs = exponential_step_probs(Z, rates, h)
    total = rates.sum(-1)
    stay = probs.gather(-1, Z[..., None]).squeeze(-1)
    assert torch.allclose(stay, torch.exp(-0.1 * total), atol=1e-12)
    jump = probs.masked_fill(torch.nn.functional.one_hot(Z, process.num_states).bool(), 0.0)
    assert torch.allclose(jump, (1 - stay)[..., None] * rates / total.clamp_min(1e-300)[..., None], atol=1e-12)
    moved = [total_variation(q @ product_kernel(Z, exponential_step_probs(Z, rates, h * scale)), q)
             for scale in (1.0, 0.1)]
    assert moved[0] > 1e-4 and moved[0] / moved[1] > 50  # about 100: second order


@pytest.mark.parametrize("make_process, h", [(masked, 0.05), (uniform, 0.02)], ids=["masked", "uniform"])
def test_forward_backward_corrector_keeps_exact_samples_of_q_s(make_process, h):
    """20 corrector steps on 20000 exact draws of q_s: the law stays q_s within the sampling
    bound plus the kernel's enumerated O(h^2) drift (the uniform process has about twice
    the masked one's rates, so a shorter step)."""
    model, process = chain(), make_process()
    Z, q = noisy_law(model, process, S_TIME)
    oracle, n, steps = OracleDenoiser(model, process), 20_000, 20
    rates = corrector_rates(state_at(Z, S_TIME, oracle, process))
    drift = total_variation(q @ torch.linalg.matrix_power(
        product_kernel(Z, exponential_step_probs(Z, rates, torch.full((len(Z),), h, dtype=torch.float64))), steps), q)
    x = exact_samples(model, process, S_TIME, n, seed=1)
    state = state_at(x, S_TIME, oracle, process, generator=torch.Generator().manual_seed(2))
    corrector = ddkit.build("corrector", "forward_backward", step_size=h, num_steps=steps)
    corrector.correct(state)
    assert state.nfe == steps
    assert float((state.x != x).any(-1).double().mean()) > 0.3  # it really moved
    assert drift < 0.01
    assert total_variation(law_of(state.x, process.num_states), q) <= tv_bound(q, n) + drift


def test_masked_closed_form_has_the_generic_jump_probabilities_and_no_dense_generator(monkeypatch):
    """For the masked process the corrector steps without the [B, N, S] rate rows: its
    per-sequence rates give the generic step's jump probabilities at masks and clean tokens,
    and no dense generator is built (it would be S x S per time, too large for big vocabularies)."""
    model, process = chain(), masked("cosine")
    Z, _ = noisy_law(model, process, S_TIME)
    state = state_at(Z, S_TIME, OracleDenoiser(model, process), process)
    h = torch.full((len(Z),), 0.3, dtype=torch.float64)
    generic = exponential_step_probs(Z, corrector_rates(state), h)
    jump = 1 - generic.gather(-1, Z[..., None]).squeeze(-1)
    unmask, remask = masked_rates(state)
    is_mask = Z == V
    assert torch.allclose(jump[is_mask], (-torch.expm1(-h * unmask))[:, None].expand_as(Z)[is_mask], rtol=1e-6)
    assert torch.allclose(jump[~is_mask], (-torch.expm1(-h * remask))[:, None].expand_as(Z)[~is_mask], rtol=1e-12)
    other = uniform()
    assert masked_rates(state_at(all_sequences(V, N), S_TIME, OracleDenoiser(model, other), other)) is None

    def dense(*args):
        raise AssertionError("the masked closed form must not build the dense generator")

    monkeypatch.setattr(type(process), "rate_matrix", dense)
    for name in ("forward_backward", "dfm"):
        state = state_at(Z, S_TIME, OracleDenoiser(model, process), process, generator=torch.Generator().manual_seed(0))
        ddkit.build("corrector", name, step_size=0.1).correct(state)
        assert state.nfe >= 1


def test_forward_backward_scales_the_predictor_step_and_honours_entry_time():
    """h = step_multiplier * (t - s) from the grid; no correction above entry_time; one call
    per corrector step."""
    model, process = chain(), masked()
    oracle = OracleDenoiser(model, process)
    sampler = ddkit.build("sampler", "ancestral", steps=10, cache=False,
                          corrector={"name": "forward_backward", "entry_time": 0.3, "num_steps": 2})
    result = sampler.sample(oracle, process, num_samples=4, length=N, generator=torch.Generator().manual_seed(0))
    assert result.nfe == 10 + 2 * 3  # corrections at s = 0.3, 0.2, 0.1 (none after the last step)
    state = state_at(torch.full((2, N), V), 0.5, oracle, process)
    state.previous_t = torch.full((2,), 0.75, dtype=torch.float64)  # the predictor's step 0.75 -> 0.5
    assert torch.allclose(sampler.corrector.step_length(state), torch.full((2,), 1.5 * 0.25, dtype=torch.float64))


def test_a_corrector_scaled_by_the_predictor_step_needs_a_step_taken_or_a_step_size():
    model, process = chain(), masked()
    state = state_at(torch.full((2, N), V), 0.5, OracleDenoiser(model, process), process)
    for name in ("forward_backward", "dfm"):
        with pytest.raises(ValueError, match=f"the {name} corrector .* no step was taken yet; give the corrector a "
                                             f"step_size"):
            ddkit.build("corrector", name).correct(state)


def test_correctors_take_the_predictor_step_from_any_sampler_first_hitting_included():
    """first_hitting's steps differ per sequence: the corrector's time is each one's own."""
    model, process = chain(), masked()
    seen = []

    class Spy(ddkit.Corrector):
        def correct(self, state):
            seen.append((state.previous_t - state.t).clone())

    sampler = ddkit.build("sampler", "first_hitting")
    sampler.corrector = Spy()
    sampler.sample(OracleDenoiser(model, process), process, num_samples=3, length=N,
                   generator=torch.Generator().manual_seed(0))
    assert seen and all(bool((step > 0).all()) for step in seen)
    assert any(len(set(step.tolist())) > 1 for step in seen)  # per-sequence steps


def test_correctors_never_change_fixed_positions():
    model, process = chain(), masked()
    prompt = torch.tensor([[0, -1, 2]] * 50)
    for corrector in ({"name": "forward_backward", "step_multiplier": 4.0}, {"name": "dfm"}):
        sampler = ddkit.build("sampler", "ancestral", steps=8, corrector=corrector)
        result = sampler.sample(OracleDenoiser(model, process), process, prompt=prompt,
                                generator=torch.Generator().manual_seed(0))
        assert torch.equal(result.tokens[:, [0, 2]], prompt[:, [0, 2]])
    hollow = LeaveOneOutOracle(model, process)
    sampler = ddkit.build("sampler", "ancestral", steps=8, corrector={"name": "informed", "k": 3})
    result = sampler.sample(hollow, process, prompt=prompt, generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.tokens[:, [0, 2]], prompt[:, [0, 2]])


# -- DFM -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler, make_process", [("ancestral", masked), ("euler", masked), ("euler", uniform)])
def test_dfm_with_c_zero_is_exactly_its_predictor(sampler, make_process):
    """scale = 0: no call, no draw, the predictor's samples bit for bit; scale > 0 differs."""
    model, process = chain(), make_process()
    oracle = OracleDenoiser(model, process)
    param = parameterization_for(process)

    def run(corrector):
        spec = dict(steps=8, parameterization=param, **({} if corrector is None else {"corrector": corrector}))
        # the predictor alone stops early once nothing is masked; with a corrector it runs all steps
        return ddkit.build("sampler", sampler, **spec).sample(
            oracle, process, num_samples=64, length=N, generator=torch.Generator().manual_seed(3),
            record_trajectory=True)

    alone, zero, active = run(None), run({"name": "dfm", "scale": 0.0}), run({"name": "dfm"})
    assert torch.equal(alone.tokens, zero.tokens) and alone.nfe == zero.nfe
    assert all(torch.equal(a, b) for a, b in zip(alone.trajectory, zero.trajectory))
    assert not torch.equal(alone.tokens, active.tokens) and active.nfe > alone.nfe


def test_dfm_coefficient_and_adaptive_substeps_counted_in_nfe():
    """Masked, linear schedule, masks present: the largest total rate is c_s / s, so the
    corrector takes ceil(h c_s / s) Euler sub-steps, one call each (max_substeps caps it)."""
    model, process = chain(), masked()
    corrector = ddkit.build("corrector", "dfm", step_size=0.1)
    assert float(corrector.coefficient(torch.tensor(0.3))) == pytest.approx(10 * (0.3 * 0.7) ** 0.25)
    assert float(corrector.coefficient(torch.tensor(0.0))) == 0.0 == float(corrector.coefficient(torch.tensor(1.0)))
    s = 0.3
    x = exact_samples(model, process, s, 2000, seed=0)
    x[0] = V  # keep a fully masked sequence: its masks stay the fastest positions
    state = state_at(x, s, OracleDenoiser(model, process), process, generator=torch.Generator().manual_seed(0))
    corrector.correct(state)
    expected = math.ceil(0.1 * float(corrector.coefficient(torch.tensor(s))) / s)
    assert expected == 3 and state.nfe == expected
    capped = ddkit.build("corrector", "dfm", step_size=0.1, max_substeps=2)
    state = state_at(x, s, OracleDenoiser(model, process), process, generator=torch.Generator().manual_seed(0))
    capped.correct(state)
    assert state.nfe == 2


def test_dfm_corrector_keeps_exact_samples_of_q_s():
    """c = 1 (exponent 0), 10 single-sub-step corrections of h = 0.05: the law matches the
    enumerated Euler kernel's and stays within its small drift of q_s."""
    model, process = chain(), masked()
    Z, q = noisy_law(model, process, S_TIME)
    oracle, n, steps, h = OracleDenoiser(model, process), 20_000, 10, 0.05
    rates = corrector_rates(state_at(Z, S_TIME, oracle, process))
    assert float(rates.sum(-1).max()) * h < 1  # one sub-step per correction
    K = product_kernel(Z, euler_step_probs(Z, rates, torch.full((len(Z),), h, dtype=torch.float64)))
    exact = q @ torch.linalg.matrix_power(K, steps)
    drift = total_variation(exact, q)
    x = exact_samples(model, process, S_TIME, n, seed=4)
    state = state_at(x, S_TIME, oracle, process, generator=torch.Generator().manual_seed(5))
    corrector = ddkit.build("corrector", "dfm", scale=1.0, exponent=0.0, step_size=h)
    for _ in range(steps):
        corrector.correct(state)
    assert state.nfe == steps and drift < 0.01
    assert float((state.x != x).any(-1).double().mean()) > 0.2
    law = law_of(state.x, process.num_states)
    assert total_variation(law, exact) <= tv_bound(exact, n)
    assert total_variation(law, q) <= tv_bound(q, n) + drift


# -- informed ------------------------------------------------------------------------------

def informed_kernel(Z, log_p, temperature):
    """The k = 1 informed kernel by enumeration: position d chosen w.p. proportional to
    p(x^d | x^-d)^(-1/temperature) among clean ones (uniform for temperature = inf), then
    redrawn from p(. | x^-d)."""
    M = len(Z)
    clean = Z != V
    current = log_p.gather(-1, Z.clamp_max(V - 1)[..., None]).squeeze(-1)
    weight = clean.double() if math.isinf(temperature) else torch.where(clean, torch.exp(-current / temperature), 0.0)
    weight = weight / weight.sum(-1, keepdim=True).clamp_min(1e-300)
    K = torch.diag((~clean.any(-1)).double())
    for d in range(N):
        for v in range(V):
            moved = Z.clone()
            moved[:, d] = torch.where(clean[:, d], v, Z[:, d])
            K[torch.arange(M), sequence_ids(moved, V + 1)] += weight[:, d] * torch.where(clean[:, d], log_p[:, d, v].exp(), 0.0)
    return K


def test_uniform_single_site_informed_kernel_is_exactly_invariant_and_informed_choice_is_not():
    """With the exact leave-one-out conditionals, k = 1 and temperature = inf is random-scan
    Gibbs sampling given the mask pattern: q_s K = q_s exactly. Choosing the least likely
    token first (finite temperature) breaks invariance."""
    model, process = chain(), masked()
    Z, q = noisy_law(model, process, S_TIME)
    log_p = LeaveOneOutOracle(model, process)(Z, torch.zeros(len(Z)))
    assert total_variation(q @ informed_kernel(Z, log_p, math.inf), q) < 1e-12
    assert total_variation(q @ informed_kernel(Z, log_p, 1.0), q) > 0.02


@pytest.mark.parametrize("temperature, steps", [(math.inf, 10), (1.0, 1), (0.3, 1)])
def test_informed_corrector_samples_its_kernel(temperature, steps):
    """20000 exact draws of q_s, corrected with k = 1: the law is the enumerated kernel's
    (q_s itself for temperature = inf), within the sampling bound."""
    model, process = chain(), masked()
    Z, q = noisy_law(model, process, S_TIME)
    hollow, n = LeaveOneOutOracle(model, process), 20_000
    exact = q @ torch.linalg.matrix_power(informed_kernel(Z, hollow(Z, torch.zeros(len(Z))), temperature), steps)
    x = exact_samples(model, process, S_TIME, n, seed=6)
    state = state_at(x, S_TIME, hollow, process, generator=torch.Generator().manual_seed(7))
    corrector = ddkit.build("corrector", "informed", k=1, temperature=temperature)
    for _ in range(steps):
        corrector.correct(state)
    assert state.nfe == steps
    assert torch.equal(state.x == V, x == V)  # the mask pattern is kept
    assert float((state.x != x).any(-1).double().mean()) > 0.1
    assert total_variation(law_of(state.x, V + 1), exact) <= tv_bound(exact, n)


def test_informed_corrector_resamples_the_k_least_likely_clean_tokens():
    """Greedy (temperature 0): the k clean, free positions whose current token is least
    likely are redrawn together; masks and fixed positions stay; one call."""
    process = ddkit.build("process", "masked", vocab_size=4)

    class Hollow:
        hollow = True

        def __call__(self, x, t):
            # p(. | x^-d) puts mass 0.1 * (d + 1) on token 0 and the rest on token 3
            B, L = x.shape
            p0 = 0.1 * (torch.arange(L, dtype=torch.float64) + 1)
            probs = torch.zeros(B, L, 4, dtype=torch.float64)
            probs[..., 0], probs[..., 3] = p0, 1 - p0
            return probs.log()

    x = torch.tensor([[0, 0, 0, 4, 0, 0, 0]])  # current tokens 0: position d has probability 0.1 (d + 1)
    fixed = torch.zeros_like(x, dtype=torch.bool)
    fixed[0, 1] = True
    state = state_at(x, 0.5, Hollow(), process, generator=torch.Generator().manual_seed(0), fixed=fixed)
    ddkit.build("corrector", "informed", k=3, temperature=0.0).correct(state)
    chosen = [0, 2, 4]  # the three least likely free clean tokens (position 1 is fixed, 3 masked)
    changed = (state.x != x)[0].nonzero().flatten().tolist()
    assert set(changed) <= set(chosen) and state.nfe == 1
    assert state.x[0, 1] == 0 and state.x[0, 3] == 4 and torch.equal(state.x[0, 5:], x[0, 5:])


def test_informed_corrector_refuses_a_denoiser_that_is_not_hollow():
    model, process = chain(), masked()
    sampler = ddkit.build("sampler", "ancestral", steps=4, corrector="informed")
    with pytest.raises(ValueError, match="needs a hollow denoiser.*hollow = True.*OracleDenoiser does not declare it"):
        sampler.sample(OracleDenoiser(model, process), process, num_samples=2, length=N)
    with pytest.raises(ValueError, match=r"corrector InformedCorrector needs a process with \['absorbing'\]"):
        ddkit.build("sampler", "euler", steps=4, corrector="informed").sample(
            LeaveOneOutOracle(model, masked()), uniform(), num_samples=2, length=N)
    state = state_at(torch.zeros(2, N, dtype=torch.long), 0.5, LeaveOneOutOracle(model, process), process)
    state.calls.parameterization = ddkit.build("parameterization", "score")
    with pytest.raises(ValueError, match="mean parameterization; this one predicts 'score'"):
        ddkit.build("corrector", "informed").correct(state)


def test_corrector_parameters_from_yaml_are_validated():
    sampler = ddkit.build("sampler", "ancestral", steps=16,
                          corrector={"name": "informed", "k": 4, "temperature": float("inf"), "every": 2})
    assert (sampler.corrector.k, sampler.corrector.temperature, sampler.corrector.every) == (4, math.inf, 2)
    for bad in ({"name": "informed", "k": 0}, {"name": "informed", "temperature": -1.0},
                {"name": "forward_backward", "step_multiplier": 0.0}, {"name": "dfm", "scale": -1.0},
                {"name": "forward_backward", "entry_time": 1.5}):
        with pytest.raises(Exception, match=next(k for k in bad if k != "name")):
            ddkit.build("sampler", "ancestral", corrector=bad)


@pytest.mark.parametrize("corrector", [{"name": "forward_backward"}, {"name": "dfm"},
                                       {"name": "informed", "k": 3, "temperature": 1.0}])
def test_corrector_samples_are_identical_on_every_kernel_backend(corrector):
    """The hot path over [B, N, V] goes through the kernel backends: Numba and torch give the
    same samples (a hollow denoiser of random logits, V = 27)."""

    class RandomLogits:
        hollow = True

        def __init__(self):
            self.logits = torch.randn(16, 32, 27, generator=torch.Generator().manual_seed(0)) * 3

        def __call__(self, x, t):
            return self.logits

    process = ddkit.build("process", "masked", vocab_size=27)
    runs = []
    for backend in ("numba", "torch"):
        sampler = ddkit.build("sampler", "ancestral", steps=16, backend=backend, corrector={**corrector, "backend": backend})
        runs.append(sampler.sample(RandomLogits(), process, num_samples=16, length=32,
                                   generator=torch.Generator().manual_seed(1)))
    assert torch.equal(runs[0].tokens, runs[1].tokens) and runs[0].nfe == runs[1].nfe > 16


def test_a_pipeline_with_the_informed_corrector_and_a_model_that_is_not_hollow_is_refused_before_training():
    from pipeline_helpers import ROOT, invoke

    result = invoke("config", "validate", ROOT / "pipelines" / "quickstart.yaml",
                    "sampler={name: ancestral, steps: 8, corrector: {name: informed}}")
    assert result.exit_code != 0 and "sampler: the informed corrector needs a hollow denoiser" in result.output
    inside_blocks = invoke("config", "validate", ROOT / "pipelines" / "quickstart.yaml",
                           "sampler={name: semi_ar, block_length: 16, sampler: "
                           "{name: ancestral, steps: 4, corrector: {name: informed}}}")
    assert inside_blocks.exit_code != 0 and "needs a hollow denoiser" in inside_blocks.output
