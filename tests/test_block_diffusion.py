"""Block diffusion (BD3-LM): the block-causal and two-stream masks, the two-stream pass
against a per-block loop, the KV cache against the uncached forward, the block ELBO against
the masked ELBO (L' = N), the autoregressive cross-entropy (L' = 1) and the exact NLL with
the oracle, clipped mask counts, and cached sampling against uncached sampling."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddkit
from ddkit.contrib.models.block_dit import block_causal_mask, two_stream_mask
from ddkit.plugins.losses.block_elbo import admissible_counts
from ddkit.testing import MarkovChain, OracleDenoiser
from ddkit.testing.oracles import sequence_ids
from ddkit.testing.stats import empirical_distribution, total_variation, tv_bound

V = 5
F64 = torch.float64


def model(block_length, N=8, seed=0, dtype=F64):
    torch.manual_seed(seed)
    net = ddkit.build("model", "block_dit", vocab_size=V, width=16, depth=2, heads=2, block_length=block_length,
                      max_seq_len=32).to(dtype)
    return net.eval()


def masked(schedule="linear"):
    return ddkit.build("process", "masked", vocab_size=V, schedule=schedule)


def test_two_stream_mask_matches_the_worked_example():
    rows = ["11000000", "11000000", "00111100", "00111100",
            "00001100", "00001100", "00001111", "00001111"]
    expected = torch.tensor([[c == "1" for c in row] for row in rows])
    assert torch.equal(two_stream_mask(4, 2), expected)


@given(st.integers(1, 12), st.integers(1, 6))
def test_masks_against_their_definition(N, L):
    mask = two_stream_mask(N, L)
    for q in range(2 * N):
        for k in range(2 * N):
            clean_q, clean_k = q >= N, k >= N
            bq, bk = (q - N * clean_q) // L, (k - N * clean_k) // L
            allowed = (bq == bk and clean_q == clean_k) or (bq > bk and clean_k and not clean_q) or \
                (bq >= bk and clean_q and clean_k)
            assert bool(mask[q, k]) == allowed
    assert not bool(mask[N:, :N].any())  # the clean stream never attends to the noisy one
    causal = block_causal_mask(N, L)
    assert torch.equal(causal, mask[N:, N:])


def test_two_stream_pass_equals_a_loop_over_blocks():
    """Noisy block b's logits from the 2N pass equal those of the plain (block-causal) forward
    on [x0 of earlier blocks, x_t of block b, anything after]."""
    net = model(2)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, V, (3, 8), generator=gen)
    x_t = torch.where(torch.rand(3, 8, generator=gen) < 0.5, V, x0)
    two = net.two_stream(x_t, x0)
    for start in range(0, 8, 2):
        view = torch.cat([x0[:, :start], x_t[:, start:start + 2], torch.randint(0, V + 1, (3, 8 - start - 2))], 1)
        torch.testing.assert_close(two[:, start:start + 2], net(view, torch.zeros(3))[:, start:start + 2],
                                   rtol=0, atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([1, 2, 3]), st.integers(0, 2**31 - 1))
def test_kv_cached_forward_equals_the_uncached_forward(L, seed):
    net = model(L)
    N = 6 if L != 4 else 8
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V + 1, (2, N), generator=gen)
    full = net(x, torch.zeros(2))
    cache = net.begin(2)
    for start in range(0, N, L):
        block = x[:, start:start + L]
        torch.testing.assert_close(net.extend(cache, block), full[:, start:start + L], rtol=0, atol=1e-10)
        net.commit(cache, block)
    assert cache.length == N


def test_block_elbo_with_one_block_is_the_masked_continuous_elbo():
    net = model(8)
    process = masked()
    x0 = torch.randint(0, V, (6, 8), generator=torch.Generator().manual_seed(2))
    block = ddkit.build("loss", "block_elbo", process=process, block_length=8)
    plain = ddkit.build("loss", "continuous_elbo", process=process)
    a = block(net, x0, generator=torch.Generator().manual_seed(5))
    b = plain(net, x0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.nats, b.nats.to(a.nats.dtype), rtol=0, atol=1e-10)
    assert a.bound


def test_block_size_one_with_every_token_masked_is_the_autoregressive_cross_entropy():
    net = model(1)
    process = masked()
    x0 = torch.randint(0, V, (3, 8), generator=torch.Generator().manual_seed(3))
    loss = ddkit.build("loss", "block_elbo", process=process, block_length=1, clip=[1.0, 1.0])
    out = loss(net, x0, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(3, 8, dtype=F64)
    for n in range(8):  # -log p(x_n | x_<n): earlier tokens clean, position n masked
        view = torch.cat([x0[:, :n], torch.full((3, 8 - n), V)], 1)
        logp = torch.log_softmax(net(view, torch.zeros(3))[:, n].double(), -1)
        expected[:, n] = -logp.gather(-1, x0[:, n:n + 1]).squeeze(-1)
    # the mean parameterization normalises in float32
    torch.testing.assert_close(out.nats.double(), expected, rtol=0, atol=1e-6)
    assert out.bound
    assert loss.evaluation().clip == (1.0, 1.0)
    assert ddkit.build("loss", "block_elbo", process=process, block_length=4, clip=[0.3, 0.8]).evaluation().clip is None


@pytest.fixture(scope="module")
def chain():
    return MarkovChain(3, seed=7, concentration=0.6)


def test_with_the_oracle_block_size_one_gives_the_exact_nll(chain):
    process = ddkit.build("process", "masked", vocab_size=3, schedule="linear")
    oracle = OracleDenoiser(chain, process)
    x0 = chain.sample(50, 5, torch.Generator().manual_seed(1))
    loss = ddkit.build("loss", "block_elbo", process=process, block_length=1, clip=[1.0, 1.0])
    nll = -chain.log_prob(x0)
    torch.testing.assert_close(loss(oracle, x0).nats.sum(-1).double(), nll.double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("L", [1, 2, 4])
def test_with_the_oracle_the_block_bound_is_above_the_nll_and_tightens_as_blocks_shrink(chain, L):
    """E[NELBO(L')] >= NLL, estimated over 400 draws per sequence (bounds of 6 standard
    errors); the gap shrinks as L' decreases (L' = 4 is the whole sequence)."""
    process = ddkit.build("process", "masked", vocab_size=3, schedule="linear")
    oracle = OracleDenoiser(chain, process)
    x0 = chain.sample(4, 4, torch.Generator().manual_seed(2)).repeat_interleave(400, 0)
    loss = ddkit.build("loss", "block_elbo", process=process, block_length=L, t_min=0.0)
    per_seq = loss(oracle, x0, generator=torch.Generator().manual_seed(3)).nats.sum(-1).double().view(4, 400)
    mean, se = per_seq.mean(1), per_seq.std(1) / math.sqrt(400)
    nll = -chain.log_prob(x0[::400]).double()
    assert bool((mean + 6 * se >= nll).all())
    gaps = {}
    for size in (1, 4):
        est = ddkit.build("loss", "block_elbo", process=process, block_length=size, t_min=0.0)(
            oracle, x0, generator=torch.Generator().manual_seed(4)).nats.sum(-1).double().mean()
        gaps[size] = float(est - nll.mean())
    assert gaps[1] < gaps[4]


def test_clipped_counts_are_admissible_and_impossible_intervals_are_refused():
    process = masked()
    loss = ddkit.build("loss", "block_elbo", process=process, block_length=4, clip=[0.45, 0.95])
    x0 = torch.randint(0, V, (200, 16), generator=torch.Generator().manual_seed(0))
    out = loss(model(4, N=16), x0, generator=torch.Generator().manual_seed(1))
    assert not out.bound
    assert torch.equal(admissible_counts(4, (0.45, 0.95)), torch.tensor([False, False, True, True, False]))
    with pytest.raises(ValueError, match="beta <= omega"):
        ddkit.build("loss", "block_elbo", process=process, block_length=4, clip=[0.8, 0.3])
    with pytest.raises(ValueError, match="admits no masked count"):
        ddkit.build("loss", "block_elbo", process=process, block_length=4, clip=[0.3, 0.4])


def test_clipped_noise_masks_only_admissible_counts():
    loss = ddkit.build("loss", "block_elbo", process=masked(), block_length=4, clip=[0.45, 0.95])
    x0 = torch.randint(0, V, (500, 8), generator=torch.Generator().manual_seed(0))
    t, x_t = loss._noise(x0, 2, torch.Generator().manual_seed(1))
    counts = (x_t == V).view(500, 2, 4).sum(-1)
    assert set(counts.flatten().tolist()) <= {2, 3} and {2, 3} <= set(counts.flatten().tolist())
    assert bool(((t >= 0.45 - 1e-12) & (t <= 0.95 + 1e-12)).all())  # linear schedule: t is the mask rate


@pytest.mark.parametrize("inner", [{"name": "ancestral", "steps": 4}, {"name": "first_hitting", "top_p": 0.9},
                                   {"name": "ancestral", "steps": 4, "rule": "low_confidence"}])
@pytest.mark.parametrize("L", [1, 4])
def test_cached_and_uncached_sampling_give_the_same_samples(inner, L):
    net = model(L, dtype=torch.float32)
    process = masked()
    prompt = torch.full((3, 12), -1)
    prompt[:, :3] = torch.tensor([1, 2, 0])

    def draw(kv_cache):
        sampler = ddkit.build("sampler", "semi_ar", block_length=L, sampler=inner, kv_cache=kv_cache)
        return sampler.sample(net, process, prompt=prompt, generator=torch.Generator().manual_seed(9))

    cached, uncached = draw(True), draw(False)
    assert torch.equal(cached.tokens, uncached.tokens) and cached.nfe == uncached.nfe
    assert bool((cached.tokens < V).all()) and cached.tokens[:, :3].tolist() == [[1, 2, 0]] * 3
    # commit passes: every finished block before the last one (the prompt's included)
    assert cached.info["commit_passes"] == math.ceil(12 / L) - 1


def test_kv_cache_refuses_a_model_that_is_not_block_causal_or_has_another_block_length():
    sampler = ddkit.build("sampler", "semi_ar", block_length=2, kv_cache=True, sampler={"name": "ancestral"})
    with pytest.raises(ValueError, match="block-causal model"):
        sampler.sample(lambda x, t: torch.zeros(*x.shape, V), masked(), num_samples=1, length=4)
    with pytest.raises(ValueError, match="block_length 4 differs"):
        sampler.sample(model(4, dtype=torch.float32), masked(), num_samples=1, length=8)


def test_autoregressive_sampling_with_the_oracle_follows_the_chain(chain):
    """Block size 1 with one step per block draws each token from the exact conditional
    given the prefix: the samples follow the chain's law (TV within the McDiarmid bound)."""
    process = ddkit.build("process", "masked", vocab_size=3, schedule="linear")
    sampler = ddkit.build("sampler", "semi_ar", block_length=1, sampler={"name": "ancestral", "steps": 1})
    draws = 20_000
    result = sampler.sample(OracleDenoiser(chain, process), process, num_samples=draws, length=4,
                            generator=torch.Generator().manual_seed(0))
    truth = chain.probabilities(4)
    law = empirical_distribution(sequence_ids(result.tokens, 3), 3**4)
    assert float(total_variation(law, truth)) < tv_bound(truth, draws)
    assert result.nfe == 4


