"""FlexMDM (variable length): the insertion process against its definition (gap counts,
endpoints, the Binomial length law by a chi-square test, the fate probabilities), the
Poisson-Bregman divergence, the exact oracle of the END-state Markov chain against brute-force
enumeration, the samplers against their exact T-step law and the data law (TV within the
sampling floor), maximum-length handling, the flex_dit model, the loss, the data sets, the
length report and the pipeline end to end."""

import itertools
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddkit
from ddkit.contrib.lengths import length_report, malformed, sample_lengths, wasserstein1
from ddkit.plugins.losses.flexmdm import poisson_bregman
from ddkit.plugins.samplers.flexmdm import insert_masks
from ddkit.testing.insertion_oracles import EndMarkovChain, InsertionOracle
from ddkit.testing.oracles import sequence_ids
from ddkit.testing.stats import DEFAULT_DELTA, empirical_distribution, total_variation, tv_bound

from pipeline_helpers import ROOT, invoke

F64 = torch.float64
V, K = 2, 4  # tokens and maximum length of the oracle chain: 1 + 3 + ... + 3^4 = 121 states
PAD, MASK = V, V + 1
DRAWS = 20000
CHAIN = EndMarkovChain(V, K, seed=3, concentration=1.0, end_probability=0.3)


def insertion(**kwargs):
    return ddkit.build("process", "insertion", **{"vocab_size": V + 1, **kwargs})


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_data(batch, width, vocab, seed):
    """Padded sequences (pad = vocab - 1) of random lengths 0..width."""
    g = gen(seed)
    lengths = torch.randint(0, width + 1, (batch,), generator=g)
    tokens = torch.randint(0, vocab - 1, (batch, width), generator=g)
    return torch.where(torch.arange(width) < lengths[:, None], tokens, vocab - 1), lengths


# -- the forward process ------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.floats(0.0, 1.0), width=st.integers(1, 12),
       schedules=st.sampled_from([("linear", "linear"), ("cosine", "linear"), ("linear", "cosine")]))
def test_sample_is_the_compaction_with_gap_counts(seed, t, width, schedules):
    process = ddkit.build("process", "insertion", vocab_size=5, insertion=schedules[0], unmasking=schedules[1])
    x0, L = random_data(16, width, 5, seed)
    out = process.sample(x0, torch.full((16,), t, dtype=F64), generator=gen(seed))
    assert torch.equal(out.gaps.sum(-1), L - out.lengths)  # the gaps hold exactly the absent tokens
    slots = torch.arange(width + 1)
    assert bool((out.gaps[slots > out.lengths[:, None]] == 0).all())
    assert torch.equal(process.lengths(out.x_t), out.lengths)  # padding after the tokens only
    for b in range(16):
        m = int(out.lengths[b])
        source = out.source[b, :m]
        assert bool((source[1:] > source[:-1]).all()) and bool((out.source[b, m:] == -1).all())  # order kept
        tokens = out.x_t[b, :m]
        clean = tokens != process.mask_id
        assert torch.equal(tokens[clean], x0[b, source[clean]])  # clean tokens are the data's
        # the gap before present token j is the number of positions skipped since the previous one
        edges = torch.cat([torch.tensor([-1]), source, torch.tensor([int(L[b])])])
        assert torch.equal(out.gaps[b, :m + 1], edges[1:] - edges[:-1] - 1)


def test_endpoints_data_at_t0_and_empty_at_t1():
    process = insertion(insertion="cosine")
    x0, L = random_data(64, 10, V + 1, 1)
    at0 = process.sample(x0, torch.zeros(64, dtype=F64), generator=gen())
    assert torch.equal(at0.x_t, x0) and bool((at0.gaps == 0).all())
    at1 = process.sample(x0, torch.ones(64, dtype=F64), generator=gen())
    assert bool((at1.x_t == PAD).all()) and torch.equal(at1.gaps[:, 0], L) and bool((at1.gaps[:, 1:] == 0).all())


def chi_square_p_value(counts, expected):
    """Upper tail of the chi-square statistic (bins with an expected count below 5 merged
    into their neighbour), by the regularised incomplete gamma function."""
    merged_c, merged_e, c, e = [], [], 0.0, 0.0
    for ci, ei in zip(counts.tolist(), expected.tolist()):
        c, e = c + ci, e + ei
        if e >= 5:
            merged_c.append(c)
            merged_e.append(e)
            c, e = 0.0, 0.0
    merged_c[-1] += c
    merged_e[-1] += e
    oc, ex = torch.tensor(merged_c, dtype=F64), torch.tensor(merged_e, dtype=F64)
    stat = float(((oc - ex) ** 2 / ex).sum())
    dof = len(merged_c) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=F64), torch.tensor(stat / 2, dtype=F64)))


