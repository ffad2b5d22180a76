"""The conformance kit catches broken components: each check fails, with a counterexample,
on a component that breaks exactly its property (and the correct component passes)."""

import re

import pytest
import torch

import ddkit
from ddkit.categorical import sample_categorical
from ddkit.testing import (
    CheckFailure,
    ConformanceError,
    check_process,
    check_sampler,
    check_schedule,
    describe,
    parametrize_with_checks,
    yield_checks,
)
from ddkit.testing import process_checks as pc
from ddkit.testing import sampler_checks as smc
from ddkit.testing import schedule_checks as sc

F64 = torch.float64
Cosine = type(ddkit.build("schedule", "cosine"))
Linear = type(ddkit.build("schedule", "linear"))
Masked = type(ddkit.build("process", "masked", vocab_size=2))


def fails(check, *args, match):
    with pytest.raises(CheckFailure, match=match) as info:
        check(*args)
    return info.value


# -- schedules -------------------------------------------------------------------------------


class WrongDerivative(Cosine):
    def alpha_prime(self, t):
        return 0.9 * super().alpha_prime(t)


class Increasing(Linear):
    def alpha(self, t):
        return t

    def alpha_prime(self, t):
        return torch.ones_like(t)


class OutOfRange(Linear):
    def alpha(self, t):
        return 1.2 - 1.4 * t

    def alpha_prime(self, t):
        return torch.full_like(t, -1.4)


class Shifted(Linear):
    def alpha(self, t):
        return 0.95 - 0.9 * t

    def alpha_prime(self, t):
        return torch.full_like(t, -0.9)


class BadInverse(Cosine):
    def inverse(self, alpha):
        return 1.0 - alpha


class Float32(Cosine):
    def alpha(self, t):
        return super().alpha(t).float()


class BatchDependent(Cosine):
    def alpha(self, t):
        return super().alpha(t) + 0.0 * t + 1e-3 * (t.mean() - t)


class NaNDerivative(Cosine):
    def alpha_prime(self, t):
        return torch.where(t > 0.5, torch.nan, super().alpha_prime(t))


class Learnable(ddkit.Schedule):
    r""":math:`\alpha_t = 1 - t^k`, :math:`k = e^{\theta}` learnable."""

    invertible = True

    def __init__(self, detach=False):
        super().__init__()
        self.log_k = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))
        self.detach = detach

    def k(self):
        return self.log_k.exp().detach() if self.detach else self.log_k.exp()

    def alpha(self, t):
        return 1.0 - t ** self.k()

    def alpha_prime(self, t):
        return -self.k() * t ** (self.k() - 1.0)

    def inverse(self, alpha):
        return (1.0 - alpha).clamp(0, 1) ** (1.0 / self.k())


@pytest.mark.parametrize("schedule,check,match", [
    (WrongDerivative(), sc.check_schedule_derivative, "central finite difference"),
    (Increasing(), sc.check_schedule_monotone, "non-increasing"),
    (OutOfRange(), sc.check_schedule_alpha_in_unit_interval, r"in \[0, 1\]"),
    (Shifted(), sc.check_schedule_endpoints, "alpha\\(0\\) must be within"),
    (BadInverse(), sc.check_schedule_inverse, r"inverse\(alpha\(t\)\) must return t"),
    (Float32(), sc.check_schedule_elementwise, "float64"),
    (BatchDependent(), sc.check_schedule_elementwise, "one time at a time"),
    (NaNDerivative(), sc.check_schedule_finite, "must not be NaN"),
    (Learnable(detach=True), sc.check_schedule_gradients, "does not depend on the trainable"),
], ids=lambda x: type(x).__name__ if isinstance(x, ddkit.Schedule) else None)
def test_schedule_checks_catch_broken_schedules(schedule, check, match):
    failure = fails(check, schedule, match=match)
    assert failure.counterexample or "float64" in str(failure)
    report = check_schedule(schedule, raise_on_failure=False)
    assert check.__name__ in [r.name for r in report.problems]


def test_learnable_schedule_passes_including_gradients():
    report = check_schedule(Learnable())
    assert "check_schedule_gradients" in [r.name for r in report.results]


# -- processes -------------------------------------------------------------------------------


class WrongPosterior(Masked):
    def posterior_probs(self, x_t, mean, s, t):
        return super().posterior_probs(x_t, mean, torch.as_tensor(s) * 0.9, t)


class SwappedMarginal(Masked):
    def marginal_probs(self, x0, t):
        return super().marginal_probs(x0, 1.0 - torch.as_tensor(t, dtype=F64))


