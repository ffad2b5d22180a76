"""Exact oracles: Markov chain and HMM probabilities, entropies, sampling, and the
posterior-marginal denoiser, each against brute-force enumeration."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ddkit
from ddkit.testing.oracles import (
    HiddenMarkovModel,
    MarkovChain,
    OracleDenoiser,
    all_sequences,
    sequence_ids,
)
from ddkit.testing.stats import empirical_distribution, tv_bound, total_variation

F64 = torch.float64


class UniformNoise(ddkit.Process):
    """A non-absorbing test process defined only by dense matrices (uniform noise):
    Q(s, t) = k I + (1 - k) 11^T / V with k = alpha_t / alpha_s; its posterior depends on t."""

    def __init__(self, vocab_size, schedule="cosine"):
        super().__init__(vocab_size, ddkit.build("schedule", schedule))

    def transition_matrix(self, s, t):
        a_s = self.schedule.alpha(torch.as_tensor(s, dtype=F64))
        a_t = self.schedule.alpha(torch.as_tensor(t, dtype=F64))
        keep = torch.where(a_s > 0, a_t / a_s.clamp_min(1e-300), torch.ones_like(a_t))[..., None, None]
        V = self.vocab_size
        return keep * torch.eye(V, dtype=F64) + (1 - keep) * torch.full((V, V), 1 / V, dtype=F64)

    def rate_matrix(self, t):
        t = torch.as_tensor(t, dtype=F64)
        beta = (-self.schedule.alpha_prime(t) / self.schedule.alpha(t).clamp_min(1e-300))[..., None, None]
        V = self.vocab_size
        return beta * (torch.full((V, V), 1 / V, dtype=F64) - torch.eye(V, dtype=F64))

    def prior_probs(self):
        return torch.full((self.vocab_size,), 1 / self.vocab_size, dtype=F64)


def brute_force_hmm_log_prob(model, x):
    """log sum over every hidden path (independent of the forward algorithm)."""
    H = model.num_hidden
    out = []
    for row in x.tolist():
        total = 0.0
        for path in itertools.product(range(H), repeat=len(row)):
            p = float(model.initial[path[0]] * model.emission[path[0], row[0]])
            for n in range(1, len(row)):
                p *= float(model.transition[path[n - 1], path[n]] * model.emission[path[n], row[n]])
            total += p
        out.append(math.log(total))
    return torch.tensor(out, dtype=F64)


def brute_force_posterior(model, process, x_t, t):
    """p(x0^n = v | x_t) by enumerating every clean sequence x0 (Bayes' rule)."""
    V, N = model.vocab_size, x_t.shape[1]
    seqs, log_p = model.enumerate(N)
    out = torch.zeros(x_t.shape[0], N, V, dtype=F64)
    t = torch.as_tensor(t, dtype=F64)
    for b in range(x_t.shape[0]):
        t_row = t[b] if t.dim() == 2 else t[b].expand(N)
        q = process.marginal_matrix(t_row)  # [N, S, S]
        like = q[torch.arange(N)[None, :], seqs, x_t[b][None, :]].prod(-1)  # [V^N]
        joint = log_p.exp() * like
        for n in range(N):
            out[b, n] = torch.zeros(V, dtype=F64).index_add_(0, seqs[:, n], joint)
        out[b] /= out[b].sum(-1, keepdim=True)
    return out


# -- distributions -----------------------------------------------------------------------------


def test_sequence_ids_enumerate_in_order():
    seqs = all_sequences(3, 4)
    assert seqs.shape == (81, 4)
    assert torch.equal(sequence_ids(seqs, 3), torch.arange(81))
    assert seqs[5].tolist() == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="too many"):
        all_sequences(50, 8)


@pytest.mark.parametrize("V,N", [(2, 1), (3, 5), (4, 4)])
def test_markov_chain_probabilities_and_entropy(V, N):
    chain = MarkovChain(V, seed=V + N, concentration=0.7)
    seqs, log_p = chain.enumerate(N)
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    brute = -(log_p.exp() * log_p).sum()
    assert chain.entropy(N) == pytest.approx(float(brute), abs=1e-10)
    # the chain is an HMM with identity emissions: the forward algorithm agrees with the direct sum
    as_hmm = HiddenMarkovModel.from_matrices(chain.initial, chain.transition, torch.eye(V, dtype=F64))
    torch.testing.assert_close(as_hmm.log_prob(seqs), log_p, rtol=0, atol=1e-12)
    torch.testing.assert_close(chain.token_marginals(N),
                               torch.stack([torch.zeros(V, dtype=F64).index_add_(0, seqs[:, n], log_p.exp())
                                            for n in range(N)]), rtol=0, atol=1e-12)


