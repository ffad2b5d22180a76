r"""Samplers against the truth, with the exact oracle denoiser.

On an enumerable space (V = 3, N = 5: 243 sequences) the law of the samples is compared with
the exact law of the data:

* first-hitting simulates the reverse CTMC exactly, so with the oracle its samples follow the
  data distribution: total variation within the McDiarmid bound and KL within the
  method-of-types bound (:mod:`ddkit.testing.stats`, failure probability 1e-6 each);
* ancestral sampling with T steps has its own exact output law, computed here by pushing
  the distribution over all :math:`S^N = 1024` noisy states through the T reverse steps
  (each step factorises over positions given the current state). Its samples match that
  law within the same bound, and the law approaches the data as T grows: the total
  variation decreases at every doubling of T and halves asymptotically (first-order time
  discretisation error, :math:`\mathrm{TV} \approx c/T`);
* on a larger space (V = 8, N = 32) the mean true NLL of first-hitting samples equals the
  exact entropy within 5 standard errors.
"""

import math

import pytest
import torch

import ddkit
from ddkit.testing import HiddenMarkovModel, MarkovChain, OracleDenoiser
from ddkit.testing.oracles import all_sequences, sequence_ids
from ddkit.testing.stats import (
    empirical_distribution,
    kl_divergence,
    kl_types_bound,
    total_variation,
    tv_bound,
)

V, N, DRAWS = 3, 5, 20_000
F64 = torch.float64
MODELS = {"markov": MarkovChain(V, seed=5, concentration=0.5),
          "hmm": HiddenMarkovModel(2, V, seed=6, concentration=0.5)}


def masked(schedule="cosine"):
    return ddkit.build("process", "masked", vocab_size=V, schedule=schedule)


def sample_law(sampler, model, process, seed=0):
    oracle = OracleDenoiser(model, process)
    result = sampler.sample(oracle, process, num_samples=DRAWS, length=N,
                            generator=torch.Generator().manual_seed(seed))
    return empirical_distribution(sequence_ids(result.tokens, V), V**N), result


def exact_ancestral_law(model, process, steps, grid="uniform"):
    """The exact output distribution of the ancestral sampler with the oracle, over V^N."""
    S = process.num_states
    states = all_sequences(S, N)  # every noisy state, [S^N, N]
    mean = ddkit.build("parameterization", "mean").log_mean(
        OracleDenoiser(model, process), states, torch.zeros(len(states)), process).double().exp()
    times = ddkit.time_grid(steps, grid)
    law = torch.zeros(len(states), dtype=F64)
    law[sequence_ids(torch.full((1, N), process.mask_id), S)] = 1.0  # the all-mask prior
    for i in range(steps):
        t, s = times[i].expand(len(states)), times[i + 1].expand(len(states))
        probs = process.posterior_probs(states, mean, s, t)  # [S^N, N, S]
        if i == steps - 1:  # the last step denoises to data
            probs[..., V:] = 0.0
            probs = probs / probs.sum(-1, keepdim=True)
        step = probs[:, 0]
        for n in range(1, N):  # positions are independent given the current state
            step = (step[:, :, None] * probs[:, n, None, :]).reshape(len(states), -1)
        law = law @ step
    clean = (states < V).all(-1)
    assert float(law[~clean].sum()) < 1e-12
    out = torch.zeros(V**N, dtype=F64)
    out[sequence_ids(states[clean], V)] = law[clean]
    return out


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("schedule", ["cosine", "loglinear"])
def test_first_hitting_with_the_oracle_samples_the_data_distribution(model_name, schedule):
    model, process = MODELS[model_name], masked(schedule)
    truth = model.probabilities(N)
    law, result = sample_law(ddkit.build("sampler", "first_hitting"), model, process)
    assert result.nfe == N
    assert total_variation(law, truth) <= tv_bound(truth, DRAWS)
    assert kl_divergence(law, truth) <= kl_types_bound(V**N, DRAWS)


def test_exact_samples_pass_and_a_wrong_law_fails_the_same_bound():
    """Calibration of the bound: exact draws from the chain pass, draws from another chain
    (or a one-step ancestral sampler) are rejected."""
    model = MODELS["markov"]
    truth = model.probabilities(N)
    exact = model.sample(DRAWS, N, torch.Generator().manual_seed(1))
    law = empirical_distribution(sequence_ids(exact, V), V**N)
    assert total_variation(law, truth) <= tv_bound(truth, DRAWS)
    other = MarkovChain(V, seed=99, concentration=0.5).sample(DRAWS, N, torch.Generator().manual_seed(1))
    assert total_variation(empirical_distribution(sequence_ids(other, V), V**N), truth) > tv_bound(truth, DRAWS)
    one_step, _ = sample_law(ddkit.build("sampler", "ancestral", steps=1), model, masked())
    assert total_variation(one_step, truth) > tv_bound(truth, DRAWS)


@pytest.mark.parametrize("steps,grid", [(1, "uniform"), (4, "uniform"), (4, "cosine"), (16, "uniform")])
def test_ancestral_samples_follow_their_exact_t_step_law(steps, grid):
    model, process = MODELS["markov"], masked()
    exact = exact_ancestral_law(model, process, steps, grid)
    law, result = sample_law(ddkit.build("sampler", "ancestral", steps=steps, grid=grid), model, process)
    assert result.nfe <= steps
    assert total_variation(law, exact) <= tv_bound(exact, DRAWS)
    assert kl_divergence(law, exact) <= kl_types_bound(V**N, DRAWS)


def test_ancestral_law_approaches_the_data_as_steps_grow():
    model, process = MODELS["markov"], masked()
    truth = model.probabilities(N)
    tv = {T: total_variation(exact_ancestral_law(model, process, T), truth) for T in (1, 2, 4, 8, 16)}
    assert all(tv[T] > tv[2 * T] for T in (1, 2, 4, 8))
    # first-order discretisation error: TV ~ c / T, so doubling T halves it asymptotically
    assert 1.8 < tv[8] / tv[16] < 2.2
    assert kl_divergence(truth, exact_ancestral_law(model, process, 16)) < kl_divergence(
        truth, exact_ancestral_law(model, process, 4))


def test_first_hitting_sample_nll_matches_the_entropy_on_a_larger_space():
    """V = 8, N = 32 (8^32 sequences): the mean true NLL of the samples estimates the entropy
    (exact for a Markov chain) within 5 standard errors."""
    chain = MarkovChain(8, seed=7, concentration=0.3)
    process = ddkit.build("process", "masked", vocab_size=8, schedule="cosine")
    result = ddkit.build("sampler", "first_hitting").sample(
        OracleDenoiser(chain, process), process, num_samples=1000, length=32,
        generator=torch.Generator().manual_seed(0))
    nll = -chain.log_prob(result.tokens)
    se = float(nll.std()) / math.sqrt(len(nll))
    assert abs(float(nll.mean()) - chain.entropy(32)) <= 5 * se