def test_search_grid_is_bd3lms_and_the_search_picks_the_least_variance():
    process = masked()
    loss = ddkit.build("loss", "block_elbo", process=process, block_length=4, clip="search")
    grid = loss.candidate_intervals()
    assert len(grid) == 36 and grid[0] == (loss.t_min, 1.0) and (0.45, 0.95) in grid and (loss.t_min, 0.5) in grid
    assert ddkit.build("loss", "block_elbo", process=process, block_length=1, clip="search").candidate_intervals() == \
        [(loss.t_min, 1.0), (1.0, 1.0)]
    net = model(4, N=16)
    batches = [torch.randint(0, V, (8, 16), generator=torch.Generator().manual_seed(s)) for s in range(2)]
    table = loss.interval_variances(net, batches)
    assert len(table) == 36 and all(v >= 0 and math.isfinite(v) for _, v in table)
    assert loss.clip is None  # training starts on the full range
    logged = loss.after_validation(net, batches)
    best = min(table, key=lambda row: row[1])
    assert (logged["clip_low"], logged["clip_high"]) == best[0] and logged["clip_variance"] == best[1]
    assert loss.clip == (None if best[0] == (loss.t_min, 1.0) else best[0])
    # the choice travels with the loss's state (checkpoints)
    restored = ddkit.build("loss", "block_elbo", process=process, block_length=4, clip="search")
    restored.load_state_dict(loss.state_dict())
    assert restored.clip == loss.clip
    assert not ddkit.build("loss", "block_elbo", process=process, block_length=4).after_validation(net, batches)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([(1, 3), (2, 4), (2, 6), (4, 8)]), st.integers(0, 2**31 - 1))