class InvertedSampling(Masked):
    def sample_marginal(self, x0, t, *, generator=None):
        a = self._alpha(ddkit.process.per_token(t, x0))
        u = torch.rand(x0.shape, generator=generator, dtype=F64)
        return torch.where(u > a, x0, torch.full_like(x0, self.mask_id))


class TimeDifferenceTransitions(Masked):
    def transition_matrix(self, s, t):
        keep = 1.0 - 0.5 * (torch.as_tensor(t, dtype=F64) - torch.as_tensor(s, dtype=F64))
        return self._keep_matrix(keep)


class DoubledRates(Masked):
    def rate_matrix(self, t):
        return 2.0 * super().rate_matrix(t)


class NegatedRates(Masked):
    def rate_matrix(self, t):
        return -super().rate_matrix(t)


class WrongDiscreteWeight(Masked):
    def discrete_elbo(self, x0, x_t, log_mean, s, t):
        return 1.1 * super().discrete_elbo(x0, x_t, log_mean, s, t)


class WrongContinuousWeight(Masked):
    def continuous_elbo(self, x0, x_t, log_mean, t):
        t_ = ddkit.process.per_token(t, x0)
        weight = -self.schedule.alpha_prime(t_) / (1.0 - self._alpha(t_) ** 2)
        return weight * self._masked_nll(x0, x_t, log_mean)


class ZeroPriorKL(Masked):
    def prior_kl(self, x0):
        return torch.zeros(x0.shape, dtype=F64)


class UniformPrior(Masked):
    def prior_probs(self):
        return torch.full((self.num_states,), 1.0 / self.num_states, dtype=F64)


class NotIdentityAtEqualTimes(Masked):
    def transition_matrix(self, s, t):
        q = super().transition_matrix(s, t)
        same = (torch.as_tensor(s) == torch.as_tensor(t))[..., None, None]
        return torch.where(same, 0.99 * q + 0.01 * torch.full_like(q, 1.0 / q.shape[-1]), q)


class LeakyMask(Masked):
    def transition_matrix(self, s, t):
        q = super().transition_matrix(s, t).clone()
        q[..., self.mask_id, 0] += 0.01
        q[..., self.mask_id, self.mask_id] -= 0.01
        return q

    def marginal_matrix(self, t):
        return self.transition_matrix(torch.zeros_like(torch.as_tensor(t, dtype=F64)), t)


class FirstPositionTimePosterior(Masked):
    """Right for one time per sequence; given a time per position, reads the first one."""

    def posterior_probs(self, x_t, mean, s, t):
        s, t = (torch.as_tensor(v, dtype=F64) for v in (s, t))
        if t.dim() == 2:
            s, t = s[:, :1].expand_as(s), t[:, :1].expand_as(t)
        return super().posterior_probs(x_t, mean, s, t)


class TransposedReverseRates(Masked):
    """R(t)[x_t, y] s_y instead of R(t)[y, x_t] (the row of the forward generator)."""

    def reverse_rates(self, x_t, score, t):
        V, S = self.vocab_size, self.num_states
        rates = self.rate_matrix(ddkit.process.per_token(t, x_t))  # [B, N, S, S]
        forward_row = rates.gather(-2, x_t[..., None, None].expand(*x_t.shape, 1, S)).squeeze(-2)
        row = torch.zeros_like(forward_row)
        row[..., :V] = forward_row[..., :V] * score
        row = row.scatter(-1, x_t[..., None], 0.0)
        return row.scatter(-1, x_t[..., None], -row.sum(-1, keepdim=True))


class UnscaledScoreFromMean(Masked):
    r"""Returns :math:`\mu` at the mask, forgetting the factor :math:`\alpha_t/(1-\alpha_t)`."""

    def score_from_mean(self, x_t, mean, t):
        masked = (x_t == self.mask_id)[..., None]
        return torch.where(masked, mean.to(F64), super().score_from_mean(x_t, mean, t))


class HalfwayScorePosterior(Masked):
    """The analytic step to the midpoint of (s, t) instead of s."""

    def score_posterior(self, x_t, score, s, t):
        middle = (torch.as_tensor(s, dtype=F64) + torch.as_tensor(t, dtype=F64)) / 2
        return super().score_posterior(x_t, score, middle, t)