def test_entropy_rate_is_the_limit_of_entropy_increments():
    chain = MarkovChain(5, seed=1)
    increment = chain.entropy(201) - chain.entropy(200)
    assert chain.entropy_rate() == pytest.approx(increment, abs=1e-10)
    pi = chain.stationary_distribution()
    torch.testing.assert_close(pi @ chain.transition, pi)


def test_hmm_forward_algorithm_matches_sum_over_hidden_paths():
    hmm = HiddenMarkovModel(3, 4, seed=2, concentration=0.6)
    x = hmm.sample(6, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(hmm.log_prob(x), brute_force_hmm_log_prob(hmm, x), rtol=0, atol=1e-10)
    assert float(hmm.probabilities(4).sum()) == pytest.approx(1.0, abs=1e-12)
    assert hmm.entropy(4) > 0
    with pytest.raises(ValueError, match="too many"):
        hmm.entropy(30)


@pytest.mark.parametrize("model", [MarkovChain(3, seed=4, concentration=0.5),
                                   HiddenMarkovModel(2, 3, seed=5, concentration=0.5)],
                         ids=["markov", "hmm"])
def test_exact_sampling_matches_the_distribution(model):
    """Total variation between 40000 samples and the exact law of 3^4 sequences, within the
    McDiarmid bound (failure probability 1e-6)."""
    n, N = 40_000, 4
    x = model.sample(n, N, torch.Generator().manual_seed(0))
    probs = model.probabilities(N)
    empirical = empirical_distribution(sequence_ids(x, 3), 81)
    assert total_variation(empirical, probs) <= tv_bound(probs, n)


def test_sampling_is_reproducible_and_validates():
    chain = MarkovChain(4, seed=0)
    a = chain.sample(3, 7, torch.Generator().manual_seed(11))
    b = chain.sample(3, 7, torch.Generator().manual_seed(11))
    assert torch.equal(a, b) and a.dtype == torch.long and a.shape == (3, 7)
    with pytest.raises(ValueError, match="tokens must be in"):
        chain.log_prob(torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="rows of transition"):
        MarkovChain.from_matrices(torch.tensor([0.5, 0.5]), torch.tensor([[0.5, 0.6], [0.5, 0.5]]))
    assert repr(chain) == "MarkovChain(vocab_size=4, seed=0)"


def test_point_mass_chain_has_zero_entropy():
    chain = MarkovChain.from_matrices(torch.tensor([0.0, 1.0]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert chain.entropy(6) == 0.0
    assert chain.sample(2, 4, torch.Generator().manual_seed(0)).tolist() == [[1, 0, 1, 0]] * 2


# -- the oracle denoiser -----------------------------------------------------------------------


@pytest.mark.parametrize("model", [MarkovChain(3, seed=7, concentration=0.5),
                                   HiddenMarkovModel(2, 3, seed=8, concentration=0.5)],
                         ids=["markov", "hmm"])
@pytest.mark.parametrize("process", [ddkit.build("process", "masked", vocab_size=3, schedule="cosine"),
                                     UniformNoise(3)], ids=["masked", "uniform"])
def test_oracle_equals_bayes_rule_by_enumeration(model, process):
    gen = torch.Generator().manual_seed(3)
    N = 5
    x0 = model.sample(6, N, gen)
    t_seq = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 1.0], dtype=F64)
    t_tok = torch.rand(6, N, generator=gen, dtype=F64)
    oracle = OracleDenoiser(model, process, time_independent=False)
    for t in (t_seq, t_tok):
        x_t = process.sample_marginal(x0, t, generator=gen)
        logits = oracle(x_t, t)
        assert logits.shape == (6, N, 3)
        torch.testing.assert_close(logits.exp(), brute_force_posterior(model, process, x_t, t),
                                   rtol=0, atol=1e-12)


def test_time_independence_is_detected_from_the_channel():
    chain = MarkovChain(3, seed=0)
    masked = ddkit.build("process", "masked", vocab_size=3, schedule="linear")
    assert OracleDenoiser(chain, masked).time_independent
    assert not OracleDenoiser(chain, UniformNoise(3)).time_independent
    # behind a parameterization without time conditioning the denoiser sees t = 0: a
    # time-independent oracle ignores it
    oracle = OracleDenoiser(chain, masked)
    x_t = torch.tensor([[3, 1, 3, 3]])
    torch.testing.assert_close(oracle(x_t, torch.zeros(1)), oracle(x_t, torch.tensor([0.7])))


def test_time_dependent_oracle_needs_the_true_time():
    chain = MarkovChain(3, seed=0)
    masked = ddkit.build("process", "masked", vocab_size=3, schedule="linear")
    oracle = OracleDenoiser(chain, masked, time_independent=False)
    with pytest.raises(ValueError, match="time_conditioning=True"):
        oracle(torch.tensor([[3, 0]]), torch.zeros(1))  # a mask is impossible at t = 0
    with pytest.raises(ValueError, match="states in 0..3"):
        oracle(torch.tensor([[5, 0]]), torch.ones(1))
    with pytest.raises(ValueError, match="tokens but the process"):
        OracleDenoiser(MarkovChain(4), masked)


def test_oracle_carries_clean_tokens_and_gives_marginals_when_all_masked():
    chain = MarkovChain(4, seed=9)
    process = ddkit.build("process", "masked", vocab_size=4, schedule="cosine")
    oracle = OracleDenoiser(chain, process)
    x_t = torch.tensor([[4, 2, 4, 4, 0]])
    probs = oracle(x_t, torch.tensor([0.5])).exp()
    assert probs[0, 1].tolist() == [0.0, 0.0, 1.0, 0.0]
    all_masked = oracle(torch.full((1, 5), 4), torch.tensor([0.5])).exp()[0]
    torch.testing.assert_close(all_masked, chain.token_marginals(5), rtol=0, atol=1e-12)


@given(st.integers(0, 10_000))
def test_oracle_log_likelihood_of_noisy_sequences_sums_to_one(seed):
    """sum over every x_t of p(x_t) = 1: the forward normalisers are a probability."""
    model = HiddenMarkovModel(2, 2, seed=seed)
    process = ddkit.build("process", "masked", vocab_size=2, schedule="cosine")
    oracle = OracleDenoiser(model, process)
    states = all_sequences(3, 3)  # every x_t over {0, 1, mask}
    t = torch.full((len(states),), 0.4, dtype=F64)
    total = oracle.posterior(states, t).log_likelihood.exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)