def binomial_pmf(n, p):
    k = torch.arange(n + 1, dtype=F64)
    log_c = torch.lgamma(torch.tensor(n + 1.0, dtype=F64)) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    return torch.exp(log_c + k * math.log(p) + (n - k) * math.log1p(-p))


@pytest.mark.parametrize("t", [0.2, 0.55, 0.9])
def test_length_of_x_t_is_binomial_with_linear_schedules(t):
    """ddkit time: |x_t| ~ Binomial(|x_0|, 1 - t) (FlexMDM's Binomial(|x_0|, tau), tau = 1 - t).
    Seeded; a correct process fails with probability 1e-6."""
    L, n = 12, 20000
    x0 = torch.zeros(n, 16, dtype=torch.long).masked_fill(torch.arange(16) >= L, PAD)
    process = insertion()
    lengths = process.sample(x0, torch.full((n,), t, dtype=F64), generator=gen(7)).lengths
    counts = torch.bincount(lengths, minlength=L + 1).to(F64)
    assert chi_square_p_value(counts, n * binomial_pmf(L, 1 - t)) > DEFAULT_DELTA
    # the same test rejects the cosine insertion schedule, whose law is Binomial(L, 1 - sin(pi t / 2))
    other = insertion(insertion="cosine").sample(x0, torch.full((n,), t, dtype=F64), generator=gen(7)).lengths
    other_counts = torch.bincount(other, minlength=L + 1).to(F64)
    assert chi_square_p_value(other_counts, n * binomial_pmf(L, 1 - t)) < DEFAULT_DELTA


@pytest.mark.parametrize("schedules", [("linear", "linear"), ("cosine", "linear"), ("linear", "cosine")])
def test_fate_probabilities_match_the_draws(schedules):
    process = ddkit.build("process", "insertion", vocab_size=3, insertion=schedules[0], unmasking=schedules[1])
    n, t = 40000, 0.35
    x0 = torch.zeros(n, 1, dtype=torch.long)
    out = process.sample(x0, torch.full((n,), t, dtype=F64), generator=gen(2))
    fates = torch.stack([out.lengths == 0, out.x_t[:, 0] == process.mask_id, out.x_t[:, 0] == 0], -1).to(F64).mean(0)
    probs = process.fate_probs(torch.tensor(t, dtype=F64))
    assert total_variation(fates, probs) < tv_bound(probs, n)
    if schedules == ("linear", "linear"):  # P(clean) = 1 - t + t log t
        assert float(probs[2]) == pytest.approx(1 - t + t * math.log(t), abs=1e-10)


def test_the_insertion_process_is_not_a_per_token_process():
    process = insertion()
    assert "insertion" in process.capabilities and process.mask_id == V + 1 and process.pad_id == V
    with pytest.raises(AttributeError, match="not factorised over positions"):
        process.continuous_elbo
    with pytest.raises(ValueError, match="no per-position posterior"):
        process.posterior_probs(None, None, None, None)
    with pytest.raises(ValueError, match="padding .* before a token"):
        process.lengths(torch.tensor([[0, PAD, 1]]))
    with pytest.raises(ValueError, match="alpha_0 = 1 and alpha_1 = 0"):
        insertion(insertion={"name": "geometric"})
    with pytest.raises(ValueError, match="needs the insertion process"):
        ddkit.build("loss", "flexmdm", process=ddkit.build("process", "masked", vocab_size=3))
    with pytest.raises(ValueError, match="needs a process with \\['insertion'\\]"):
        ddkit.build("sampler", "flexmdm_euler").sample(InsertionOracle(CHAIN, insertion().insertion),
                                                        ddkit.build("process", "masked", vocab_size=3),
                                                        num_samples=1, length=4)


# -- the Bregman divergence ---------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(g=st.integers(0, 50), g_hat=st.floats(1e-6, 60.0))
def test_bregman_divergence_is_nonnegative_and_zero_at_the_truth(g, g_hat):
    d = float(poisson_bregman(torch.tensor(float(g)), torch.tensor(g_hat)))
    assert d >= -1e-12
    assert float(poisson_bregman(torch.tensor(float(g)), torch.tensor(float(g)))) == pytest.approx(0.0, abs=1e-12)
    if abs(g_hat - g) > 1e-3:
        assert d > 0


