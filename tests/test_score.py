r"""Score (ratio) quantities: the score parameterization, score entropy and its loss, the
reverse rates and the analytic (Tweedie) step, and the hybrid loss.

Independent references:

* a single-position data distribution :math:`p_0` over ``V`` tokens, pushed forward with the
  dense matrices: :math:`q_t = p_0^\top \bar Q(t)`, true ratios :math:`q_t(j)/q_t(x)`, exact
  reverse transition :math:`q(x_s = y \mid x_t = x) = q_s(y)\bar Q(s,t)_{yx}/q_t(x)`;
* the time reversal of the Kolmogorov forward equation, :math:`\sum_x q_t(x)\hat R_t(x \to y)
  = -(q_t^\top R(t))_y`;
* :math:`\frac1h \mathrm{KL}` of one reverse step of the rates against the dense posterior;
* the lecture's relation (slide "Relation to Score Entropy Loss"): with
  :math:`s(m, t)_j = \frac{\alpha_t}{1-\alpha_t}\mu(m, t)_j` score entropy is the MD4 objective.
"""

import functools

import pytest
import torch

import ddkit
from ddkit.process import Process

F64 = torch.float64


def processes():
    return {
        "masked": ddkit.build("process", "masked", vocab_size=4, schedule="cosine"),
        "uniform": ddkit.build("process", "uniform", vocab_size=4, schedule="loglinear"),
        "gaussian": ddkit.build("process", "matrix", vocab_size=4, generator="gaussian", width=0.5),
        "mask_uniform": ddkit.build("process", "matrix", vocab_size=4, generator="mask_uniform",
                                    uniform_fraction=0.3, schedule="loglinear"),
    }


NAMES = sorted(processes())
P0 = torch.tensor([0.5, 0.1, 0.3, 0.1], dtype=F64)  # one-position data distribution


def marginal(process, t):
    return P0 @ process.marginal_matrix(torch.tensor(t, dtype=F64))[: process.vocab_size]


def reachable_states(process, t):
    return (marginal(process, t) > 0).nonzero()[:, 0]


def true_score(process, x, t):
    """[len(x), V]: q_t(j)/q_t(x) by the dense marginal."""
    q = marginal(process, t)
    return q[: process.vocab_size][None, :] / q[x][:, None]


def exact_posterior(process, x, mean, t):
    """p(x0 | x_t = x) for the one-position data: P0(x0) q(x|x0) normalised."""
    q = process.marginal_matrix(torch.tensor(t, dtype=F64))[: process.vocab_size, x].T  # [K, V]
    joint = P0[None] * q
    return joint / joint.sum(-1, keepdim=True)


