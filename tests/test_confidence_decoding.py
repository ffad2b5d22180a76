"""MaskGIT, LLaDA low-confidence and Fast-dLLM threshold decoding as unmasking rules: the
number committed per step, which positions are committed, the threshold's data-dependent
NFE, filters and fixed positions."""

import math

import pytest
import torch

import ddkit

V, N = 4, 12


def masked(schedule="linear"):
    return ddkit.build("process", "masked", vocab_size=V, schedule=schedule)


def confident_at(levels):
    """A denoiser whose most likely token at position n has probability ``levels[n]`` (token
    n mod V), the rest spread evenly."""
    levels = torch.as_tensor(levels, dtype=torch.float64)

    def denoiser(x_t, t):
        best = torch.arange(x_t.shape[1]) % V
        probs = ((1 - levels) / (V - 1))[:, None].expand(-1, V).clone()
        probs[torch.arange(x_t.shape[1]), best] = levels
        return probs.log().float()[None].expand(x_t.shape[0], -1, -1)

    return denoiser


LEVELS = [0.3, 0.95, 0.5, 0.99, 0.4, 0.92, 0.6, 0.35, 0.97, 0.45, 0.55, 0.8]


def masks_per_step(result):
    return [int((x == V).sum(-1)[0]) for x in result.trajectory]


def run(rule, steps, denoiser=None, seed=0, **kwargs):
    sampler = ddkit.build("sampler", "ancestral", steps=steps, rule=rule, **kwargs)
    return sampler.sample(denoiser or confident_at(LEVELS), masked(), num_samples=3, length=N,
                          generator=torch.Generator().manual_seed(seed), record_trajectory=True)


def test_low_confidence_commits_the_deterministic_linear_count():
    result = run({"name": "low_confidence"}, steps=5)
    M, T = N, 5
    counts = [M // T + (i < M % T) for i in range(T)]
    expected = [N - sum(counts[:i]) for i in range(T + 1)]
    assert masks_per_step(result) == expected
    assert result.nfe == 5


def test_low_confidence_commits_the_most_confident_first():
    result = run({"name": "low_confidence"}, steps=4, temperature=0.0)
    order = sorted(range(N), key=lambda n: -LEVELS[n])
    first = (result.trajectory[1][0] != V).nonzero().flatten().tolist()
    assert sorted(first) == sorted(order[:3])
    assert result.tokens[0].tolist() == [n % V for n in range(N)]  # temperature 0: the argmax


def test_random_remasking_does_not_follow_confidence():
    firsts = set()
    for seed in range(6):
        result = run({"name": "low_confidence", "remasking": "random"}, steps=4, seed=seed, temperature=0.0)
        firsts.add(tuple((result.trajectory[1][0] != V).nonzero().flatten().tolist()))
    assert len(firsts) > 1


def test_maskgit_follows_the_cosine_count():
    T = 6
    result = run({"name": "maskgit", "choice_temperature": 0.0}, steps=T)
    expected, unknown = [N], N
    for i in range(T - 1):
        r = (i + 1) / T
        keep = max(1, min(unknown - 1, math.floor(N * math.cos(math.pi / 2 * r))))
        unknown = keep
        expected.append(unknown)
    expected.append(0)
    assert masks_per_step(result) == expected


def test_maskgit_linear_count_and_annealed_noise_changes_the_order():
    result = run({"name": "maskgit", "schedule": "linear", "choice_temperature": 0.0}, steps=4)
    assert masks_per_step(result) == [12, 9, 6, 3, 0]
    orders = {tuple((run({"name": "maskgit", "choice_temperature": 50.0}, steps=4, seed=s).trajectory[1][0] != V)
                    .nonzero().flatten().tolist()) for s in range(5)}
    assert len(orders) > 1


def test_threshold_commits_every_confident_token_at_once_and_at_least_one():
    result = run({"name": "threshold", "threshold": 0.9}, steps=N, temperature=0.0)
    confident = {n for n in range(N) if LEVELS[n] >= 0.9}
    first = set((result.trajectory[1][0] != V).nonzero().flatten().tolist())
    assert first == confident
    # afterwards one per step (nothing else reaches 0.9): NFE = 1 + the rest
    assert result.nfe == 1 + (N - len(confident)) and result.steps == result.nfe
    assert masks_per_step(result)[-1] == 0


def test_threshold_nfe_depends_on_the_data():
    sure = run({"name": "threshold", "threshold": 0.9}, steps=N, denoiser=confident_at([0.99] * N))
    assert sure.nfe == 1
    unsure = run({"name": "threshold", "threshold": 0.9}, steps=N, denoiser=confident_at([0.5] * N))
    assert unsure.nfe == N


@pytest.mark.parametrize("rule", ["maskgit", "low_confidence", "threshold"])
def test_rules_fill_every_free_position_keep_the_prompt_and_respect_top_k(rule):
    sampler = ddkit.build("sampler", "ancestral", steps=5, rule=rule, top_k=1)
    prompt = torch.full((2, N), -1)
    prompt[:, 0], prompt[:, 5] = 3, 2
    result = sampler.sample(confident_at(LEVELS), masked(), prompt=prompt, generator=torch.Generator().manual_seed(1),
                            record_trajectory=True)
    assert bool((result.tokens < V).all())
    assert all(bool((x[:, 0] == 3).all() and (x[:, 5] == 2).all()) for x in result.trajectory)
    free = [n for n in range(N) if n not in (0, 5)]
    assert result.tokens[:, free].tolist() == [[n % V for n in free]] * 2  # top-1: the argmax


def test_time_conditioned_denoiser_gets_the_time_of_the_committed_fraction():
    times = []

    def recording(x_t, t):
        times.append(float(t[0]))
        return confident_at(LEVELS)(x_t, t)

    timed = ddkit.build("parameterization", "mean", time_conditioning=True)
    process = masked("cosine")
    sampler = ddkit.build("sampler", "ancestral", steps=4, rule="low_confidence", cache=False)
    result = sampler.sample(recording, process, num_samples=1, length=N, parameterization=timed,
                            generator=torch.Generator().manual_seed(0), record_trajectory=True)
    clean = [1 - masks_per_step(result)[i] / N for i in range(4)]
    expected = process.schedule.inverse(torch.tensor(clean, dtype=torch.float64))
    torch.testing.assert_close(torch.tensor(times, dtype=torch.float64), expected, rtol=0, atol=1e-6)


def test_bad_parameters_are_refused():
    for kind, bad in (("threshold", {"threshold": 0.0}), ("threshold", {"threshold": 1.5}),
                      ("maskgit", {"choice_temperature": -1.0}), ("maskgit", {"schedule": "exp"}),
                      ("low_confidence", {"remasking": "sometimes"})):
        with pytest.raises(ddkit.ParameterError):
            ddkit.build("unmasking_rule", kind, **bad)