class ScoreEntropyWithoutConstant(Masked):
    r"""Leaves out :math:`r\log r - r` (constant in the score, so the gradients are right, but
    the value is neither :math:`\ge 0` nor the bound)."""

    def score_entropy(self, x0, x_t, log_score, t):
        t_ = ddkit.process.per_token(t, x_t)
        alpha = self.schedule.alpha(t_)
        ratio, beta = alpha / (1 - alpha), -self.schedule.alpha_prime(t_) / alpha
        constant = torch.where(x_t == self.mask_id, beta * (torch.xlogy(ratio, ratio) - ratio), 0.0)
        return super().score_entropy(x0, x_t, log_score, t) - constant


@pytest.mark.parametrize("process,check,match", [
    (FirstPositionTimePosterior(3, "cosine"), pc.check_process_posterior_bayes,
     "a different (s, t) at every position"),
    (TransposedReverseRates(3, "cosine"), pc.check_process_reverse_rates, "R(t)[y, x_t] s_y"),
    (UnscaledScoreFromMean(3, "cosine"), pc.check_process_score_from_mean, "Q(t)[x0, j] / Q(t)[x0, x_t]"),
    (HalfwayScorePosterior(3, "cosine"), pc.check_process_score_posterior, "exact reverse transition"),
    (ScoreEntropyWithoutConstant(3, "cosine"), pc.check_process_score_entropy, "from the dense matrices"),
], ids=lambda x: type(x).__name__ if isinstance(x, ddkit.Process) else None)
def test_per_position_and_score_checks_catch_what_the_other_checks_let_through(process, check, match):
    """Each broken process fails exactly its check, with a readable message and the position's
    time in the counterexample, and passes every other check of the kit."""
    failure = fails(check, process, match=re.escape(match))
    assert failure.counterexample["t"] is not None
    report = check_process(process, raise_on_failure=False)
    assert [r.name for r in report.problems] == [check.__name__]
    assert f"{check.__name__} failed for {describe(process)}" in report.problems[0].message


def test_score_entropy_check_reports_a_negative_value():
    class Negative(Masked):
        def score_entropy(self, x0, x_t, log_score, t):
            return -super().score_entropy(x0, x_t, log_score, t)

    report = check_process(Negative(3, "cosine"), raise_on_failure=False)
    assert "check_process_score_entropy" in [r.name for r in report.problems]


def test_score_checks_apply_only_where_extra_states_are_absorbing():
    """A process whose extra state jumps back to clean tokens has no score form (the reverse
    rates would need its ratio): the score checks and the generic ELBO check do not apply."""

    class Leaky(ddkit.Process):
        rates = torch.tensor([[-1.0, 0.0, 1.0], [0.0, -1.0, 1.0], [0.5, 0.5, -1.0]], dtype=F64)

        def __init__(self):
            super().__init__(2, ddkit.build("schedule", "linear"))

        @property
        def num_states(self):
            return 3

        def rate_matrix(self, t):
            return torch.as_tensor(t, dtype=F64)[..., None, None] * 0 + self.rates

    names = [n for n, _ in yield_checks(Leaky())]
    assert "check_process_reverse_rates" not in names
    assert "check_process_continuous_elbo_is_limit" not in names
    assert {"check_process_score_from_mean", "check_process_reverse_rates", "check_process_score_posterior",
            "check_process_score_entropy", "check_process_continuous_elbo_is_limit"} <= {
        n for n, _ in yield_checks(ddkit.build("process", "uniform", vocab_size=3))}


@pytest.mark.parametrize("process,check,match", [
    (WrongPosterior(3, "cosine"), pc.check_process_posterior_bayes, "Bayes' rule"),
    (SwappedMarginal(3, "cosine"), pc.check_process_marginal_closed_form, "dense Q\\(t\\)\\[x0\\]"),
    (InvertedSampling(3, "cosine"), pc.check_process_marginal_sampling, "Hoeffding bound"),
    (TimeDifferenceTransitions(3, "cosine"), pc.check_process_chapman_kolmogorov, "Chapman-Kolmogorov"),
    (DoubledRates(3, "cosine"), pc.check_process_kolmogorov_equations, "forward equation"),
    (DoubledRates(3, "cosine"), pc.check_process_expm_of_integrated_rates, "expm"),
    (NegatedRates(3, "cosine"), pc.check_process_rate_matrix_is_generator, "non-negative"),
    (WrongDiscreteWeight(3, "cosine"), pc.check_process_discrete_elbo_is_posterior_kl, "KL of the posteriors"),
    (WrongContinuousWeight(3, "cosine"), pc.check_process_continuous_elbo_is_limit, "discrete_elbo"),
    (ZeroPriorKL(3, "loglinear"), pc.check_process_prior_kl, "prior_kl"),
    (UniformPrior(3, "cosine"), pc.check_process_prior_reached, "prior at t = 1"),
    (UniformPrior(3, "cosine"), pc.check_process_absorbing, "all mass on the mask"),
    (NotIdentityAtEqualTimes(3, "cosine"), pc.check_process_identity_at_equal_times, "identity"),
    (LeakyMask(3, "cosine"), pc.check_process_absorbing, "mask is absorbing"),
], ids=lambda x: type(x).__name__ if isinstance(x, ddkit.Process) else None)
def test_process_checks_catch_broken_processes(process, check, match):
    failure = fails(check, process, match=match)
    assert failure.counterexample
    report = check_process(process, raise_on_failure=False)
    assert check.__name__ in [r.name for r in report.problems]