@pytest.mark.parametrize("name", NAMES)
def test_score_from_the_exact_posterior_is_the_true_ratio(name):
    process = processes()[name]
    for t in (0.2, 0.5, 0.9):
        x = reachable_states(process, t)
        mean = exact_posterior(process, x, None, t)
        score = process.score_from_mean(x[:, None], mean[:, None], torch.full((len(x),), t, dtype=F64))[:, 0]
        # exact wherever a reverse rate uses it, R(t)[j, x] > 0 (for a clean x of the masked
        # process no x0 but x itself can produce x, and no rate leaves x)
        used = process.rate_matrix(torch.tensor(t, dtype=F64))[: process.vocab_size, x].T > 0
        assert bool(used.any())
        assert torch.allclose(score[used], true_score(process, x, t)[used], rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_reverse_rates_with_the_true_score_reverse_the_forward_equation(name):
    process = processes()[name]
    for t in (0.3, 0.7):
        x = reachable_states(process, t)
        tt = torch.full((len(x),), t, dtype=F64)
        rates = process.reverse_rates(x[:, None], true_score(process, x, t)[:, None], tt)[:, 0]  # [K, S]
        assert torch.allclose(rates.sum(-1), torch.zeros(len(x), dtype=F64), atol=1e-12)
        q = marginal(process, t)
        forward = q @ process.rate_matrix(torch.tensor(t, dtype=F64))  # dq/dt
        assert torch.allclose(q[x] @ rates, -forward, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_analytic_step_with_the_true_score_is_the_exact_reverse_transition(name):
    process = processes()[name]
    for s, t in ((0.1, 0.4), (0.5, 0.9), (0.0, 0.3)):
        x = reachable_states(process, t)
        ss, tt = torch.full((len(x),), s, dtype=F64), torch.full((len(x),), t, dtype=F64)
        probs = process.score_posterior(x[:, None], true_score(process, x, t)[:, None], ss, tt)[:, 0]
        q_st = process.transition_matrix(torch.tensor(s, dtype=F64), torch.tensor(t, dtype=F64))
        exact = marginal(process, s)[None, :] * q_st[:, x].T / marginal(process, t)[x][:, None]
        assert torch.allclose(probs, exact, atol=1e-10)
        # with the mean parameterization the same step is the process's posterior
        mean = exact_posterior(process, x, None, t)
        assert torch.allclose(process.posterior_probs(x[:, None], mean[:, None], ss, tt)[:, 0], exact, atol=1e-10)


def test_analytic_step_is_singular_at_alpha_zero_with_a_clear_error():
    masked = ddkit.build("process", "masked", vocab_size=3)  # alpha_1 = 0
    x = torch.full((1, 2), 3)
    with pytest.raises(ValueError, match="singular"):
        masked.score_posterior(x, torch.ones(1, 2, 3, dtype=F64), torch.tensor([0.5]), torch.tensor([1.0]))


@pytest.mark.parametrize("name", NAMES)
def test_score_entropy_is_the_limit_of_the_kl_of_one_reverse_step(name):
    r""":math:`\frac1h\mathrm{KL}(q(x_{t-h} \mid x_t, x_0) \,\|\, e_{x_t} + h\hat R_t(x_t))` tends
    to the score entropy, for an arbitrary (not data-consistent) score."""
    process = processes()[name]
    V, S, h, t = process.vocab_size, process.num_states, 1e-6, 0.6
    gen = torch.Generator().manual_seed(0)
    tt = torch.full((1,), t, dtype=F64)
    support = process.marginal_matrix(tt[0])[:V] > 0  # [x0, x_t]
    x0, x_t = support.nonzero(as_tuple=True)
    x0, x_t = x0[None], x_t[None]
    log_score = torch.randn(*x_t.shape, V, generator=gen, dtype=F64)
    rates = process.reverse_rates(x_t, log_score.exp(), tt)
    step = torch.nn.functional.one_hot(x_t, S).to(F64) + h * rates
    true = Process.posterior_probs(process, x_t, torch.nn.functional.one_hot(x0, V), tt - h, tt)
    kl = (torch.xlogy(true, true) - torch.xlogy(true, step)).sum(-1) / h
    entropy = process.score_entropy(x0, x_t, log_score, tt)
    assert torch.allclose(entropy, kl, rtol=1e-4, atol=1e-5)
    assert bool((entropy >= -1e-12).all())
    # zero exactly at the true conditional ratio r_y = q(y | x0) / q(x_t | x0)
    q = process.marginal_matrix(tt[0])[:V]
    ratio = q[x0[0], :V] / q[x0[0], x_t[0]][:, None]
    assert torch.allclose(process.score_entropy(x0, x_t, ratio.log()[None], tt),
                          torch.zeros_like(entropy), atol=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "loglinear"])
def test_score_entropy_with_the_mean_substitution_is_the_masked_elbo(schedule):
    r"""The lecture's relation: :math:`s(m, t)_j = \frac{\alpha_t}{1-\alpha_t}\mu(m, t)_j` turns
    score entropy into :math:`\frac{-\alpha'_t}{1-\alpha_t}(-\log\mu_{x_0})` at every masked
    token (and 0 at clean ones), pointwise."""
    V = 5
    process = ddkit.build("process", "masked", vocab_size=V, schedule=schedule)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, V, (6, 7), generator=gen)
    x_t = torch.where(torch.rand(6, 7, generator=gen) < 0.5, x0, V)
    t = 0.02 + 0.96 * torch.rand(6, generator=gen, dtype=F64)
    log_mean = torch.log_softmax(torch.randn(6, 7, V, generator=gen, dtype=F64), -1)
    alpha = process.schedule.alpha(t)[:, None, None]
    substituted = torch.log(alpha / (1 - alpha)) + log_mean  # log s(m, t)_j, written by hand
    entropy = process.score_entropy(x0, x_t, substituted, t)
    elbo = process.continuous_elbo(x0, x_t, log_mean, t)
    masked = x_t == V
    assert torch.allclose(entropy[masked], elbo[masked], rtol=1e-12)
    assert torch.equal(entropy[~masked], torch.zeros_like(entropy[~masked]))
    assert bool((elbo[masked] > 0).all())