def test_a_sliding_cache_gives_the_forward_on_the_window_alone(layout, seed):
    """With context W, a one-layer model's cached logits of block b equal the plain forward on
    the W positions ending at the block (numbered from 0 again), for sequences longer than
    max_seq_len too. (Deeper, the cached states of a committed block were computed from the
    window it was committed in, as in BD3-LM's sliding cache.)"""
    L, W = layout
    torch.manual_seed(0)
    net = ddkit.build("model", "block_dit", vocab_size=V, width=16, depth=1, heads=2, block_length=L,
                      max_seq_len=W).to(F64).eval()
    N = 4 * W
    x = torch.randint(0, V + 1, (2, N), generator=torch.Generator().manual_seed(seed))
    cache = net.begin(2, context=W)
    for start in range(0, N, L):
        low = max(0, start + L - W)
        expected = net(x[:, low:start + L], torch.zeros(2))[:, start - low:]
        torch.testing.assert_close(net.extend(cache, x[:, start:start + L]), expected, rtol=0, atol=1e-9)
        net.commit(cache, x[:, start:start + L])
        assert cache.length <= W


@pytest.mark.parametrize("inner", [{"name": "ancestral", "steps": 2}, {"name": "first_hitting"}])
def test_windowed_sampling_is_the_same_cached_and_uncached_and_longer_than_the_model(inner):
    torch.manual_seed(0)
    net = ddkit.build("model", "block_dit", vocab_size=V, width=16, depth=1, heads=2, block_length=2,
                      max_seq_len=32).eval()  # one layer: the sliding cache is the window's forward
    process = masked()

    def draw(kv_cache):
        sampler = ddkit.build("sampler", "semi_ar", block_length=2, sampler=inner, kv_cache=kv_cache, context=8)
        return sampler.sample(net, process, num_samples=3, length=48, generator=torch.Generator().manual_seed(3))

    cached, uncached = draw(True), draw(False)
    assert cached.tokens.shape == (3, 48) and torch.equal(cached.tokens, uncached.tokens)
    assert bool((cached.tokens < V).all())


