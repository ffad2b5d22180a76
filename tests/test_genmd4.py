r"""GenMD4: vector-valued (per-token) schedules, the GenMD4 loss and sampling with them.

* the ``learnable_polynomial`` schedule and the masked process with it pass the conformance
  kit with unequal exponents (dense matrices, Bayes posterior, continuous integrand = limit of
  the discrete KL, score forms); with equal exponents every quantity equals the scalar
  polynomial schedule's (MD4);
* the exact oracle handles the token-dependent channel (brute-force posterior), and with it
  the GenMD4 NELBO equals the exact NLL of each sequence within Monte-Carlo error for fixed
  unequal exponents (the oracle of MD4's channel is visibly loose);
* the leave-one-out REINFORCE gradient of the exponents is unbiased: its mean matches a
  finite-difference gradient of the exact expected loss (enumerated over every mask
  pattern) within 5 standard errors, where the pathwise gradient alone is off by hundreds;
* the reported nats are the NELBO, never the surrogate; two-sample averaging for MD4;
* ancestral sampling with the per-token posterior: samples follow its exact T-step law, which
  converges to the data (scalar coefficients do not); first hitting refuses;
* ``pipelines/genmd4.yaml`` trains, logs the exponents and restores them from the checkpoint.
"""

import json
import math

import pytest
import torch

import ddkit
from ddkit.testing import MarkovChain, OracleDenoiser, check_process, check_sampler, check_schedule
from ddkit.testing.oracles import all_sequences, sequence_ids
from ddkit.testing.sampler_checks import ContextDenoiser
from ddkit.testing.stats import empirical_distribution, total_variation, tv_bound
from pipeline_helpers import ROOT, TINY, invoke

F64 = torch.float64
TIMED = {"name": "mean", "time_conditioning": True}


def set_exponents(schedule, exponents):
    with torch.no_grad():
        w = torch.as_tensor(exponents, dtype=F64)
        schedule.raw_exponents.copy_(w + torch.log(-torch.expm1(-w)))  # softplus^-1


def vector_process(exponents, *, trainable=True, eps=0.0):
    process = ddkit.build("process", "masked", vocab_size=len(exponents),
                         schedule={"name": "learnable_polynomial", "eps": eps})
    set_exponents(process.schedule, exponents)
    process.schedule.requires_grad_(trainable)
    return process


# -- the schedule ------------------------------------------------------------------------------


def test_schedule_formula_initialisation_and_metrics():
    schedule = ddkit.build("schedule", "learnable_polynomial", vocab_size=3, eps=1e-4)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    # initialised at the linear schedule, one column per token
    torch.testing.assert_close(schedule.alpha(t), (1 - (1 - 1e-4) * t)[:, None].expand(3, 3))
    set_exponents(schedule, [0.5, 1.0, 4.0])
    w = schedule.exponents.detach()
    expected = 1 - (1 - 1e-4) * t[:, None] ** w
    torch.testing.assert_close(schedule.alpha(t), expected, rtol=0, atol=1e-15)
    assert schedule.endpoints() == pytest.approx((1.0, 1e-4), rel=1e-12)
    assert schedule.metrics() == pytest.approx({"exponent_min": 0.5, "exponent_mean": 5.5 / 3, "exponent_max": 4.0})
    # weight -alpha'/(1 - alpha) = w / t, eps cancels
    weight = -schedule.alpha_prime(t[1:2]) / schedule.one_minus_alpha(t[1:2])
    torch.testing.assert_close(weight[0], w / 0.3)


def test_one_minus_alpha_keeps_its_digits_where_alpha_rounds_to_one():
    schedule = ddkit.build("schedule", "learnable_polynomial", vocab_size=2)
    set_exponents(schedule, [1.0, 8.0])
    t = torch.tensor([1e-3], dtype=F64)
    exact = torch.tensor([1e-3, 1e-24], dtype=F64)
    torch.testing.assert_close(schedule.one_minus_alpha(t)[0], exact, rtol=1e-12, atol=0)
    assert float(1 - schedule.alpha(t).detach()[0, 1]) == 0.0  # the naive form has lost everything