def test_oracle_elbo_is_exactly_the_nll():
    """Continuous-time masked NELBO of the oracle, computed exactly: over alpha,
    int_0^1 dalpha / (1 - alpha) sum_patterns (1 - alpha)^k alpha^(N - k) c(pattern)
    = sum_patterns B(N - k + 1, k) c(pattern), with c the masked positions' -log p(x0^n | x_t).
    The bound is tight for the optimal denoiser, so it equals -log p(x0)."""
    chain = MarkovChain(3, seed=12, concentration=0.5)
    process = ddkit.build("process", "masked", vocab_size=3)
    oracle = OracleDenoiser(chain, process)
    x0 = chain.sample(3, 7, torch.Generator().manual_seed(0))
    N = x0.shape[1]
    patterns = torch.tensor(list(itertools.product([0, 1], repeat=N)), dtype=torch.bool)[1:]
    for row in x0:
        x_t = torch.where(patterns, torch.full_like(patterns, 3, dtype=torch.long), row)
        nll = -oracle(x_t, torch.zeros(len(x_t))).gather(-1, row.expand(len(x_t), N)[..., None])[..., 0]
        cost = torch.where(patterns, nll, 0.0).sum(-1)
        k = patterns.sum(-1).double()
        beta = torch.exp(torch.lgamma(N - k + 1) + torch.lgamma(k) - torch.lgamma(torch.tensor(N + 1.0, dtype=F64)))
        assert float((beta * cost).sum()) == pytest.approx(-float(chain.log_prob(row[None])), abs=1e-10)