def test_expected_bregman_divergence_is_smallest_at_the_mean():
    g = torch.tensor([0.0, 1.0, 2.0, 5.0], dtype=F64)
    p = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64)
    grid = torch.linspace(0.05, 4.0, 4000, dtype=F64)
    expected = (p[:, None] * poisson_bregman(g[:, None], grid[None, :])).sum(0)
    assert float(grid[expected.argmin()]) == pytest.approx(float((p * g).sum()), abs=1e-3)


# -- the exact oracle of the END chain ------------------------------------------------------

def chain_prob(seq):
    p = float(CHAIN.initial[seq[0]])
    for a, b in zip(seq, seq[1:]):
        p *= float(CHAIN.transition[a, b])
    return p * (float(CHAIN.transition[seq[-1], V]) if len(seq) < K else 1.0)


def brute_force_posterior(x_t, rho):
    """E[g_j | x_t] and the token posteriors at x_t's positions by enumerating every x_0 and
    every order-preserving placement of x_t's tokens in it."""
    m = len(x_t)
    Z, gaps, tokens = 0.0, [0.0] * (m + 1), [[0.0] * V for _ in range(m)]
    for L in range(1, K + 1):
        for seq in itertools.product(range(V), repeat=L):
            for present in itertools.combinations(range(L), m):
                if any(x_t[j] != MASK and x_t[j] != seq[present[j]] for j in range(m)):
                    continue
                w = chain_prob(seq) * rho ** (L - m)
                Z += w
                edges = [-1, *present, L]
                for j in range(m + 1):
                    gaps[j] += w * (edges[j + 1] - edges[j] - 1)
                for j in range(m):
                    tokens[j][seq[present[j]]] += w
    return [g / Z for g in gaps], [[v / sum(row) for v in row] for row in tokens]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_oracle_equals_brute_force_enumeration(schedule):
    sched = ddkit.build("schedule", schedule)
    oracle = InsertionOracle(CHAIN, sched)
    cases = [((), 0.7), ((MASK,), 0.5), ((0, MASK), 0.3), ((MASK, 1, MASK), 0.9), ((1, 0, 0, MASK), 0.2),
             ((MASK, MASK), 0.05), ((1,), 0.99)]
    x = torch.full((len(cases), K), PAD)
    for b, (seq, _) in enumerate(cases):
        x[b, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    lengths = torch.tensor([len(seq) for seq, _ in cases])
    t = torch.tensor([tt for _, tt in cases], dtype=F64)
    logits, gaps = oracle.insertion_outputs(x, lengths, t)
    for b, (seq, tt) in enumerate(cases):
        rho = 1.0 - float(sched.alpha(torch.tensor(tt, dtype=F64)))
        exact_gaps, exact_tokens = brute_force_posterior(seq, rho)
        torch.testing.assert_close(gaps[b, :len(seq) + 1], torch.tensor(exact_gaps, dtype=F64), rtol=1e-10, atol=1e-12)
        assert bool((gaps[b, len(seq) + 1:] == 0).all())
        for j, token in enumerate(seq):
            if token == MASK:
                torch.testing.assert_close(logits[b, j, :V].exp(), torch.tensor(exact_tokens[j], dtype=F64),
                                           rtol=1e-10, atol=1e-12)
        assert logits[b, 0, PAD] == -math.inf


def test_chain_laws_agree():
    lengths = CHAIN.length_probs()
    law = CHAIN.sequence_probs()
    ids = torch.arange(law.numel())
    padded = torch.stack([(ids // (V + 1) ** (K - 1 - n)) % (V + 1) for n in range(K)], -1)
    from_sequences = torch.zeros(K + 1, dtype=F64).index_add_(0, sample_lengths(padded, end_id=PAD), law)
    torch.testing.assert_close(from_sequences, lengths, rtol=0, atol=1e-12)
    assert float(lengths[0]) == 0.0 and float(law.sum()) == pytest.approx(1.0)
    draws = CHAIN.sample(DRAWS, gen(5))
    assert total_variation(empirical_distribution(sequence_ids(draws, V + 1), (V + 1) ** K), law) < tv_bound(law, DRAWS)


# -- the samplers ----------------------------------------------------------------------------

def all_states():
    """Every x_t over {tokens, mask} of length 0..K, padded, with an index."""
    states = [()] + [s for L in range(1, K + 1) for s in itertools.product([*range(V), MASK], repeat=L)]
    padded = torch.full((len(states), K), PAD)
    for i, s in enumerate(states):
        padded[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return states, {s: i for i, s in enumerate(states)}, padded


def poisson_pmf(k, lam):
    return math.exp(-lam) * lam ** k / math.factorial(k)


def insertion_outcomes(lam, room, counts):
    """{count vector: probability} of one step's insertions per slot, cut to ``room`` by
    keeping a uniformly random subset of the proposed insertions."""
    out = {}
    slots = len(lam)
    if counts == "bernoulli":
        q = [min(1.0, x) for x in lam]
        for fire in itertools.product((0, 1), repeat=slots):
            p = math.prod(qj if f else 1 - qj for f, qj in zip(fire, q))
            if p == 0:
                continue
            chosen = [j for j in range(slots) if fire[j]]
            if len(chosen) <= room:
                out[fire] = out.get(fire, 0.0) + p
                continue
            subsets = list(itertools.combinations(chosen, room))
            for keep in subsets:
                c = tuple(int(j in keep) for j in range(slots))
                out[c] = out.get(c, 0.0) + p / len(subsets)
        return out
    total = sum(lam)
    for c in itertools.product(range(room + 1), repeat=slots):
        if sum(c) <= room:
            out[c] = math.prod(poisson_pmf(cj, lj) for cj, lj in zip(c, lam))
    beyond = 1.0 - sum(poisson_pmf(k, total) for k in range(room + 1)) if total > 0 else 0.0
    if beyond > 0:  # the kept insertions of an overflow are multinomial over the slots
        for c in itertools.product(range(room + 1), repeat=slots):
            if sum(c) == room:
                multinomial = math.factorial(room) * math.prod((lj / total) ** cj / math.factorial(cj)
                                                               for cj, lj in zip(c, lam))
                out[c] = out.get(c, 0.0) + beyond * multinomial
    return out


def exact_sampler_law(counts, steps, grid="uniform"):
    """The law of the sampler's output with the oracle, by propagating the law over all
    states through every step (unmasking, then insertions, cut to K)."""
    process = insertion()
    oracle = InsertionOracle(CHAIN, process.insertion)
    states, index, padded = all_states()
    lengths = torch.tensor([len(s) for s in states])
    law = torch.zeros(len(states), dtype=F64)
    law[0] = 1.0
    times = ddkit.time_grid(steps, grid)
    for i in range(steps):
        t, s = times[i:i + 1], times[i + 1:i + 2]
        last = i == steps - 1
        p_unm = float(process.unmasking_probability(t, s))
        p_ins = float(process.insertion_probability(t, s))
        alive = (law > 0).nonzero().flatten()
        logits, gaps = oracle.insertion_outputs(padded[alive], lengths[alive], t.expand(len(alive)))
        mean = logits[..., :V].exp()
        new = torch.zeros_like(law)
        for row, i_state in enumerate(alive.tolist()):
            x = states[i_state]
            choices = [[(MASK, 1 - p_unm)] + [(v, p_unm * float(mean[row, j, v])) for v in range(V)]
                       if tok == MASK else [(tok, 1.0)] for j, tok in enumerate(x)]
            inserts = {(0,) * (len(x) + 1): 1.0} if last else insertion_outcomes(
                (p_ins * gaps[row, :len(x) + 1]).tolist(), K - len(x), counts)
            for picked in itertools.product(*choices):
                p_y = math.prod(p for _, p in picked)
                if p_y == 0:
                    continue
                y = [tok for tok, _ in picked]
                for c, p_c in inserts.items():
                    z = []
                    for j in range(len(y) + 1):
                        z += [MASK] * c[j] + ([y[j]] if j < len(y) else [])
                    new[index[tuple(z)]] += float(law[i_state]) * p_y * p_c
        law = new
    final = torch.zeros((V + 1) ** K, dtype=F64)
    clean = [i for i, s in enumerate(states) if MASK not in s]
    assert float(law[[i for i in range(len(states)) if i not in clean]].sum()) == 0.0  # the last step unmasks all
    final[sequence_ids(padded[clean], V + 1)] = law[clean]
    return final


def sample_law(name, steps, grid="uniform", seed=0):
    process = insertion()
    sampler = ddkit.build("sampler", name, steps=steps, grid=grid)
    result = sampler.sample(InsertionOracle(CHAIN, process.insertion), process, num_samples=DRAWS, length=K,
                            generator=gen(seed))
    return empirical_distribution(sequence_ids(result.tokens, V + 1), (V + 1) ** K), result


@pytest.mark.parametrize("name,counts", [("flexmdm_euler", "bernoulli"), ("flexmdm_tau_leaping", "poisson")])
@pytest.mark.parametrize("steps,grid", [(3, "uniform"), (16, "cosine")])
def test_samplers_follow_their_exact_t_step_law(name, counts, steps, grid):
    exact = exact_sampler_law(counts, steps, grid)
    law, result = sample_law(name, steps, grid)
    assert result.nfe == steps and result.steps == steps
    assert total_variation(law, exact) <= tv_bound(exact, DRAWS)
    assert torch.equal(result.lengths, process_lengths(result.tokens))


def process_lengths(tokens):
    return insertion().lengths(tokens)


@pytest.mark.parametrize("counts", ["bernoulli", "poisson"])
def test_sampler_law_approaches_the_data_law_to_first_order(counts):
    """Measured (this chain, uniform grid): TV to the data law 0.135, 0.074, 0.038 (Euler) and
    0.134, 0.076, 0.040 (tau-leaping) at 16, 32, 64 steps."""
    truth = CHAIN.sequence_probs()
    tv = [total_variation(exact_sampler_law(counts, T), truth) for T in (16, 32, 64)]
    assert tv[0] > tv[1] > tv[2]
    assert 1.6 < tv[1] / tv[2] < 2.4  # first order: doubling the steps halves the error


def test_sampler_reproduces_the_length_and_sequence_laws():
    """With the exact oracle at 64 steps the samples are within the sampling floor of the
    data law, plus the sampler's own (exactly computed) discretisation error."""
    steps = 64
    truth = CHAIN.sequence_probs()
    exact = exact_sampler_law("poisson", steps)
    law, result = sample_law("flexmdm_tau_leaping", steps, seed=11)
    assert total_variation(law, truth) <= tv_bound(truth, DRAWS) + total_variation(exact, truth)
    lengths = CHAIN.length_probs()
    observed = torch.bincount(result.lengths, minlength=K + 1).to(F64) / DRAWS  # a marginal: TV can only shrink
    assert total_variation(observed, lengths) <= tv_bound(lengths, DRAWS) + total_variation(exact, truth)


def test_sampler_is_seeded_counts_nfe_and_ends_without_masks():
    process = insertion()
    oracle = InsertionOracle(CHAIN, process.insertion)
    sampler = ddkit.build("sampler", "flexmdm_euler", steps=8)
    a = sampler.sample(oracle, process, num_samples=50, length=K, generator=gen(4), record_trajectory=True)
    b = sampler.sample(oracle, process, num_samples=50, length=K, generator=gen(4))
    assert torch.equal(a.tokens, b.tokens) and a.nfe == 8
    assert not bool((a.tokens == MASK).any()) and torch.equal(a.trajectory[-1], a.tokens)
    assert bool((a.trajectory[0] == PAD).all())  # from the empty sequence
    assert torch.equal(a.lengths, process.lengths(a.tokens))
    one = ddkit.build("sampler", "flexmdm_euler", steps=1).sample(oracle, process, num_samples=5, length=K)
    assert bool((one.lengths == 0).all())  # the only step is the last: it unmasks and never inserts
    with pytest.raises(ValueError, match="prompts are not supported"):
        sampler.sample(oracle, process, prompt=torch.zeros(1, K, dtype=torch.long))
    with pytest.raises(ValueError, match="heads"):
        sampler.sample(lambda x, t: torch.zeros(*x.shape, V + 1), process, num_samples=1, length=K)


class Greedy:
    """A two-headed denoiser that expects ``gap`` missing tokens in every slot."""

    heads = frozenset({"tokens", "gaps"})

    def __init__(self, gap):
        self.gap = gap

    def insertion_outputs(self, x_t, lengths, t):
        return torch.zeros(*x_t.shape, V + 1), torch.full((x_t.shape[0], x_t.shape[1] + 1), float(self.gap))


@pytest.mark.parametrize("name", ["flexmdm_euler", "flexmdm_tau_leaping"])
def test_maximum_length_is_kept_and_truncation_is_counted_or_refused(name):
    process = insertion()
    result = ddkit.build("sampler", name, steps=6).sample(Greedy(5.0), process, num_samples=40, length=6,
                                                         generator=gen(1))
    assert bool((result.lengths <= 6).all()) and bool((result.lengths == 6).any())
    assert result.info["truncated_insertions"] > 0 and 0 < result.info["truncated_sequences"] <= 40
    calm = ddkit.build("sampler", name, steps=6).sample(Greedy(1e-3), process, num_samples=40, length=64,
                                                       generator=gen(1))
    assert calm.info == {"truncated_insertions": 0, "truncated_sequences": 0}
    with pytest.raises(ValueError, match="above the maximum length 6"):
        ddkit.build("sampler", name, steps=6, overflow="error").sample(Greedy(5.0), process, num_samples=40,
                                                                        length=6, generator=gen(1))


def test_insert_masks_shifts_tokens_by_the_insertions_before_them():
    x = torch.tensor([[0, 1, 2, PAD, PAD, PAD, PAD]])
    out = insert_masks(x, torch.tensor([3]), torch.tensor([[1, 0, 2, 1, 0, 0, 0, 0]]), mask_id=MASK, pad_id=PAD)
    assert out.tolist() == [[MASK, 0, 1, MASK, MASK, 2, MASK]]


# -- the model and the loss -------------------------------------------------------------------

def flex_dit(**kwargs):
    torch.manual_seed(0)
    return ddkit.build("model", "flex_dit", **{"vocab_size": 6, "width": 16, "depth": 2, "heads": 2,
                                              "max_seq_len": 10, **kwargs})


@pytest.mark.parametrize("gap_head", ["expectation", "distribution"])
def test_flex_dit_outputs_do_not_depend_on_the_padding(gap_head):
    net = flex_dit(gap_head=gap_head).eval()
    assert net.heads == {"tokens", "gaps"} and net.gap_head == gap_head
    x = torch.tensor([[6, 1, 4, 5, 5, 5], [0, 1, 2, 3, 6, 2]])
    lengths, t = torch.tensor([3, 6]), torch.tensor([0.4, 0.8])
    logits, gaps = net.insertion_outputs(x, lengths, t)
    assert logits.shape == (2, 6, 6) and gaps.shape[:2] == (2, 7)
    if gap_head == "distribution":
        assert gaps.shape == (2, 7, 11)
    else:
        assert bool((gaps > 0).all()) and float(gaps.detach().mean()) == pytest.approx(1.0, abs=0.05)  # starts near 1
    wider = torch.tensor([[6, 1, 4, 0, 3, 2, 1, 1], [0, 1, 2, 3, 6, 2, 5, 5]])  # other padding, wider
    logits2, gaps2 = net.insertion_outputs(wider, lengths, t)
    torch.testing.assert_close(logits2[0, :3], logits[0, :3])
    torch.testing.assert_close(gaps2[0, :4], gaps[0, :4])
    torch.testing.assert_close(logits2[1, :6], logits[1, :6])
    torch.testing.assert_close(net(x, t), net.insertion_outputs(x, torch.tensor([6, 6]), t)[0])


def test_loss_with_the_exact_oracle_bounds_the_entropy():
    """E[loss] >= H(data) per sequence: a bound. (Measured: 4.34 nats against H = 3.03 for this
    chain; the gap is the bound's, not the oracle's: which of two equal tokens was inserted is
    not identifiable from x_t, and the model's jump process matches q's marginals, not its
    paths.)"""
    process = insertion()
    loss = ddkit.build("loss", "flexmdm", process=process)
    oracle = InsertionOracle(CHAIN, process.insertion)
    x0 = CHAIN.sample(20000, gen(8))
    out = loss(oracle, x0, generator=gen(9))
    per_sequence = out.nats.sum(-1)
    mean, se = float(per_sequence.mean()), float(per_sequence.std()) / math.sqrt(len(per_sequence))
    assert out.bound and out.nats.shape == x0.shape
    assert mean + 5 * se > CHAIN.entropy()


class Scaled(InsertionOracle):
    """The oracle with its expected gaps multiplied by ``scale``."""

    def __init__(self, chain, schedule, scale):
        super().__init__(chain, schedule)
        self.scale = scale

    def insertion_outputs(self, x_t, lengths, t):
        logits, gaps = super().insertion_outputs(x_t, lengths, t)
        return logits, self.scale * gaps


def test_loss_is_zero_at_the_truth_and_positive_elsewhere():
    """Data that is always the one-token sequence "a": every x_t (empty, a mask, "a") fixes
    the gap and the token, so the exact oracle's loss is 0 on every draw."""
    point = EndMarkovChain.from_matrices(torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), K)
    process = insertion()
    loss = ddkit.build("loss", "flexmdm", process=process)
    x0 = point.sample(500, gen(1))
    exact = loss(InsertionOracle(point, process.insertion), x0, generator=gen(2)).nats
    torch.testing.assert_close(exact, torch.zeros_like(exact), rtol=0, atol=1e-9)
    wrong = loss(Scaled(point, process.insertion, 1.5), x0, generator=gen(2)).nats.sum(-1)
    assert bool((wrong >= 0).all()) and float(wrong.mean()) > 0.01


def test_loss_on_a_two_token_sequence_equals_its_closed_form():
    """Data always "ab", linear schedules: x_t is ambiguous only as a single mask (probability
    2t(-t log t)), whose token and gaps are then 50/50: CE log 2 and D = D(0, 1/2) + D(1, 1/2)
    = log 2, each at the weight 1/t. The integrand -4 t log t log 2 integrates to log 2 > 0 =
    H(data): the bound's own gap (which token was inserted first is not identifiable)."""
    ab = EndMarkovChain.from_matrices(torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), K)
    process = insertion()
    loss = ddkit.build("loss", "flexmdm", process=process, t_min=0.0)
    nats = loss(InsertionOracle(ab, process.insertion), ab.sample(40000, gen(0)), generator=gen(1)).nats.sum(-1)
    se = float(nats.std()) / math.sqrt(nats.numel())
    assert abs(float(nats.mean()) - math.log(2)) < 5 * se


def test_loss_trains_the_model_and_reports_the_bound_for_a_distribution_head():
    process = ddkit.build("process", "insertion", vocab_size=6)
    x0, _ = random_data(8, 10, 6, 3)
    for head in ("expectation", "distribution"):
        net = flex_dit(gap_head=head)
        loss = ddkit.build("loss", "flexmdm", process=process)
        out = loss(net, x0, generator=gen(0))
        out.loss.backward()
        assert torch.isfinite(out.nats).all() and net.gap_mlp[2].weight.grad is not None
        assert out.bound == (head == "expectation")
        evaluation = loss.evaluation()
        assert evaluation(net, x0, generator=gen(0)).bound and evaluation.insertion_term == "bregman"
    with pytest.raises(ValueError, match="heads"):
        loss(ddkit.build("model", "dit", vocab_size=6, width=16, depth=1, heads=2, max_seq_len=10), x0)


# -- data, report, pipeline ----------------------------------------------------------------------

def test_markov_end_data_follow_the_exact_length_law():
    data = ddkit.build("dataset", "markov_end", vocab_size=3, end_probability=0.1, train_sequences=20000,
                       validation_sequences=10, test_sequences=0).load(None, 24)
    assert data.tokenizer.decode([3]) == "." and data.info["pad_id"] == 3
    lengths = sample_lengths(data["train"].tokens.long(), end_id=3)
    exact = torch.tensor(data.info["length_probs"], dtype=F64)
    assert total_variation(empirical_distribution(lengths, 25), exact) < tv_bound(exact, 20000)
    assert not bool(malformed(data["train"].tokens.long(), end_id=3).any())
    assert data.info["characters"]["train"] == int(lengths.sum())


def test_pydoc_paragraphs_are_one_paragraph_per_row():
    from ddkit.contrib.data.pydoc_topics import pydoc_corpus

    data = ddkit.build("dataset", "pydoc_paragraphs").load(None, 64)
    tok, rows = data.tokenizer, data["train"].tokens
    assert data.info["pad_id"] == tok.vocab_size - 1 and tok.decode([tok.vocab_size - 1]) == "\n"
    paragraphs = set(pydoc_corpus("prose").split("\n"))
    texts = [tok.decode(row).rstrip("\n") for row in rows[:50]]
    assert all(text in paragraphs and 0 < len(text) <= 64 for text in texts)
    assert data.info["left_out"]["longer"] > 0
    with pytest.raises(ValueError, match="last symbol of data.tokenizer"):
        ddkit.build("dataset", "pydoc_paragraphs").load(ddkit.build("tokenizer", "char", alphabet="\nabc"), 64)


def test_length_report_distances_and_png(tmp_path):
    exact = torch.tensor([0.0, 0.5, 0.25, 0.25], dtype=F64)
    report = length_report({"same": torch.tensor([1, 1, 2, 3]), "short": torch.tensor([0, 0, 1, 1])},
                           exact, max_length=3, reference_name="exact")
    same, short = report.rows
    assert same.tv == pytest.approx(0.0) and same.w1 == pytest.approx(0.0)
    assert short.tv == pytest.approx(0.5) and short.w1 == pytest.approx(wasserstein1(
        torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=F64), exact)) and short.w1 == pytest.approx(1.25)
    assert "| short | 4 |" in report.table()
    assert report.plot(tmp_path / "lengths.png").stat().st_size > 0
    json.dumps(report.to_json())
    # bins of 2 lengths: "short" puts all its mass in bin 0 where the reference has 0.5
    binned_report = length_report({"short": torch.tensor([0, 0, 1, 1])}, exact, max_length=3, bin_width=2)
    assert binned_report.rows[0].tv == pytest.approx(0.5) and binned_report.rows[0].w1 == pytest.approx(1.25)
    shifted = length_report({"within": torch.tensor([0, 0, 0, 0, 2, 2, 3, 3])}, exact, max_length=3, bin_width=2)
    assert shifted.rows[0].tv == pytest.approx(0.0) and shifted.rows[0].tv_floor < length_report(
        {"within": torch.tensor([0, 0, 0, 0, 2, 2, 3, 3])}, exact, max_length=3).rows[0].tv_floor
    assert "bins of 2 lengths" in shifted.table()
    assert shifted.plot(tmp_path / "binned.png").stat().st_size > 0
    with pytest.raises(ValueError, match="bin_width must be an integer in 1..4, got 0"):
        length_report({"x": torch.tensor([1])}, exact, max_length=3, bin_width=0)
    tokens = torch.tensor([[0, 1, 2, 2], [2, 2, 2, 2], [1, 2, 0, 2]])
    assert sample_lengths(tokens, end_id=2).tolist() == [2, 0, 1]
    assert malformed(tokens, end_id=2).tolist() == [False, False, True]


def test_flexmdm_pipeline_runs_end_to_end(tmp_path):
    tiny = ["train.steps=4", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=2",
            "train.eval_every=2", "train.eval_batches=1", "model.width=16", "model.depth=1", "model.heads=2",
            "data.seq_len=32", "eval.max_sequences=8", "eval.time_samples=2", "sampler.steps=8",
            "sample.num_samples=2", "train.progress=false"]
    for name, dataset in (("paragraphs", []), ("markov_end", ["data.dataset={name: markov_end, vocab_size: 4}"])):
        out = tmp_path / name
        result = invoke("run", ROOT / "pipelines" / "flexmdm.yaml", *tiny, *dataset, "--out", out)
        assert result.exit_code == 0, result.output
        evaluation = json.loads((out / "eval.json").read_text())
        assert evaluation["continuous"]["bits_per_token"] > 0
        samples = json.loads((out / "samples.json").read_text())
        assert len(samples["samples"]) == 2 and samples["nfe"] == 8
        # the sampler's lengths and info are kept; each text holds its sample's tokens only
        assert [len(text) for text in samples["samples"]] == samples["lengths"]
        assert set(samples["sampler_info"]) >= {"truncated_insertions", "truncated_sequences"}


@pytest.mark.parametrize("module", ["ddkit.plugins.processes.insertion", "ddkit.contrib.models.flex_dit",
                                    "ddkit.testing.insertion_oracles", "ddkit.contrib.lengths"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("override, message", [
    ("sampler={name: ancestral, steps: 8}",
     "sampler AncestralSampler samples processes factorised over positions; InsertionProcess is not"),
    ("sampler={name: semi_ar, block_length: 4, sampler: {name: ancestral, steps: 2}}",
     "sampler SemiAutoregressiveSampler samples processes factorised over positions"),
    ("model={name: dit, width: 16, depth: 1, heads: 2, max_seq_len: 128, time_conditioning: true}",
     "loss: the insertion process needs a denoiser with heads {'tokens', 'gaps'}"),
])
def test_flexmdm_pipeline_refuses_a_per_position_sampler_or_a_one_headed_model_when_built(override, message):
    result = invoke("config", "validate", ROOT / "pipelines" / "flexmdm.yaml", override)
    assert result.exit_code != 0 and message in result.output, result.output


def test_per_position_samplers_refuse_the_insertion_process_when_sampling():
    process = ddkit.build("process", "insertion", vocab_size=3)
    oracle = InsertionOracle(EndMarkovChain(2, max_length=4, seed=3, end_probability=0.3), process.insertion)
    with pytest.raises(ValueError, match="samples processes factorised over positions"):
        ddkit.build("sampler", "ancestral", steps=4).sample(oracle, process, num_samples=2, length=4)