def test_score_entropy_loss_with_the_mean_parameterization_equals_continuous_elbo():
    """Same draws (same seed), same per-token nats: the loss-level form of the relation, for
    the masked and the uniform process."""
    for process in (ddkit.build("process", "masked", vocab_size=4),
                    ddkit.build("process", "uniform", vocab_size=4, schedule="cosine")):
        param = {"name": "mean", "time_conditioning": True}
        entropy = ddkit.build("loss", "score_entropy", process=process, parameterization=param)
        elbo = ddkit.build("loss", "continuous_elbo", process=process, parameterization=param)
        net = torch.nn.Linear(1, 4, dtype=F64)
        denoiser = lambda x_t, t: net(x_t[..., None].to(F64)) + t[:, None, None]  # noqa: E731
        x0 = torch.randint(0, 4, (8, 5), generator=torch.Generator().manual_seed(0))
        a = entropy(denoiser, x0, generator=torch.Generator().manual_seed(3))
        b = elbo(denoiser, x0, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.t, b.t) and a.bound
        assert torch.allclose(a.nats, b.nats.to(F64), rtol=1e-5, atol=1e-8)  # float32 log-softmax
        a.loss.backward()  # gradients reach the network through the ratios
        assert net.weight.grad is not None and bool(torch.isfinite(net.weight.grad).all())


def test_score_parameterization():
    score = ddkit.build("parameterization", "score")
    assert score.predicts == "score" and score.time_conditioning
    uniform = ddkit.build("process", "uniform", vocab_size=3)
    out = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # a 4th column is dropped
    x_t = torch.tensor([[0, 1, 2], [2, 2, 0]])
    seen = {}

    def net(x, t):
        seen["t"] = t
        return out

    log_score = score.log_score(net, x_t, torch.tensor([0.3, 0.8]), uniform)
    assert log_score.dtype == F64 and log_score.shape == (2, 3, 3)
    expected = out[..., :3].double().scatter(-1, x_t[..., None], 0.0)  # own ratio is 1
    assert torch.equal(log_score, expected)
    assert torch.equal(seen["t"], torch.tensor([0.3, 0.8]))
    untimed = ddkit.build("parameterization", "score", time_conditioning=False)
    untimed.log_score(net, x_t, torch.tensor([0.3, 0.8]), uniform)
    assert bool((seen["t"] == 0).all())
    masked = ddkit.build("process", "masked", vocab_size=3)
    log_at_mask = score.log_score(lambda x, t: out[..., :3], torch.full((2, 3), 3), torch.ones(2), masked)
    assert torch.equal(log_at_mask, out[..., :3].double())  # the mask has no own ratio to fix
    with pytest.raises(ValueError, match="log ratios over the clean vocabulary"):
        score.log_score(lambda x, t: out[..., :2], x_t, torch.ones(2), uniform)
    with pytest.raises(NotImplementedError, match="euler or analytic"):
        score.log_mean(net, x_t, torch.ones(2), uniform)