def test_rates_that_do_not_commute_use_the_time_ordered_product():
    """A process with R(t) = beta(t) G(t) where G rotates between two generators: the check
    switches to the product integral, which a correct dense solution passes."""

    class Rotating(ddkit.Process):
        A = torch.tensor([[-1.0, 1.0, 0.0], [0.0, -1.0, 1.0], [1.0, 0.0, -1.0]], dtype=F64)
        B = torch.tensor([[-2.0, 0.0, 2.0], [1.0, -1.0, 0.0], [0.0, 3.0, -3.0]], dtype=F64)

        def __init__(self):
            super().__init__(3, ddkit.build("schedule", "linear"))

        def rate_matrix(self, t):
            t = torch.as_tensor(t, dtype=F64)[..., None, None]
            return (1 - t) * self.A + t * self.B

        def transition_matrix(self, s, t, steps=200):
            """dQ/du = Q R(u) from Q(s, s) = I, by classical Runge-Kutta (error O(h^4))."""
            s, t = torch.broadcast_tensors(torch.as_tensor(s, dtype=F64), torch.as_tensor(t, dtype=F64))
            h = ((t - s) / steps)[..., None, None]
            q = torch.eye(3, dtype=F64).expand(*s.shape, 3, 3)
            u = s.clone()
            for _ in range(steps):
                k1 = q @ self.rate_matrix(u)
                k2 = (q + h / 2 * k1) @ self.rate_matrix(u + h[..., 0, 0] / 2)
                k3 = (q + h / 2 * k2) @ self.rate_matrix(u + h[..., 0, 0] / 2)
                k4 = (q + h * k3) @ self.rate_matrix(u + h[..., 0, 0])
                q = q + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
                u = u + h[..., 0, 0]
            return q

    process = Rotating()
    assert not pc._rates_commute(process.rate_matrix(torch.tensor([0.1, 0.5, 0.9])))
    pc.check_process_expm_of_integrated_rates(process)
    pc.check_process_kolmogorov_equations(process)


# -- samplers --------------------------------------------------------------------------------


class OneShot(ddkit.Sampler):
    """Unmasks every free position in one denoiser call (a conforming sampler), with switches
    that each break one property."""

    requires = frozenset({"absorbing"})

    def __init__(self, bug=None):
        self.bug = bug
        self.parameterization = ddkit.build(
            "parameterization", {"name": "mean", "time_conditioning": bug == "time_goes_up"})

    def sample(self, denoiser, process, *, num_samples=None, length=None, prompt=None,
               generator=None, device=None, record_trajectory=False):
        if self.bug == "clamps_prompt" and prompt is not None:
            prompt = prompt.long().clamp(-1, process.vocab_size - 1)
        x, fixed = self.initial_state(process, num_samples=num_samples, length=length, prompt=prompt,
                                      generator=generator, device=device)
        calls = ddkit.DenoiserCalls(denoiser, process, self.parameterization)
        trajectory = [x.clone()]
        for t in (1.0, 0.5) if self.bug == "time_goes_up" else (1.0,):
            log_mean = calls(x, torch.full((x.shape[0],), 1.5 - t if self.bug == "time_goes_up" else t))
        if self.bug == "mixes_rows":
            log_mean = log_mean.roll(1, dims=0)
        if self.bug == "changes_default_dtype":
            torch.set_default_dtype(torch.float64)
        probs = log_mean.exp()
        if self.bug == "needs_float32":
            probs = torch.from_numpy(denoiser(x, torch.zeros(x.shape[0])).numpy()).softmax(-1)
            calls.nfe += 1
        if self.bug == "ignores_denoiser":
            probs = torch.ones_like(probs)
        new = sample_categorical(probs, generator=None if self.bug == "global_rng" else generator)
        if self.bug == "leaves_masks":
            new[:, 0] = process.mask_id
        if self.bug == "overwrites_prompt":
            new = (new + 1) % process.vocab_size
        x = torch.where(fixed & (self.bug != "overwrites_prompt"), x, new)
        trajectory.append(x.clone())
        nfe = calls.nfe + (1 if self.bug == "counts_wrong" else 0)
        return ddkit.SampleResult(tokens=x, nfe=nfe, steps=1,
                                  trajectory=trajectory if record_trajectory else None, fixed=fixed)


