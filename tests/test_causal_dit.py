"""The causal transformer (``causal_dit``): logits at n read only the tokens before n; its one
N-token training pass gives the autoregressive cross-entropy of a direct loop; the KV cache
gives the uncached logits and the same samples; it is refused as anything but block length 1."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddkit

V = 5
F64 = torch.float64


def model(seed=0, dtype=F64):
    torch.manual_seed(seed)
    net = ddkit.build("model", "causal_dit", vocab_size=V, width=16, depth=2, heads=2, max_seq_len=16)
    return net.to(dtype).eval()


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.data())
def test_logits_at_n_never_read_position_n_or_later(N, data):
    net = model()
    seed = data.draw(st.integers(0, 2**31 - 1))
    n = data.draw(st.integers(0, N - 1))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V + 1, (2, N), generator=gen)
    changed = x.clone()
    changed[:, n:] = torch.randint(0, V + 1, (2, N - n), generator=gen)
    torch.testing.assert_close(net(changed, None)[:, :n + 1], net(x, None)[:, :n + 1], rtol=0, atol=0)


def test_training_pass_is_the_autoregressive_cross_entropy_of_a_loop():
    net = model()
    process = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
    x0 = torch.randint(0, V, (3, 10), generator=torch.Generator().manual_seed(3))
    loss = ddkit.build("loss", "block_elbo", process=process, block_length=1, clip=[1.0, 1.0])
    out = loss(net, x0, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(3, 10, dtype=F64)
    for n in range(10):  # -log p(x_n | x_<n) with the plain denoiser contract: x_<n clean, the rest masked
        view = torch.cat([x0[:, :n], torch.full((3, 10 - n), V)], 1)
        logp = torch.log_softmax(net(view, torch.ones(3))[:, n].double(), -1)
        expected[:, n] = -logp.gather(-1, x0[:, n:n + 1]).squeeze(-1)
    torch.testing.assert_close(out.nats.double(), expected, rtol=0, atol=1e-6)  # mean param. in float32
    # the two-stream contract: the noisy stream does not matter for one-token blocks
    x_t = torch.where(torch.rand(3, 10, generator=torch.Generator().manual_seed(1)) < 0.5, V, x0)
    torch.testing.assert_close(net.two_stream(x_t, x0), net(x0, None), rtol=0, atol=0)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_kv_cache_gives_the_uncached_logits(seed):
    net = model()
    x = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(seed))
    full = net(x, None)
    cache = net.begin(2)
    for n in range(9):
        torch.testing.assert_close(net.extend(cache, torch.full((2, 1), V)), full[:, n:n + 1], rtol=0, atol=1e-10)
        net.commit(cache, x[:, n:n + 1])
    assert cache.length == 9


@pytest.mark.parametrize("prompted", [False, True])
def test_cached_and_uncached_sampling_give_the_same_samples(prompted):
    net = model(dtype=torch.float32)
    process = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
    prompt = torch.full((4, 12), -1)
    if prompted:
        prompt[:, :3] = torch.tensor([1, 2, 0])

    def draw(kv_cache):
        sampler = ddkit.build("sampler", "semi_ar", block_length=1, kv_cache=kv_cache,
                              sampler={"name": "ancestral", "steps": 1, "top_k": 3})
        return sampler.sample(net, process, prompt=prompt, generator=torch.Generator().manual_seed(4))

    cached, uncached = draw(True), draw(False)
    assert torch.equal(cached.tokens, uncached.tokens) and cached.nfe == uncached.nfe == 12 - 3 * prompted
    assert bool((cached.tokens < V).all())


def test_block_length_other_than_one_is_refused_with_its_value():
    with pytest.raises(ValueError, match="block_length") as info:
        ddkit.build("model", "causal_dit", vocab_size=V, block_length=4)
    assert "4" in str(info.value)