def test_schedule_conformance_with_unequal_exponents():
    schedule = ddkit.build("schedule", "learnable_polynomial", vocab_size=4, eps=1e-4)
    set_exponents(schedule, [0.3, 0.9, 1.7, 2.6])
    check_schedule(schedule)


def test_vector_schedule_errors():
    with pytest.raises(ValueError, match="needs vocab_size"):
        ddkit.build("schedule", "learnable_polynomial")
    with pytest.raises(ValueError, match="4 tokens but the process has vocab_size 3"):
        ddkit.build("process", "masked", vocab_size=3, schedule={"name": "learnable_polynomial", "vocab_size": 4})
    with pytest.raises(ValueError, match="UniformProcess needs a schedule with one alpha per time"):
        ddkit.build("process", "uniform", vocab_size=3,
                    schedule=ddkit.build("schedule", "learnable_polynomial", vocab_size=3))


# -- the masked process with a vector schedule ------------------------------------------------------


def test_masked_process_conformance_with_unequal_exponents():
    check_process(vector_process([0.4, 1.0, 1.9, 3.2]))
    check_process(vector_process([0.7, 2.5, 1.2], eps=1e-3))


def test_forward_noise_masks_each_token_at_its_own_rate():
    process = vector_process([0.5, 1.0, 3.0], trainable=False)
    x0 = torch.tensor([0, 1, 2]).expand(40000, 3)
    x_t = process.sample_marginal(x0, torch.full((40000,), 0.5, dtype=F64), generator=torch.Generator().manual_seed(0))
    masked = (x_t == process.mask_id).double().mean(0)
    expected = torch.tensor([0.5**0.5, 0.5, 0.5**3], dtype=F64)
    assert float((masked - expected).abs().max()) < 0.015  # ~6 standard errors at p = 0.5


def test_equal_exponents_give_the_scalar_schedule():
    V, w = 4, 1.7
    vector = vector_process([w] * V, trainable=False)
    scalar = ddkit.build("process", "masked", vocab_size=V, schedule={"name": "polynomial", "exponent": w})
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (6, 5), generator=gen)
    t = torch.rand(6, generator=gen, dtype=F64) * 0.9 + 0.05
    s = t * torch.rand(6, generator=gen, dtype=F64)
    x_t = torch.where(torch.rand(6, 5, generator=gen) < 0.5, V, x0)
    log_mean = torch.log_softmax(torch.randn(6, 5, V, generator=gen, dtype=F64), -1)
    mean = log_mean.exp()
    for name, args in [("continuous_elbo", (x0, x_t, log_mean, t)), ("discrete_elbo", (x0, x_t, log_mean, s, t)),
                       ("posterior_probs", (x_t, mean, s, t)), ("marginal_probs", (x0, t)),
                       ("score_from_mean", (x_t, mean, t))]:
        torch.testing.assert_close(getattr(vector, name)(*args), getattr(scalar, name)(*args), rtol=1e-12,
                                   atol=1e-12, msg=name)


# -- the exact oracle for the token-dependent channel -------------------------------------------------


def test_oracle_posterior_for_the_token_dependent_channel_by_brute_force():
    V, N = 3, 3
    chain = MarkovChain(V, seed=2, concentration=0.7)
    process = vector_process([0.5, 1.4, 3.0], trainable=False)
    oracle = OracleDenoiser(chain, process)
    assert not oracle.time_independent  # the masking rates differ per token: p(x0 | x_t) depends on t
    sequences, log_probs = chain.enumerate(N)
    x_t = torch.tensor([[V, 1, V], [V, V, V], [0, V, 2]])
    t = torch.tensor([0.3, 0.6, 0.8], dtype=F64)
    channel = torch.stack([process.marginal_probs(sequences, t[b].expand(len(sequences)))
                           .gather(-1, x_t[b].expand(len(sequences), -1)[..., None]).squeeze(-1).prod(-1)
                           for b in range(3)])  # [3, V^N]: q(x_t | x0) of every sequence
    joint = channel * log_probs.exp()
    expected = torch.stack([torch.stack([(joint[b, None] * torch.nn.functional.one_hot(sequences[:, n], V).T).sum(-1)
                                         for n in range(N)]) for b in range(3)])
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(oracle(x_t, t).exp(), expected, rtol=0, atol=1e-12)