PROCESS = ddkit.build("process", "masked", vocab_size=3, schedule="cosine")


def test_conforming_one_shot_sampler_passes():
    assert check_sampler(OneShot(), PROCESS).ok


@pytest.mark.parametrize("bug,check,match", [
    ("leaves_masks", smc.check_sampler_output, "no mask or extra state"),
    ("counts_wrong", smc.check_sampler_nfe_counts_denoiser_calls, "number of denoiser calls"),
    ("overwrites_prompt", smc.check_sampler_fixed_positions, "fixed prompt token was changed"),
    ("ignores_denoiser", smc.check_sampler_point_mass_data, "must be y"),
    ("global_rng", smc.check_sampler_deterministic_under_seed, "global RNG"),
    ("mixes_rows", smc.check_sampler_batch_permutation_equivariance, "must not depend on the other rows"),
    ("changes_default_dtype", smc.check_sampler_dtype_and_device, "default dtype"),
    ("needs_float32", smc.check_sampler_dtype_and_device, None),
    ("time_goes_up", smc.check_sampler_time_argument, "must not increase"),
    ("clamps_prompt", smc.check_sampler_rejects_invalid_prompt, "must raise ValueError"),
])
def test_sampler_checks_catch_broken_samplers(bug, check, match):
    default = torch.get_default_dtype()
    try:
        report = check_sampler(OneShot(bug), PROCESS, raise_on_failure=False)
    finally:
        torch.set_default_dtype(default)
    failed = {r.name: r.message for r in report.problems}
    assert check.__name__ in failed
    if match is not None:
        assert match in failed[check.__name__]
    assert f"failed for {describe((OneShot(bug), PROCESS))}" in failed[check.__name__]


TIMED = {"name": "mean", "time_conditioning": True}


class WrongTime(ddkit.Sampler):
    """Ancestral sampling with a time-conditioned parameterization whose denoiser receives
    ``wrong(t)`` instead of the current time (it ignores the parameterization's time handling)."""

    def __init__(self, wrong):
        self.inner = ddkit.build("sampler", "ancestral", steps=8, parameterization=TIMED)
        self.parameterization, self.wrong = self.inner.parameterization, wrong

    def __repr__(self):
        return "WrongTime()"

    def sample(self, denoiser, process, **kwargs):
        return self.inner.sample(lambda x_t, t: denoiser(x_t, self.wrong(t)), process, **kwargs)


@pytest.mark.parametrize("process", [ddkit.build("process", "masked", vocab_size=3, schedule="cosine"),
                                     ddkit.build("process", "uniform", vocab_size=3, schedule="cosine")],
                         ids=["masked", "uniform"])
@pytest.mark.parametrize("wrong,others", [(torch.zeros_like, []), (lambda t: 1.0 - t, ["check_sampler_time_argument"])],
                         ids=["zero", "one_minus_t"])
def test_time_conditioned_check_catches_a_sampler_that_feeds_the_wrong_time(process, wrong, others):
    """Every other check passes a sampler that feeds t = 0 (its t is constant, and the
    point-mass denoiser ignores t); the time-conditioned check names the impossible call."""
    report = check_sampler(WrongTime(wrong), process, raise_on_failure=False)
    problems = {r.name: r.message for r in report.problems}
    assert sorted(problems) == sorted(["check_sampler_time_conditioned_denoiser", *others])
    message = problems["check_sampler_time_conditioned_denoiser"]
    assert "cannot produce from the data at the time it was given" in message
    assert "t = 0.0" in message and "state = " in message
    assert check_sampler(WrongTime(lambda t: t), process).ok  # the same sampler with the right time