def test_mean_parameterization_provides_the_implied_score():
    mean = ddkit.build("parameterization", "mean", time_conditioning=True)
    uniform = ddkit.build("process", "uniform", vocab_size=3)
    logits = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    x_t, t = torch.randint(0, 3, (2, 4)), torch.tensor([0.2, 0.7])
    log_score = mean.log_score(lambda x, tt: logits, x_t, t, uniform)
    implied = uniform.score_from_mean(x_t, torch.softmax(logits.double(), -1), t)
    assert torch.allclose(log_score.exp(), implied, rtol=1e-6)


def test_denoiser_calls_cache_only_what_cannot_depend_on_t():
    uniform = ddkit.build("process", "uniform", vocab_size=3)
    calls = {"n": 0}

    def net(x, t):
        calls["n"] += 1
        return torch.zeros(*x.shape, 3)

    x = torch.zeros(1, 2, dtype=torch.long)
    mean_calls = ddkit.DenoiserCalls(net, uniform, ddkit.build("parameterization", "mean"), cache=True)
    mean_calls.log_score(x, torch.tensor([0.5]))
    mean_calls.log_score(x, torch.tensor([0.4]))
    assert mean_calls.nfe == 2  # ratios from a mean depend on t through the process
    score_calls = ddkit.DenoiserCalls(net, uniform, ddkit.build("parameterization", "score",
                                                                time_conditioning=False), cache=True)
    score_calls.log_score(x, torch.tensor([0.5]))
    score_calls.log_score(x, torch.tensor([0.4]))
    assert score_calls.nfe == 1
    # the mean and its logits are cached separately: a different method calls the denoiser
    mean_calls.mean_logits(x, torch.tensor([0.5]))
    mean_calls.mean_logits(x, torch.tensor([0.4]))
    mean_calls.log_mean(x, torch.tensor([0.4]))
    assert mean_calls.nfe == 4


def test_score_entropy_loss_trains_the_score_parameterization():
    """A few Adam steps on single-token data lower the score-entropy loss, evaluated on the
    same seeded draws before and after."""
    torch.manual_seed(0)
    process = ddkit.build("process", "uniform", vocab_size=4, schedule="loglinear")
    loss_fn = ddkit.build("loss", "score_entropy", process=process)
    table = torch.nn.Parameter(torch.zeros(4, 4))
    denoiser = lambda x_t, t: table[x_t]  # noqa: E731 - log ratios from the state alone
    x0 = torch.multinomial(P0.float(), 512, replacement=True).reshape(512, 1)
    opt = torch.optim.Adam([table], lr=0.2)

    def evaluate():
        with torch.no_grad():
            return loss_fn(denoiser, x0.repeat(8, 1), generator=torch.Generator().manual_seed(9)).nats_per_token

    before = evaluate()
    for step in range(40):
        opt.zero_grad()
        loss_fn(denoiser, x0, generator=torch.Generator().manual_seed(step)).loss.backward()
        opt.step()
    assert evaluate() < before - 0.02  # deterministic: the same seeded draws before and after


def test_hybrid_loss_is_the_bound_plus_weighted_cross_entropy():
    process = ddkit.build("process", "uniform", vocab_size=4, schedule="cosine")
    param = {"name": "mean", "time_conditioning": True}
    logits = torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(0))
    denoiser = lambda x_t, t: logits + x_t[..., None] * 0.3  # noqa: E731
    x0 = torch.randint(0, 4, (6, 5), generator=torch.Generator().manual_seed(1))
    for num_steps, reference in ((10, "discrete_elbo"), (None, "continuous_elbo")):
        extra = {"num_steps": num_steps} if num_steps else {}
        hybrid = ddkit.build("loss", "hybrid", process=process, parameterization=param, weight=0.25,
                             num_steps=num_steps)
        vb = ddkit.build("loss", reference, process=process, parameterization=param, **extra)
        out = hybrid(denoiser, x0, generator=torch.Generator().manual_seed(2))
        base = vb(denoiser, x0, generator=torch.Generator().manual_seed(2))
        assert torch.equal(out.t, base.t)
        # the same draws: recompute x_t with the generator in the same state
        gen = torch.Generator().manual_seed(2)
        if num_steps:
            ddkit.sample_steps(6, num_steps, method="antithetic", generator=gen)
        else:
            ddkit.sample_times(6, method="antithetic", t_min=1e-4, generator=gen)
        x_t = process.sample_marginal(x0, out.t, generator=gen)
        log_mean = torch.log_softmax(denoiser(x_t, out.t), -1)
        cross_entropy = -log_mean.gather(-1, x0[..., None])[..., 0]
        assert torch.allclose(out.nats, base.nats + 0.25 * cross_entropy.to(base.nats.dtype), atol=1e-6)
        zero = ddkit.build("loss", "hybrid", process=process, parameterization=param, weight=0.0,
                           num_steps=num_steps)(denoiser, x0, generator=torch.Generator().manual_seed(2))
        assert torch.allclose(zero.nats, base.nats)
    with pytest.raises(ddkit.ParameterError):
        ddkit.build("loss", "hybrid", process=process, weight=-1.0)