# -- the loss --------------------------------------------------------------------------------------


def test_nelbo_with_the_exact_denoiser_is_the_exact_nll_of_each_sequence():
    """For fixed unequal exponents the GenMD4 NELBO of the exact denoiser is tight:
    E_{t, x_t}[NELBO(x)] = -log p(x) for every x. Error budget: 5 standard errors of the mean
    (60,000 time draws per sequence) plus 5e-3 for the piece below t_1 = 1e-4 (the
    reconstruction guess vs the omitted integral, each O(N t_1 log V))."""
    V, N, draws = 3, 4, 60_000
    chain = MarkovChain(V, seed=3, concentration=0.5)
    process = vector_process([1.0, 1.8, 3.0], trainable=False)
    loss = ddkit.build("loss", "genmd4", process=process, parameterization=TIMED, t_min=1e-4, samples=2)
    oracle = OracleDenoiser(chain, process)
    sequences, log_probs = chain.enumerate(N)
    order = torch.argsort(log_probs, descending=True)
    picked = sequences[order[[0, len(order) // 4, len(order) // 2]]]  # likely, middling and rare
    gen = torch.Generator().manual_seed(1)
    estimates = []
    with torch.no_grad():
        for _ in range(5):
            out = loss(oracle, picked.repeat(draws // 5, 1), generator=gen)
            estimates.append(out.nats.sum(-1).reshape(-1, len(picked)))
    estimates = torch.cat(estimates).double()
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(len(estimates))
    nll = -chain.log_prob(picked)
    assert bool(((mean - nll).abs() <= 5 * se + 5e-3).all()), (mean, nll, se)


def test_nelbo_over_the_data_is_the_entropy_and_the_scalar_channel_oracle_is_loose():
    V, N, draws = 3, 4, 20_000
    chain = MarkovChain(V, seed=3, concentration=0.5)
    process = vector_process([1.0, 1.8, 3.0], trainable=False)
    entropy = chain.entropy(N)
    gen = torch.Generator().manual_seed(2)
    x = chain.sample(draws, N, gen)
    results = {}
    md4_channel = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
    for name, oracle_process, parameterization in [("exact", process, TIMED), ("md4 channel", md4_channel, "mean")]:
        loss = ddkit.build("loss", "genmd4", process=process, parameterization=parameterization, t_min=1e-4)
        with torch.no_grad():
            total = loss(OracleDenoiser(chain, oracle_process), x, generator=gen).nats.sum(-1).double()
        results[name] = (float(total.mean()), float(total.std()) / math.sqrt(draws))
    mean, se = results["exact"]
    assert abs(mean - entropy) <= 5 * se + 5e-3, (results, entropy)
    mean, se = results["md4 channel"]
    assert mean - entropy > 10 * se  # the denoiser must be exact for the token-dependent channel


def test_equal_exponents_give_md4s_loss():
    """With equal exponents the GenMD4 loss is the scalar polynomial schedule's (MD4), draw for
    draw; and with one draw it is the continuous ELBO plus the reconstruction term."""
    V, w = 5, 1.3
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (16, 12), generator=gen)
    network = torch.nn.Linear(V + 1, V).double()

    def denoiser(x_t, t):
        return network(torch.nn.functional.one_hot(x_t, V + 1).double())

    vector = vector_process([w] * V, trainable=False)
    scalar = ddkit.build("process", "masked", vocab_size=V, schedule={"name": "polynomial", "exponent": w})
    losses = [ddkit.build("loss", "genmd4", process=p, t_min=1e-3, samples=2) for p in (vector, scalar)]
    outs = [loss(denoiser, x0, generator=torch.Generator().manual_seed(5)) for loss in losses]
    torch.testing.assert_close(outs[0].nats, outs[1].nats, rtol=1e-6, atol=1e-6)
    one_draw = ddkit.build("loss", "genmd4", process=scalar, t_min=1e-3, samples=1)
    md4 = ddkit.build("loss", "continuous_elbo", process=scalar, t_min=1e-3)
    out = one_draw(denoiser, x0, generator=torch.Generator().manual_seed(7))
    reference = md4(denoiser, x0, generator=torch.Generator().manual_seed(7))
    recon = 1e-3**w * math.log(V)  # P(masked at t_1) times -log(1/V)
    # the same draws: the difference is the reconstruction term (up to float32 rounding of the nats)
    torch.testing.assert_close(out.nats - reference.nats, torch.full_like(out.nats, recon), rtol=0, atol=1e-6)


def test_two_draws_average_the_integrand_of_two_independent_noisings():
    V = 4
    process = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
    loss = ddkit.build("loss", "genmd4", process=process, t_min=1e-3, samples=2)
    x0 = torch.randint(0, V, (8, 10), generator=torch.Generator().manual_seed(0))
    denoiser = ContextDenoiser(process, dtype=F64)
    t = torch.linspace(0.1, 0.9, 8, dtype=F64)
    out = loss.at_times(denoiser, x0, t, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    x_t = process.sample_marginal(x0.repeat(2, 1), t.repeat(2), generator=gen)
    parameterization = ddkit.build("parameterization", "mean")
    integrand = (1 - 1e-3) * process.continuous_elbo(
        x0.repeat(2, 1), x_t, parameterization.log_mean(denoiser, x_t, t.repeat(2), process), t.repeat(2))
    expected = (integrand[:8] + integrand[8:]) / 2 + 1e-3 * math.log(V)
    torch.testing.assert_close(out.nats, expected.float())
    assert not torch.equal(x_t[:8], x_t[8:])  # two different noisings


def test_reported_nats_are_the_nelbo_not_the_surrogate():
    process = vector_process([0.6, 1.3, 2.5])
    loss = ddkit.build("loss", "genmd4", process=process, parameterization=TIMED)
    denoiser = ContextDenoiser(process)
    x0 = torch.randint(0, 3, (32, 8), generator=torch.Generator().manual_seed(0))
    with_grad = loss(denoiser, x0, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        without = loss(denoiser, x0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(with_grad.nats.detach(), without.nats)
    with_grad.loss.backward()  # the REINFORCE term reaches the exponents
    assert process.schedule.raw_exponents.grad is not None
    assert bool(torch.isfinite(process.schedule.raw_exponents.grad).all())


def test_loss_errors():
    with pytest.raises(ValueError, match="needs samples >= 2"):
        ddkit.build("loss", "genmd4", process=vector_process([1.0, 2.0]), samples=1)
    ddkit.build("loss", "genmd4", process=vector_process([1.0, 2.0], trainable=False), samples=1)  # fixed: fine
    with pytest.raises(ValueError, match="needs the masked"):
        ddkit.build("loss", "genmd4", process=ddkit.build("process", "uniform", vocab_size=3))


def _exact_expected_loss(loss, denoiser, x0, t):
    r""":math:`\sum_z q(z \mid x_0, t) L(z) + \text{reconstruction}` over every mask pattern
    ``z`` of one sequence, in float64."""
    process, N = loss.process, x0.shape[1]
    patterns = torch.tensor([[(i >> n) & 1 for n in range(N)] for i in range(2**N)], dtype=torch.bool)
    x_t = torch.where(patterns, process.mask_id, x0.expand(2**N, -1))
    times = torch.full((2**N,), t, dtype=F64)
    clean = x0.expand(2**N, -1)
    log_q = loss.log_marginal(clean, x_t, times).sum(-1)
    log_mean = torch.log_softmax(torch.as_tensor(denoiser(x_t, times)).double(), -1)
    integrand = (1 - loss.t_min) * process.continuous_elbo(clean, x_t, log_mean, times).sum(-1)
    return (log_q.exp() * integrand).sum() + loss.reconstruction(x0).sum()


@pytest.mark.parametrize("samples", [2, 3])
def test_reinforce_gradient_is_unbiased(samples):
    """The mean of the loss's gradient in the raw exponents matches the central finite
    difference (h = 1e-5) of the exact expected loss at a fixed (x_0, t), within 5 standard
    errors (40 groups of 4000 sequences); the pathwise gradient alone is far off."""
    V, N, t = 3, 3, 0.4
    process = vector_process([0.6, 1.3, 2.5])
    denoiser = ContextDenoiser(process, dtype=F64)  # fixed: independent of the exponents
    loss = ddkit.build("loss", "genmd4", process=process, parameterization=TIMED, t_min=0.01, samples=samples)
    x0 = torch.tensor([[0, 2, 1]])
    raw = process.schedule.raw_exponents
    finite_difference = torch.empty(V, dtype=F64)
    with torch.no_grad():
        for i in range(V):
            raw[i] += 1e-5
            plus = float(_exact_expected_loss(loss, denoiser, x0, t))
            raw[i] -= 2e-5
            minus = float(_exact_expected_loss(loss, denoiser, x0, t))
            raw[i] += 1e-5
            finite_difference[i] = (plus - minus) / 2e-5
    groups, rows = 40, 4000
    gen = torch.Generator().manual_seed(0)
    x0_rows, t_rows = x0.expand(rows, -1), torch.full((rows,), t, dtype=F64)
    estimates, pathwise = [], []
    for _ in range(groups):
        raw.grad = None
        loss.at_times(denoiser, x0_rows, t_rows, generator=gen).loss.backward()
        estimates.append(raw.grad * N)  # .loss is per token: times N for the per-sequence loss
        raw.grad = None  # the pathwise gradient alone: x_t drawn without the score term
        x_t = process.sample_marginal(x0_rows, t_rows, generator=gen)
        log_mean = torch.log_softmax(denoiser(x_t, t_rows), -1)
        total = (1 - loss.t_min) * process.continuous_elbo(x0_rows, x_t, log_mean, t_rows).sum(-1).mean()
        (total + loss.reconstruction(x0).sum()).backward()
        pathwise.append(raw.grad.clone())
    estimates, pathwise = torch.stack(estimates), torch.stack(pathwise)
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(groups)
    assert bool(((mean - finite_difference).abs() <= 5 * se).all()), (mean, finite_difference, se)
    path_mean, path_se = pathwise.mean(0), pathwise.std(0) / math.sqrt(groups)
    assert float(((path_mean - finite_difference).abs() / path_se).max()) > 50


# -- sampling ------------------------------------------------------------------------------------


def _exact_ancestral_law(chain, process, posterior_process, steps, N):
    """The exact output law over V^N of ancestral sampling with the time-conditioned oracle,
    each step drawn from ``posterior_process.posterior_probs`` (pushed through every noisy
    state that has mass)."""
    V, S = process.vocab_size, process.num_states
    oracle = OracleDenoiser(chain, process)
    states = all_sequences(S, N)
    times = ddkit.time_grid(steps)
    law = torch.zeros(len(states), dtype=F64)
    law[sequence_ids(torch.full((1, N), process.mask_id), S)] = 1.0
    for i in range(steps):
        live = law > 0
        x = states[live]
        t, s = times[i].expand(len(x)), times[i + 1].expand(len(x))
        probs = posterior_process.posterior_probs(x, oracle(x, t).exp(), s, t)
        if i == steps - 1:
            probs[..., V:] = 0.0
            probs = probs / probs.sum(-1, keepdim=True)
        step = probs[:, 0]
        for n in range(1, N):
            step = (step[:, :, None] * probs[:, n, None, :]).reshape(len(x), -1)
        law = law[live] @ step
    clean = (states < V).all(-1)
    out = torch.zeros(V**N, dtype=F64)
    out[sequence_ids(states[clean], V)] = law[clean]
    return out


def test_ancestral_with_per_token_coefficients_converges_to_the_data():
    """The exact T-step law of the per-token posterior approaches the data as T grows (TV
    about halves per doubling); the scalar coefficients of the linear schedule with the same
    exact denoiser stay far off."""
    V, N = 3, 4
    chain = MarkovChain(V, seed=3, concentration=0.5)
    process = vector_process([0.5, 1.0, 3.0], trainable=False)
    scalar = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
    data = chain.probabilities(N)
    tv = [total_variation(_exact_ancestral_law(chain, process, process, T, N), data) for T in (4, 8, 16, 64)]
    assert all(b < 0.7 * a for a, b in zip(tv, tv[1:])), tv
    assert tv[-1] < 0.01
    wrong = total_variation(_exact_ancestral_law(chain, process, scalar, 64, N), data)
    assert wrong > 0.3, wrong


def test_ancestral_samples_follow_the_exact_law():
    V, N, T, draws = 3, 4, 8, 20_000
    chain = MarkovChain(V, seed=3, concentration=0.5)
    process = vector_process([0.5, 1.0, 3.0], trainable=False)
    sampler = ddkit.build("sampler", "ancestral", steps=T, parameterization=TIMED)
    result = sampler.sample(OracleDenoiser(chain, process), process, num_samples=draws, length=N,
                            generator=torch.Generator().manual_seed(0))
    exact = _exact_ancestral_law(chain, process, process, T, N)
    empirical = empirical_distribution(sequence_ids(result.tokens, V), V**N)
    assert total_variation(empirical, exact) <= tv_bound(exact, draws)


@pytest.mark.parametrize("name, params", [
    ("ancestral", {"steps": 8, "parameterization": TIMED}),
    ("ancestral", {"steps": 6}),
    ("euler", {"steps": 8, "parameterization": TIMED}),
    ("analytic", {"steps": 8, "parameterization": TIMED}),
])
def test_sampler_conformance_with_a_vector_schedule(name, params):
    check_sampler(ddkit.build("sampler", name, **params), vector_process([0.5, 1.0, 2.0, 3.0], trainable=False))


def test_first_hitting_refuses_a_vector_schedule():
    process = vector_process([0.5, 2.0], trainable=False)
    with pytest.raises(ValueError, match="first_hitting is not defined for a vector schedule .LearnablePolynomialSchedule"):
        ddkit.build("sampler", "first_hitting").sample(lambda x, t: torch.zeros(*x.shape, 2), process,
                                                        num_samples=2, length=3)


def test_euler_with_the_score_parameterization_takes_a_vector_schedule():
    process = ddkit.build("process", "masked", vocab_size=3, schedule={"name": "learnable_polynomial", "eps": 1e-3})
    sampler = ddkit.build("sampler", "euler", steps=4, parameterization={"name": "score", "time_conditioning": True})
    sampler.sample(lambda x, t: torch.zeros(*x.shape, 3), process, num_samples=2, length=3)


# -- the pipeline --------------------------------------------------------------------------------


def test_genmd4_pipeline_trains_logs_the_exponents_and_restores_them(tmp_path):
    from ddkit.contrib.checkpoint import load_checkpoint
    from ddkit.contrib.runner import load_run

    out = tmp_path / "genmd4"
    result = invoke("run", ROOT / "pipelines" / "genmd4.yaml", *TINY, "train.lr=0.05", "--out", out)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert train and all(r["schedule_exponent_min"] <= r["schedule_exponent_mean"] <= r["schedule_exponent_max"]
                         for r in train)
    assert train[-1]["schedule_exponent_max"] > train[-1]["schedule_exponent_min"]  # they moved apart from 1
    pipeline, _ = load_run(out)
    learned = load_checkpoint(out).group("loss")["schedule.raw_exponents"]
    assert torch.equal(pipeline.process.schedule.raw_exponents.detach(), learned)
    assert not torch.allclose(pipeline.process.schedule.exponents, torch.ones_like(learned))


def test_genmd4_pipeline_validates_as_genmd4_and_as_md4():
    for extra in ([], ["process.schedule=linear"]):
        result = invoke("config", "validate", ROOT / "pipelines" / "genmd4.yaml", *extra)
        assert result.exit_code == 0, result.output