def test_time_conditioned_check_applies_with_time_conditioning_only():
    timed = ddkit.build("sampler", "ancestral", steps=4, parameterization=TIMED)
    untimed = ddkit.build("sampler", "ancestral", steps=4)
    assert "check_sampler_time_conditioned_denoiser" in [n for n, _ in yield_checks((timed, PROCESS))]
    assert "check_sampler_time_conditioned_denoiser" not in [n for n, _ in yield_checks((untimed, PROCESS))]


# -- the runner ------------------------------------------------------------------------------


def test_failure_message_names_check_component_and_counterexample():
    with pytest.raises(ConformanceError) as info:
        check_process(WrongPosterior(3, "cosine"))
    text = str(info.value)
    assert "check_process_posterior_bayes failed for WrongPosterior(vocab_size=3, schedule=CosineSchedule())" in text
    assert "counterexample:" in text and "s = " in text and "expected = " in text
    assert info.value.report.problems[0].name == "check_process_posterior_bayes"


def test_expected_failures_are_reported_with_their_reason():
    reason = "posterior is deliberately shifted in this test"
    report = check_process(WrongPosterior(3, "cosine"),
                           expected_failures={"check_process_posterior_bayes": reason})
    assert report.ok
    xfailed = [r for r in report.results if r.status == "xfailed"]
    assert [(r.name, r.reason) for r in xfailed] == [("check_process_posterior_bayes", reason)]
    assert "expected failure (posterior is deliberately shifted" in report.summary()


def test_stale_unknown_or_unexplained_expected_failures_are_errors():
    with pytest.raises(ConformanceError, match="passed but is marked as an expected failure"):
        check_schedule(ddkit.build("schedule", "cosine"),
                       expected_failures={"check_schedule_monotone": "stale"})
    with pytest.raises(ValueError, match="not checks that apply"):
        check_schedule(ddkit.build("schedule", "cosine"), expected_failures={"check_schedule_monotonic": "typo"})
    with pytest.raises(ValueError, match="needs a reason"):
        check_schedule(ddkit.build("schedule", "cosine"), expected_failures={"check_schedule_monotone": " "})


def test_a_crashing_component_is_a_failure_with_its_exception():
    class Crashing(Cosine):
        def inverse(self, alpha):
            raise RuntimeError("boom")

    report = check_schedule(Crashing(), raise_on_failure=False)
    (problem,) = report.problems
    assert problem.name == "check_schedule_inverse" and "RuntimeError: boom" in problem.message


def test_yield_checks_dispatches_and_refuses_a_lone_sampler():
    names = [name for name, _ in yield_checks(ddkit.build("schedule", "linear"))]
    assert names[0] == "check_schedule_elementwise" and "check_schedule_inverse" in names
    assert [n for n, _ in yield_checks(ddkit.build("schedule", "linear"))] == names
    with pytest.raises(TypeError, match=r"\(sampler, process\)"):
        list(yield_checks(ddkit.build("sampler", "first_hitting")))
    with pytest.raises(TypeError, match="cannot check"):
        list(yield_checks(42))


def test_applicability_follows_declared_capabilities():
    class NotInvertible(Cosine):
        invertible = False

    assert "check_schedule_inverse" not in [n for n, _ in yield_checks(NotInvertible())]
    assert "check_schedule_gradients" in [n for n, _ in yield_checks(Learnable())]

    class NotAbsorbing(Masked):
        capabilities = frozenset()

    names = [n for n, _ in yield_checks(NotAbsorbing(3))]
    assert "check_process_absorbing" not in names
    assert "check_process_continuous_elbo_is_limit" in names

    class VariableLength(OneShot):
        capabilities = frozenset({"variable_length"})

    names = [n for n, _ in yield_checks((VariableLength(), PROCESS))]
    assert "check_sampler_fixed_positions" not in names and "check_sampler_output" in names


def test_parametrize_with_checks_marks_expected_failures():
    broken = WrongPosterior(3, "cosine")
    decorator = parametrize_with_checks(
        [broken, ddkit.build("schedule", "cosine")],
        expected_failures=lambda c: {"check_process_posterior_bayes": "known"} if c is broken else None)
    argnames, params = decorator.args
    assert argnames == ("component", "check")
    ids = [p.id for p in params]
    assert "WrongPosterior(vocab_size=3, schedule=CosineSchedule())-check_process_posterior_bayes" in ids
    marked = [p for p in params if p.marks]
    assert len(marked) == 1 and marked[0].marks[0].kwargs["reason"] == "known"
    assert marked[0].marks[0].kwargs["strict"] is True
    with pytest.raises(ValueError, match="not checks that apply"):
        parametrize_with_checks([broken], expected_failures={"check_nothing": "x"})