# -- the masked closed forms and the generic continuous ELBO ---------------------------------


def _masked_inputs(V=5, schedule="cosine"):
    """Per-token distinct times (with t = 0, t = 1 and impossible clean tokens among them)."""
    process = ddkit.build("process", "masked", vocab_size=V, schedule=schedule)
    gen = torch.Generator().manual_seed(4)
    B, N = 6, 7
    x0 = torch.randint(0, V, (B, N), generator=gen)
    x_t = torch.where(torch.rand(B, N, generator=gen) < 0.5, x0, V)
    x_t[0, 0] = (x0[0, 0] + 1) % V  # a clean token that x0 cannot produce
    t = torch.rand(B, N, generator=gen, dtype=F64)
    t[0, 1:3] = torch.tensor([0.0, 1.0], dtype=F64)
    mean = torch.softmax(torch.randn(B, N, V, generator=gen, dtype=F64), -1)
    mean[1, 1, 2] = 0.0
    score = torch.rand(B, N, V, generator=gen, dtype=F64)
    score[2, 2, 1] = 0.0
    return process, x0, x_t, t, mean, score


@pytest.mark.parametrize("schedule", ["cosine", "loglinear", "geometric"])
def test_masked_score_path_equals_the_dense_computation_with_per_token_times(schedule):
    """Every position has its own time: the closed forms agree with the generic dense code of
    ddkit.Process (one matrix per distinct time) entry by entry."""
    process, x0, x_t, t, mean, score = _masked_inputs(schedule=schedule)
    assert len(t.unique()) == t.numel()
    for name, args in [("score_from_mean", (x_t, mean, t)), ("reverse_rates", (x_t, score, t)),
                       ("score_entropy", (x0, x_t, score.log(), t)),
                       ("continuous_elbo", (x0, x_t, mean.log(), t.clamp(1e-3, 1 - 1e-3)))]:
        closed, dense = getattr(process, name)(*args), getattr(Process, name)(process, *args)
        torch.testing.assert_close(closed.to(F64), dense.to(F64), rtol=1e-12, atol=0.0, msg=name)
    inner = t.clamp(0.01, 0.99)
    s = inner * torch.rand(t.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    torch.testing.assert_close(process.score_posterior(x_t, score, s, inner),
                               Process.score_posterior(process, x_t, score, s, inner), rtol=0, atol=1e-13)
    if float(process.schedule.alpha(torch.ones((), dtype=F64))) == 0.0:
        for method in (process.score_posterior, functools.partial(Process.score_posterior, process)):
            with pytest.raises(ValueError, match="singular"):  # alpha_t = 0 < alpha_s at t = 1
                method(x_t, score, s, t)


def test_masked_score_path_builds_no_dense_matrices(monkeypatch):
    """Vectorised: no method of the masked score path builds a per-time S x S matrix (the
    generic code loops over distinct times, ~250x slower than the ELBO at B = 4000)."""
    process, x0, x_t, t, mean, score = _masked_inputs()

    def dense(*args):
        raise AssertionError("the masked score path built a dense matrix")

    for method in ("transition_matrix", "marginal_matrix", "rate_matrix"):
        monkeypatch.setattr(process, method, dense)
    s = 0.5 * t
    process.score_from_mean(x_t, mean, t)
    process.reverse_rates(x_t, score, t)
    process.score_posterior(x_t, score, s, t.clamp_max(0.99))
    process.score_entropy(x0, x_t, score.log(), t)


class DenseOnly(Process):
    """A process known only through its dense matrices: everything else is ddkit.Process's
    generic code (a new plugin process that writes no closed forms)."""

    def __init__(self, inner):
        super().__init__(inner.vocab_size, inner.schedule)
        self.inner, self.mask_id = inner, inner.mask_id

    @property
    def num_states(self):
        return self.inner.num_states

    def transition_matrix(self, s, t):
        return self.inner.transition_matrix(s, t)

    def marginal_matrix(self, t):
        return self.inner.marginal_matrix(t)

    def rate_matrix(self, t):
        return self.inner.rate_matrix(t)

    def prior_probs(self):
        return self.inner.prior_probs()


@pytest.mark.parametrize("closed,matrix_generator", [
    (ddkit.build("process", "masked", vocab_size=4, schedule="cosine"), "absorbing"),
    (ddkit.build("process", "uniform", vocab_size=4, schedule="cosine"), "uniform"),
], ids=["masked", "uniform"])
def test_generic_continuous_elbo_equals_the_closed_forms(closed, matrix_generator):
    """The base class's continuous ELBO from the dense matrices equals the MD4 closed form of
    the masked process and the O(V) closed form of the uniform one, and the matrix process
    (the generic code on its matrix exponentials) with the matching generator agrees too, at
    per-token times."""
    V = closed.vocab_size
    gen = torch.Generator().manual_seed(6)
    x0 = torch.randint(0, V, (5, 6), generator=gen)
    t = 0.02 + 0.96 * torch.rand(5, 6, generator=gen, dtype=F64)
    x_t = closed.sample_marginal(x0, t, generator=gen)
    log_mean = torch.log_softmax(torch.randn(5, 6, V, generator=gen, dtype=F64), -1)
    if closed.mask_id is not None:  # the mean parameterization's carry-over at clean tokens
        carry = torch.full_like(log_mean, float("-inf")).scatter(-1, x_t.clamp_max(V - 1)[..., None], 0.0)
        log_mean = torch.where((x_t < V)[..., None], carry, log_mean)
    expected = closed.continuous_elbo(x0, x_t, log_mean, t)
    generic = DenseOnly(closed).continuous_elbo(x0, x_t, log_mean, t)
    matrix = ddkit.build("process", "matrix", vocab_size=V, generator=matrix_generator, schedule="cosine")
    assert bool((expected > 0).any())
    torch.testing.assert_close(generic, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(matrix.continuous_elbo(x0, x_t, log_mean, t), expected, rtol=1e-8, atol=1e-10)
    # per-sequence times too
    torch.testing.assert_close(DenseOnly(closed).continuous_elbo(x0, x_t, log_mean, t[:, 0]),
                               closed.continuous_elbo(x0, x_t, log_mean, t[:, 0]), rtol=1e-9, atol=1e-12)


def test_the_default_loss_works_for_a_process_with_only_dense_matrices():
    """A new process that writes no ELBO trains with ``continuous_elbo`` out of the box: the
    same draws give the same nats as the masked process's closed form."""
    masked = ddkit.build("process", "masked", vocab_size=4, schedule="cosine")
    logits = torch.randn(8, 5, 4, generator=torch.Generator().manual_seed(7))
    denoiser = lambda x_t, t: logits  # noqa: E731
    x0 = torch.randint(0, 4, (8, 5), generator=torch.Generator().manual_seed(8))
    out = {}
    for name, process in (("closed", masked), ("generic", DenseOnly(masked))):
        loss = ddkit.build("loss", "continuous_elbo", process=process)
        out[name] = loss(denoiser, x0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(out["closed"].t, out["generic"].t)
    torch.testing.assert_close(out["generic"].nats, out["closed"].nats, rtol=1e-5, atol=1e-7)
