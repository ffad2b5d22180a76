"""Ancestral and first-hitting samplers on the masked process."""

import math

import pytest
import torch

import ddkit

V = 4


def process(schedule="cosine"):
    return ddkit.build("process", "masked", vocab_size=V, schedule=schedule)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Recorder:
    """A time-independent denoiser that depends on x_t and records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x_t, t):
        self.calls.append(t.clone())
        masks = (x_t == V).float().sum(-1, keepdim=True)
        pos = torch.arange(x_t.shape[1]).float()
        return torch.stack([torch.sin(pos * (k + 1) + masks) for k in range(V)], -1)


SAMPLERS = [("ancestral", {"steps": 16}), ("ancestral", {"steps": 8, "grid": "cosine", "cache": False}),
            ("first_hitting", {})]
IDS = ["ancestral", "ancestral-cosine-nocache", "first_hitting"]


@pytest.mark.parametrize("name,params", SAMPLERS, ids=IDS)
@pytest.mark.parametrize("schedule", ["linear", "cosine", "geometric", "loglinear"])
def test_no_mask_remains_and_fixed_tokens_kept(name, params, schedule):
    sampler = ddkit.build("sampler", name, **params)
    prompt = torch.full((3, 10), -1)
    prompt[:, :3] = torch.tensor([1, 2, 3])  # prefix
    prompt[:, 7] = 0  # infill anchor
    prompt[1, 5] = V  # the mask id also means "generate"
    result = sampler.sample(Recorder(), process(schedule), prompt=prompt, generator=gen(),
                            record_trajectory=True)
    assert result.tokens.shape == (3, 10) and result.tokens.dtype == torch.long
    assert bool((result.tokens < V).all()) and bool((result.tokens >= 0).all())
    fixed = (prompt >= 0) & (prompt < V)
    for state in result.trajectory:
        assert torch.equal(state[fixed], prompt[fixed])
    # clean tokens never change once unmasked
    for before, after in zip(result.trajectory, result.trajectory[1:]):
        clean = before != V
        assert torch.equal(after[clean], before[clean])
    assert result.nfe >= 1


@pytest.mark.parametrize("name,params", SAMPLERS, ids=IDS)
def test_same_seed_same_samples(name, params):
    sampler = ddkit.build("sampler", name, **params)
    a = sampler.sample(Recorder(), process(), num_samples=4, length=12, generator=gen(3))
    b = sampler.sample(Recorder(), process(), num_samples=4, length=12, generator=gen(3))
    c = sampler.sample(Recorder(), process(), num_samples=4, length=12, generator=gen(4))
    assert torch.equal(a.tokens, b.tokens) and a.nfe == b.nfe
    assert not torch.equal(a.tokens, c.tokens)


@pytest.mark.parametrize("steps,grid", [(8, "uniform"), (64, "uniform"), (64, "cosine")])
def test_cache_keeps_samples_and_counts_changed_steps(steps, grid):
    cached = ddkit.build("sampler", "ancestral", steps=steps, grid=grid, cache=True)
    uncached = ddkit.build("sampler", "ancestral", steps=steps, grid=grid, cache=False)
    for seed in range(5):
        a = cached.sample(Recorder(), process(), num_samples=2, length=6, generator=gen(seed),
                          record_trajectory=True)
        b = uncached.sample(Recorder(), process(), num_samples=2, length=6, generator=gen(seed))
        assert torch.equal(a.tokens, b.tokens)  # same draws, same outputs: same distribution
        changed = sum(not torch.equal(x, y) for x, y in zip(a.trajectory, a.trajectory[1:]))
        assert a.nfe == changed
        assert b.nfe == b.steps


def test_time_conditioning_disables_the_cache():
    sampler = ddkit.build("sampler", "ancestral", steps=32, parameterization={"name": "mean", "time_conditioning": True})
    recorder = Recorder()
    result = sampler.sample(recorder, process(), num_samples=1, length=3, generator=gen())
    assert result.nfe == result.steps == len(recorder.calls)
    times = torch.stack(recorder.calls)[:, 0]
    assert float(times[0]) == pytest.approx(1.0) and bool((times[1:] < times[:-1]).all())


def test_without_time_conditioning_the_denoiser_sees_a_constant():
    recorder = Recorder()
    ddkit.build("sampler", "ancestral", steps=8, cache=False).sample(recorder, process(), num_samples=1,
                                                                     length=3, generator=gen())
    assert all(float(t.abs().max()) == 0.0 for t in recorder.calls)


def test_first_hitting_uses_one_call_per_masked_token():
    sampler = ddkit.build("sampler", "first_hitting")
    prompt = torch.tensor([[-1, 2, -1, -1, 0, -1]])
    recorder = Recorder()
    result = sampler.sample(recorder, process(), prompt=prompt, generator=gen())
    assert result.nfe == len(recorder.calls) == 4
    times = torch.stack(recorder.calls)[:, 0]
    assert bool((times[1:] <= times[:-1]).all()) and float(times[0]) <= 1.0
    batch = sampler.sample(Recorder(), process(), prompt=torch.tensor([[-1, -1, 1], [-1, 1, 1]]), generator=gen())
    assert batch.nfe == 2


def test_first_hitting_event_times_follow_the_schedule():
    """With one masked token the unmasking time s solves 1 - alpha_s = u, u ~ U(0,1):
    alpha(s) is uniform. Kolmogorov-Smirnov bound at p < 1e-6."""
    times = []

    def record(x_t, t):
        times.append(float(t[0]))
        return torch.zeros(*x_t.shape, V)

    sampler = ddkit.build("sampler", "first_hitting", parameterization={"name": "mean", "time_conditioning": True})
    p = process("cosine")
    g = gen()
    for _ in range(2000):
        sampler.sample(record, p, prompt=torch.tensor([[-1]]), generator=g)
    alphas = torch.sort(p.schedule.alpha(torch.tensor(times, dtype=torch.float64))).values
    ecdf = torch.arange(1, len(alphas) + 1, dtype=torch.float64) / len(alphas)
    ks = float((ecdf - alphas).abs().max())
    assert ks < math.sqrt(-math.log(1e-6 / 2) / (2 * len(alphas)))


@pytest.mark.parametrize("name,params", [("ancestral", {"steps": 5}), ("ancestral", {"steps": 50, "grid": "cosine"}),
                                         ("first_hitting", {})], ids=["anc5", "anc50cos", "fh"])
def test_factorised_denoiser_gives_its_marginals(name, params):
    """If mu does not depend on x_t, every position ends with distribution mu_n exactly, for any
    sampler and step count. Chi-square test per position at p < 1e-6."""
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.1], [0.05, 0.05, 0.1, 0.8], [0.25, 0.25, 0.25, 0.25]])
    denoiser = lambda x_t, t: probs.log().expand(x_t.shape[0], -1, -1)  # noqa: E731
    n = 4000
    result = ddkit.build("sampler", name, **params).sample(denoiser, process(), num_samples=n, length=3,
                                                            generator=gen(1))
    chi2_crit = 30.66  # chi-square upper quantile, 3 degrees of freedom, p = 1e-6
    for pos in range(3):
        counts = torch.bincount(result.tokens[:, pos], minlength=V).double()
        expected = n * probs[pos].double()
        assert float(((counts - expected) ** 2 / expected).sum()) < chi2_crit


def test_temperature_zero_and_top_k_one_are_argmax():
    logits = torch.tensor([[0.1, 2.0, 0.3, -1.0]])
    denoiser = lambda x_t, t: logits.expand(*x_t.shape, V)  # noqa: E731
    for params in ({"temperature": 0.0}, {"top_k": 1}, {"top_p": 0.01}):
        for name in ("ancestral", "first_hitting"):
            result = ddkit.build("sampler", name, **params).sample(denoiser, process(), num_samples=5, length=4,
                                                                   generator=gen())
            assert bool((result.tokens == 1).all()), (name, params)


def test_final_argmax_on_a_single_step():
    logits = torch.tensor([0.0, 0.1, 0.0, 0.0])
    denoiser = lambda x_t, t: logits.expand(*x_t.shape, V)  # noqa: E731
    result = ddkit.build("sampler", "ancestral", steps=1, final_argmax=True).sample(
        denoiser, process(), num_samples=3, length=5, generator=gen())
    assert bool((result.tokens == 1).all()) and result.nfe == 1


def test_prompt_errors():
    sampler = ddkit.build("sampler", "ancestral", steps=4)
    with pytest.raises(ValueError, match="prompt entries"):
        sampler.sample(Recorder(), process(), prompt=torch.tensor([[7, -1]]))
    with pytest.raises(ValueError, match="num_samples and length"):
        sampler.sample(Recorder(), process())
    with pytest.raises(ValueError, match="disagrees"):
        sampler.sample(Recorder(), process(), prompt=torch.tensor([[1, -1]]), length=3)


def test_denoiser_with_wrong_output_shape_is_named():
    with pytest.raises(ValueError, match="denoiser returned logits"):
        ddkit.build("sampler", "ancestral", steps=2).sample(lambda x, t: torch.zeros(*x.shape, 2), process(),
                                                            num_samples=1, length=2)


def test_mean_parameterization_drops_extra_columns_and_carries_clean_tokens():
    param = ddkit.build("parameterization", "mean")
    x_t = torch.tensor([[0, V, 2]])
    full = torch.randn(1, 3, V + 1)
    log_mean = param.log_mean(lambda x, t: full, x_t, torch.zeros(1), process())
    assert log_mean.shape == (1, 3, V)
    torch.testing.assert_close(log_mean[0, 1], full[0, 1, :V].log_softmax(-1))
    assert float(log_mean[0, 0, 0]) == 0.0 and bool(torch.isinf(log_mean[0, 0, 1:]).all())
    assert float(log_mean[0, 2, 2]) == 0.0


def test_mean_logits_give_the_mean_at_masked_positions():
    """``mean_logits`` (what the fused samplers read) normalise to ``log_mean`` wherever the
    state is masked; the carry-over of clean rows is left out."""
    param = ddkit.build("parameterization", "mean")
    x_t = torch.tensor([[0, V, 2, V]])
    full = torch.randn(1, 4, V + 1)
    logits = param.mean_logits(lambda x, t: full, x_t, torch.zeros(1), process())
    log_mean = param.log_mean(lambda x, t: full, x_t, torch.zeros(1), process())
    assert logits.shape == (1, 4, V) and logits.dtype == torch.float32
    masked = x_t == V
    torch.testing.assert_close(logits[masked].log_softmax(-1), log_mean[masked], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, full[..., :V])


def test_mean_logits_default_is_the_log_mean():
    class OnlyLogMean(ddkit.Parameterization):
        def log_mean(self, denoiser, x_t, t, process):
            return denoiser(x_t, t).log_softmax(-1)

    full = torch.randn(1, 3, V)
    x_t = torch.tensor([[0, V, 1]])
    torch.testing.assert_close(OnlyLogMean().mean_logits(lambda x, t: full, x_t, torch.zeros(1), process()),
                               full.log_softmax(-1))


@pytest.mark.parametrize("name,params", [("ancestral", {"steps": 8}), ("first_hitting", {})])
def test_samplers_never_read_clean_rows(name, params):
    """The fused masked step and first hitting read only masked rows of the mean's logits:
    poisoning the rows of clean positions with NaN changes nothing."""
    prompt = torch.tensor([[0, -1, 2, -1, -1, 1]] * 3)

    def poisoned(x_t, t):
        out = Recorder()(x_t, t)
        return out.masked_fill((x_t != V)[..., None], float("nan"))

    sampler = ddkit.build("sampler", name, **params)
    clean = sampler.sample(Recorder(), process(), prompt=prompt, generator=gen(3)).tokens
    assert torch.equal(sampler.sample(poisoned, process(), prompt=prompt, generator=gen(3)).tokens, clean)


@pytest.mark.parametrize("inference", [False, True])
def test_cache_hits_equal_tokens_and_misses_tokens_changed_in_place(inference):
    """The cache keeps the previous input by reference (or a copy for inference tensors,
    which have no version counter): equal tokens hit, tokens modified in place miss."""
    recorder = Recorder()
    calls = ddkit.DenoiserCalls(recorder, process(), ddkit.build("parameterization", "mean"), cache=True)
    t = torch.ones(2, dtype=torch.float64)
    with torch.inference_mode(inference):
        x = torch.full((2, 5), 3, dtype=torch.long)
        first = calls.mean_logits(x, t)
        assert calls.mean_logits(x, t) is first and calls.mean_logits(x.clone(), t) is first
        assert calls.nfe == 1
        x[0, 0] = 1  # the cached input itself changes
        calls.mean_logits(x, t)
        assert calls.nfe == 2
        calls.mean_logits(x.clone(), t)
        assert calls.nfe == 2