def test_context_is_checked_against_the_model_and_block_length():
    process = masked()
    with pytest.raises(ValueError, match="not a multiple of block_length 4"):
        ddkit.build("sampler", "semi_ar", block_length=4, context=6).sample(model(4, dtype=torch.float32), process,
                                                                            num_samples=1, length=8)
    with pytest.raises(ValueError, match="above the model's max_seq_len 32"):
        ddkit.build("sampler", "semi_ar", block_length=4, context=64).sample(model(4, dtype=torch.float32), process,
                                                                             num_samples=1, length=8)
    causal = ddkit.build("model", "causal_dit", vocab_size=V, width=16, depth=1, heads=2, max_seq_len=16)
    with pytest.raises(ValueError, match="causal_dit has no context window"):
        ddkit.build("sampler", "semi_ar", block_length=1, kv_cache=True, context=8).sample(
            causal, process, num_samples=1, length=4)


def test_entropy_stop_ends_degenerate_sequences_with_the_end_token():
    """A denoiser that always predicts token 1 gives zero-entropy text: every sequence ends
    after its first window; a varied one (uniform logits over many tokens) does not."""
    process = ddkit.build("process", "masked", vocab_size=8, schedule="linear")

    def constant(x, t):
        logits = torch.full((*x.shape, 8), -30.0)
        logits[..., 1] = 30.0
        return logits

    sampler = ddkit.build("sampler", "semi_ar", block_length=4, eos_id=0, entropy_stop=0.5, entropy_window=8,
                          sampler={"name": "ancestral", "steps": 4})
    out = sampler.sample(constant, process, num_samples=2, length=24, generator=torch.Generator().manual_seed(0))
    assert out.tokens.tolist() == [[0] * 24] * 2  # the window of 8 ones is cut, the rest is the end token
    assert out.steps == 2 * 4  # stopped after the second block
    varied = sampler.sample(lambda x, t: torch.zeros(*x.shape, 8), process, num_samples=2, length=24,
                            generator=torch.Generator().manual_seed(0))
    assert bool((varied.tokens[:, :16] != 0).any())
    with pytest.raises(ValueError, match="needs|eos_id"):
        ddkit.build("sampler", "semi_ar", entropy_stop=1.0)


def test_complementary_masks_with_one_block_are_continuous_elbos_and_evaluation_is_plain():
    net = model(8)
    process = masked("cosine")
    x0 = torch.randint(0, V, (6, 8), generator=torch.Generator().manual_seed(2))
    block = ddkit.build("loss", "block_elbo", process=process, block_length=8, complementary_masks=True)
    plain = ddkit.build("loss", "continuous_elbo", process=process, complementary_masks=True)
    a = block(net, x0, generator=torch.Generator().manual_seed(5))
    b = plain(net, x0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.nats, b.nats.to(a.nats.dtype), rtol=0, atol=1e-10)
    assert not block.evaluation().complementary_masks
    with pytest.raises(ValueError, match="full range"):
        ddkit.build("loss", "block_elbo", process=process, block_length=4, clip=[0.3, 0.8], complementary_masks=True)


def test_complementary_masks_are_complements_within_every_block():
    net = model(4)
    process = masked()
    seen = []
    original = net.two_stream

    def spy(x_t, x0):
        seen.append(x_t.clone())
        return original(x_t, x0)

    net.two_stream = spy
    x0 = torch.randint(0, V, (5, 8), generator=torch.Generator().manual_seed(0))
    out = ddkit.build("loss", "block_elbo", process=process, block_length=4, complementary_masks=True)(
        net, x0, generator=torch.Generator().manual_seed(1))
    first, second = seen[0].chunk(2)
    assert out.nats.shape == (5, 8) and torch.equal((first == V) ^ (second == V), torch.ones_like(x0, dtype=torch.bool))
