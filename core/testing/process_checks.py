r"""Conformance checks for :class:`ddkit.Process`.

Every check compares the process with an *independent* computation on its dense matrices
(so run them on a small vocabulary, ``V`` up to a few dozen). Notation of
:mod:`ddkit.process`: :math:`\bar Q(s, t)_{ij} = q(x_t = j \mid x_s = i)`,
:math:`\bar Q(t) = \bar Q(0, t)`, generator :math:`R(t)`.

* ``check_process_attributes`` — ``vocab_size``, ``num_states`` :math:`\ge V`, ``mask_id``
  an extra state (``V <= mask_id < S``, required for an ``"absorbing"`` process), a prior
  that is a distribution over the ``S`` states.
* ``check_process_transitions_are_distributions`` — :math:`\bar Q(s, t)` and
  :math:`\bar Q(t)` have shape ``[*t.shape, S, S]``, are float64, non-negative with rows
  summing to 1, and :math:`\bar Q(0)` is the identity on clean tokens within total
  variation :data:`~ddkit.testing.schedule_checks.ENDPOINT_TOLERANCE` (:math:`\bar Q(t)` is
  :math:`q(x_t \mid x_0)` from the data, which differs from :math:`\bar Q(0, t)` when the
  schedule has :math:`\alpha_0 < 1`).
* ``check_process_identity_at_equal_times`` — :math:`\bar Q(t, t) = I`.
* ``check_process_chapman_kolmogorov`` — :math:`\bar Q(r, t) = \bar Q(r, s)\,\bar Q(s, t)`
  for :math:`r < s < t`.
* ``check_process_marginal_closed_form`` — :meth:`~ddkit.Process.marginal_probs` equals the
  row :math:`\bar Q(t)_{x_0, :}` for times of shape ``[B]`` and ``[B, N]``.
* ``check_process_marginal_sampling`` — frequencies of
  :meth:`~ddkit.Process.sample_marginal` and :meth:`~ddkit.Process.sample_prior` match
  their probabilities within a Hoeffding bound (failure probability
  :data:`~ddkit.testing.stats.DEFAULT_DELTA`), states of probability 0 never appear, and a
  seeded generator reproduces the draws.
* ``check_process_prior_reached`` — every row of :math:`\bar Q(1)` is within total
  variation :data:`~ddkit.testing.schedule_checks.ENDPOINT_TOLERANCE` of the prior.
* ``check_process_rate_matrix_is_generator`` — :math:`R(t)` is finite, off-diagonal
  :math:`\ge 0`, rows sum to 0.
* ``check_process_kolmogorov_equations`` — forward :math:`\partial_t \bar Q(s,t) =
  \bar Q(s,t) R(t)` and backward :math:`\partial_s \bar Q(s,t) = -R(s)\bar Q(s,t)`, by
  central finite differences.
* ``check_process_expm_of_integrated_rates`` — :math:`\bar Q(s, t) =
  \exp\big(\int_s^t R(u)\,du\big)` with the integral by 32-point Gauss–Legendre and
  ``torch.linalg.matrix_exp``. This identity holds only when the rates commute,
  :math:`[R(u), R(v)] = 0` (e.g. :math:`R(t) = \beta(t) R_0`: masked, uniform, D3PM-style
  processes); the check tests commutation on the quadrature nodes and otherwise compares
  with the time-ordered product of exponentials over 64 sub-intervals (error
  :math:`O(h^2)`, a looser tolerance). Times stay in :math:`[0.05, 0.95]`, away from
  endpoint singularities of the rates.
* ``check_process_posterior_bayes`` — :meth:`~ddkit.Process.posterior_probs` equals Bayes'
  rule by enumeration, :math:`p(x_s \mid x_t) = \sum_{x_0} \mu(x_0)\,
  \frac{\bar Q(s)_{x_0 x_s} \bar Q(s,t)_{x_s x_t}}{\sum_{y} \bar Q(s)_{x_0 y}
  \bar Q(s,t)_{y x_t}}`, for every state :math:`x_t` and random :math:`\mu` supported on
  the clean tokens that can produce :math:`x_t`; with times of shape ``[B]``, one shared
  ``[B, N]`` time, and a different :math:`(s, t)` at every position (a separate code path in
  most processes).
* ``check_process_discrete_elbo_is_posterior_kl`` — :meth:`~ddkit.Process.discrete_elbo`
  equals :math:`\mathrm{KL}(q(x_s \mid x_t, x_0) \,\|\, p_\mu(x_s \mid x_t))` computed by
  enumeration.
* ``check_process_continuous_elbo_is_limit`` (when ``continuous_elbo`` is overridden or the
  generic one, score entropy of the mean's ratios, applies) —
  for a denoiser whose output at a position depends on that position's state only, the
  expectation over :math:`x_t \sim q(\cdot \mid x_0)` (exact, by enumeration) of the
  integrand equals :math:`\lim_{h \to 0} \frac1h \mathbb E\,\mathrm{KL}_{t-h,t}` (checked
  at :math:`h = 10^{-5}`), and the integrand vanishes for the perfect denoiser.
* the score (ratio) form, when every state beyond the clean vocabulary is absorbing (each
  with a different time at every position):

  - ``check_process_score_from_mean`` — :meth:`~ddkit.Process.score_from_mean` equals
    :math:`\sum_{x_0} \mu(x_0) \bar Q(t)_{x_0 j} / \bar Q(t)_{x_0 x_t}` over the clean
    tokens that can produce :math:`x_t`;
  - ``check_process_reverse_rates`` — :meth:`~ddkit.Process.reverse_rates` is
    :math:`R(t)_{y x_t} s_y` off the diagonal and minus their sum on it (random ratios),
    and with the true ratios :math:`q_t(y)/q_t(x)` of a random data law it reverses the
    forward equation, :math:`\sum_x q_t(x) \hat R_t(x \to y) = -(q_t^\top R(t))_y`;
  - ``check_process_score_posterior`` — with the true ratios,
    :meth:`~ddkit.Process.score_posterior` is the exact reverse transition
    :math:`q_s(y) \bar Q(s,t)_{y x_t} / q_t(x_t)` (pairs with :math:`\bar Q(s, t)` invertible);
  - ``check_process_score_entropy`` — :meth:`~ddkit.Process.score_entropy` equals
    :math:`\sum_{y \ne x_t} R(t)_{y x_t}(s_y - r_y \log s_y + r_y \log r_y - r_y)` with
    :math:`r_y = \bar Q(t)_{x_0 y} / \bar Q(t)_{x_0 x_t}` (random ratios), is :math:`\ge 0`
    and 0 at :math:`s = r`.
* ``check_process_prior_kl`` — :meth:`~ddkit.Process.prior_kl` equals
  :math:`\mathrm{KL}(\bar Q(1)_{x_0,:} \,\|\, \text{prior})` from the dense matrices.
* ``check_process_absorbing`` (capability ``"absorbing"``) — the mask row of every
  :math:`\bar Q(s, t)` is :math:`e_m`, a clean token only stays or becomes the mask, it
  stays with probability :math:`\alpha_t/\alpha_s`, :math:`\bar Q(t)_{vv} = \alpha_t`
  (with a vector-valued schedule :math:`\alpha_{t,v}/\alpha_{s,v}` and :math:`\alpha_{t,v}`),
  the prior is :math:`e_m` and :meth:`~ddkit.Process.sample_prior` draws only masks.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

from ..process import Process
from ._failures import assert_close, fail
from .schedule_checks import ENDPOINT_TOLERANCE
from .stats import DEFAULT_DELTA, hoeffding_bound

_F64 = torch.float64
SEED = 20250101
#: times at which matrices are compared (endpoints included)
TIMES = (0.0, 0.05, 0.2, 0.5, 0.8, 0.95, 1.0)
#: times at which rates are evaluated (rates may be infinite at the endpoints)
RATE_TIMES = (0.05, 0.2, 0.5, 0.8, 0.95)
#: draws per case in the sampling checks
NUM_DRAWS = 20_000


def _t(values) -> Tensor:
    return torch.as_tensor(values, dtype=_F64)


def _pairs(times=TIMES) -> tuple[Tensor, Tensor]:
    pairs = [(s, t) for s, t in itertools.product(times, times) if s <= t]
    return _t([p[0] for p in pairs]), _t([p[1] for p in pairs])


def _clean_tokens(process: Process, limit: int = 6) -> list[int]:
    V = process.vocab_size
    if V <= limit:
        return list(range(V))
    return sorted({round(i * (V - 1) / (limit - 1)) for i in range(limit)})


def _check_distribution_rows(q: Tensor, what: str, **context) -> None:
    if not bool(torch.isfinite(q).all()):
        index = tuple(int(i) for i in (~torch.isfinite(q)).nonzero()[0])
        fail(f"{what} must be finite", index=list(index), value=q[index], **context)
    negative = q < -1e-12
    if bool(negative.any()):
        index = tuple(int(i) for i in negative.nonzero()[0])
        fail(f"{what} must be non-negative", index=list(index), value=q[index], **context)
    assert_close(q.sum(-1), torch.ones(q.shape[:-1], dtype=_F64), f"row sums of {what}",
                 atol=1e-10, **context)


# -- structure -------------------------------------------------------------------------------


def check_process_attributes(process: Process) -> None:
    """vocab_size, num_states, mask_id and the prior are consistent."""
    V, S, m = process.vocab_size, process.num_states, process.mask_id
    if not isinstance(V, int) or V < 1:
        fail("vocab_size must be a positive int", vocab_size=V)
    if not isinstance(S, int) or S < V:
        fail("num_states must be an int >= vocab_size", vocab_size=V, num_states=S)
    if m is not None and not (isinstance(m, int) and V <= m < S):
        fail("mask_id must be an extra state: vocab_size <= mask_id < num_states",
             vocab_size=V, num_states=S, mask_id=m)
    if "absorbing" in process.capabilities and m is None:
        fail("a process with capability 'absorbing' must define mask_id")
    prior = process.prior_probs()
    if tuple(prior.shape) != (S,):
        fail("prior_probs() must have shape [num_states]", shape=tuple(prior.shape), num_states=S)
    _check_distribution_rows(prior.to(_F64), "prior_probs()")


def check_process_transitions_are_distributions(process: Process) -> None:
    """Q(s, t) and Q(t) are float64 stochastic matrices of shape [*t.shape, S, S]."""
    S = process.num_states
    s, t = _pairs()
    q = process.transition_matrix(s, t)
    if tuple(q.shape) != (len(s), S, S):
        fail("transition_matrix(s, t) must have shape [*t.shape, S, S]",
             times_shape=tuple(t.shape), shape=tuple(q.shape), num_states=S)
    if q.dtype != _F64:
        fail("transition_matrix must be float64", dtype=str(q.dtype))
    for i in range(len(s)):
        _check_distribution_rows(q[i], "transition_matrix(s, t)", s=s[i], t=t[i])
    grid = process.transition_matrix(s[:6].reshape(2, 3), t[:6].reshape(2, 3))
    if tuple(grid.shape) != (2, 3, S, S):
        fail("transition_matrix with times of shape [B, N] must return [B, N, S, S]",
             shape=tuple(grid.shape))
    assert_close(grid.reshape(6, S, S), q[:6], "transition_matrix on [B, N] times vs flat times",
                 atol=1e-12)
    times = _t(TIMES)
    marginal = process.marginal_matrix(times)
    if tuple(marginal.shape) != (len(times), S, S) or marginal.dtype != _F64:
        fail("marginal_matrix(t) must be float64 of shape [*t.shape, S, S]",
             shape=tuple(marginal.shape), dtype=str(marginal.dtype))
    for i in range(len(times)):
        _check_distribution_rows(marginal[i], "marginal_matrix(t)", t=times[i])
    # Q(t) is q(x_t | x_0) from the data; it equals Q(0, t) only without noise at t = 0
    at_zero = marginal[0, : process.vocab_size]
    tv = 0.5 * (at_zero - torch.eye(S, dtype=_F64)[: process.vocab_size]).abs().sum(-1)
    if bool((tv > ENDPOINT_TOLERANCE).any()):
        v = int(tv.argmax())
        fail(f"q(x_0 | data) must be (within total variation {ENDPOINT_TOLERANCE}) the data",
             x0=v, row=at_zero[v], total_variation=tv[v])


def check_process_identity_at_equal_times(process: Process) -> None:
    """Q(t, t) = I."""
    times = _t(TIMES)
    q = process.transition_matrix(times, times)
    eye = torch.eye(process.num_states, dtype=_F64).expand_as(q)
    assert_close(q, eye, "transition_matrix(t, t) vs the identity", atol=1e-12, t=times)


def check_process_chapman_kolmogorov(process: Process) -> None:
    """Q(r, t) = Q(r, s) Q(s, t) for r < s < t."""
    triples = list(itertools.combinations(TIMES, 3))
    r, s, t = (_t([x[i] for x in triples]) for i in range(3))
    direct = process.transition_matrix(r, t)
    composed = process.transition_matrix(r, s) @ process.transition_matrix(s, t)
    for i in range(len(triples)):
        assert_close(direct[i], composed[i], "Chapman-Kolmogorov: Q(r, t) vs Q(r, s) Q(s, t)",
                     atol=1e-9, r=r[i], s=s[i], t=t[i])
    marginal = process.marginal_matrix(s) @ process.transition_matrix(s, t)
    for i in range(len(triples)):
        assert_close(process.marginal_matrix(t[i]), marginal[i],
                     "Chapman-Kolmogorov: Q(t) vs Q(s) Q(s, t)", atol=1e-9, s=s[i], t=t[i])


def check_process_marginal_closed_form(process: Process) -> None:
    """marginal_probs(x0, t) equals the dense row Q(t)[x0, :] for t of shape [B] and [B, N]."""
    gen = torch.Generator().manual_seed(SEED)
    V, S = process.vocab_size, process.num_states
    x0 = torch.randint(0, V, (len(TIMES), 5), generator=gen)
    per_sequence = _t(TIMES)
    per_token_times = _t(TIMES)[torch.randint(0, len(TIMES), x0.shape, generator=gen)]
    for t in (per_sequence, per_token_times):
        probs = process.marginal_probs(x0, t)
        if tuple(probs.shape) != (*x0.shape, S) or probs.dtype != _F64:
            fail("marginal_probs(x0, t) must be float64 of shape [B, N, S]",
                 t_shape=tuple(t.shape), shape=tuple(probs.shape), dtype=str(probs.dtype))
        tt = t if t.dim() == 2 else t[:, None].expand(x0.shape)
        dense = process.marginal_matrix(tt)  # [B, N, S, S]
        expected = torch.gather(dense, -2, x0[..., None, None].expand(*x0.shape, 1, S)).squeeze(-2)
        assert_close(probs, expected, f"marginal_probs vs dense Q(t)[x0] (t of shape {tuple(t.shape)})",
                     atol=1e-12, x0=x0, t=t)


def check_process_marginal_sampling(process: Process) -> None:
    """sample_marginal / sample_prior frequencies match their probabilities (Hoeffding,
    failure probability 1e-6), impossible states never appear, seeds reproduce draws."""
    S = process.num_states
    tokens = torch.tensor(_clean_tokens(process))
    times = (0.2, 0.5, 0.8)
    x0 = tokens.expand(NUM_DRAWS, -1).contiguous()
    per_sequence = [torch.full((NUM_DRAWS,), t, dtype=_F64) for t in times]
    column_times = _t([times[k % len(times)] for k in range(len(tokens))])
    per_token_times = column_times.expand(NUM_DRAWS, -1).contiguous()
    cases = [(t, t[0].expand(len(tokens))) for t in per_sequence] + [(per_token_times, column_times)]
    eps = hoeffding_bound(NUM_DRAWS, DEFAULT_DELTA, num_tests=(len(cases) + 1) * len(tokens) * S)
    for t, column_t in cases:
        x_t = process.sample_marginal(x0, t, generator=torch.Generator().manual_seed(SEED))
        if x_t.shape != x0.shape or x_t.dtype != torch.long:
            fail("sample_marginal must return a LongTensor of x0's shape",
                 shape=tuple(x_t.shape), dtype=str(x_t.dtype))
        if bool(((x_t < 0) | (x_t >= S)).any()):
            fail("sample_marginal returned a state outside 0..S-1", states=x_t.unique())
        again = process.sample_marginal(x0, t, generator=torch.Generator().manual_seed(SEED))
        if not torch.equal(x_t, again):
            fail("sample_marginal with the same generator seed must return the same draws")
        probs = process.marginal_matrix(column_t)[torch.arange(len(tokens)), tokens]  # [K, S]
        freq = torch.nn.functional.one_hot(x_t, S).to(_F64).mean(0)  # [K, S]
        _compare_frequencies(freq, probs, eps, "sample_marginal", x0=tokens, t=column_t)
    prior = process.prior_probs().to(_F64)
    draws = process.sample_prior((NUM_DRAWS,), generator=torch.Generator().manual_seed(SEED))
    if draws.shape != (NUM_DRAWS,) or draws.dtype != torch.long:
        fail("sample_prior(shape) must return a LongTensor of that shape",
             shape=tuple(draws.shape), dtype=str(draws.dtype))
    freq = torch.nn.functional.one_hot(draws, S).to(_F64).mean(0)
    _compare_frequencies(freq[None], prior[None], eps, "sample_prior")


def _compare_frequencies(freq: Tensor, probs: Tensor, eps: float, what: str, **context) -> None:
    impossible = (probs <= 0) & (freq > 0)
    if bool(impossible.any()):
        k, state = (int(i) for i in impossible.nonzero()[0])
        fail(f"{what} drew a state of probability 0", row=k, state=state, frequency=freq[k, state],
             **context)
    gap = (freq - probs).abs()
    if bool((gap > eps).any()):
        k, state = (int(i) for i in torch.unravel_index(gap.argmax(), gap.shape))
        fail(f"{what} frequencies differ from the probabilities by more than the Hoeffding "
             f"bound {eps:.4f} ({NUM_DRAWS} draws, failure probability {DEFAULT_DELTA:g})",
             row=k, state=state, frequency=freq[k, state], probability=probs[k, state], **context)


def check_process_prior_reached(process: Process) -> None:
    """Every row Q(1)[x0, :] is (within ENDPOINT_TOLERANCE in total variation) the prior."""
    V = process.vocab_size
    q1 = process.marginal_matrix(_t(1.0))[:V]
    prior = process.prior_probs().to(_F64)
    tv = 0.5 * (q1 - prior).abs().sum(-1)
    if bool((tv > ENDPOINT_TOLERANCE).any()):
        v = int(tv.argmax())
        fail(f"q(x_1 | x_0) must be the prior at t = 1 (total variation <= {ENDPOINT_TOLERANCE})",
             x0=v, total_variation=tv[v], row=q1[v], prior=prior)


# -- rates -----------------------------------------------------------------------------------


def check_process_rate_matrix_is_generator(process: Process) -> None:
    """R(t) is finite with off-diagonal entries >= 0 and rows summing to 0."""
    S = process.num_states
    times = _t(RATE_TIMES)
    rates = process.rate_matrix(times)
    if tuple(rates.shape) != (len(times), S, S):
        fail("rate_matrix(t) must have shape [*t.shape, S, S]", shape=tuple(rates.shape))
    grid = process.rate_matrix(times[:4].reshape(2, 2))
    if tuple(grid.shape) != (2, 2, S, S):
        fail("rate_matrix with times of shape [B, N] must return [B, N, S, S]", shape=tuple(grid.shape))
    for i, t in enumerate(times):
        r = rates[i]
        if not bool(torch.isfinite(r).all()):
            fail("rate_matrix(t) must be finite for t in (0, 1)", t=t, rates=r)
        scale = 1.0 + float(r.abs().max())
        off = r - torch.diag(torch.diagonal(r))
        if bool((off < -1e-12 * scale).any()):
            j, k = (int(x) for x in (off < -1e-12 * scale).nonzero()[0])
            fail("off-diagonal rates must be non-negative", t=t, row=j, col=k, rate=r[j, k])
        assert_close(r.sum(-1), torch.zeros(S, dtype=_F64), "row sums of rate_matrix(t)",
                     atol=1e-9 * scale, t=t)


def check_process_kolmogorov_equations(process: Process) -> None:
    """d/dt Q(s, t) = Q(s, t) R(t) and d/ds Q(s, t) = -R(s) Q(s, t) (central differences)."""
    h = 1e-5
    pairs = [(s, t) for s, t in itertools.product(RATE_TIMES, RATE_TIMES) if t - s >= 0.05]
    pairs += [(0.0, t) for t in RATE_TIMES]
    s, t = _t([p[0] for p in pairs]), _t([p[1] for p in pairs])
    q = process.transition_matrix(s, t)
    r_t = process.rate_matrix(t)
    d_t = (process.transition_matrix(s, t + h) - process.transition_matrix(s, t - h)) / (2 * h)
    for i in range(len(pairs)):
        scale = 1.0 + float(r_t[i].abs().max())
        assert_close(d_t[i], q[i] @ r_t[i], "forward equation d/dt Q(s,t) vs Q(s,t) R(t)",
                     atol=1e-7 * scale**3, s=s[i], t=t[i])
    inner = s > 0
    s_in, t_in, q_in = s[inner], t[inner], q[inner]
    r_s = process.rate_matrix(s_in)
    d_s = (process.transition_matrix(s_in + h, t_in) - process.transition_matrix(s_in - h, t_in)) / (2 * h)
    for i in range(len(s_in)):
        scale = 1.0 + float(r_s[i].abs().max())
        assert_close(d_s[i], -r_s[i] @ q_in[i], "backward equation d/ds Q(s,t) vs -R(s) Q(s,t)",
                     atol=1e-7 * scale**3, s=s_in[i], t=t_in[i])


def _gauss_legendre(a: float, b: float, n: int) -> tuple[Tensor, Tensor]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    half = (b - a) / 2
    return _t(a + half * (nodes + 1)), _t(half * weights)


def check_process_expm_of_integrated_rates(process: Process) -> None:
    """Q(s, t) = expm(integral of R over [s, t]) when the rates commute; otherwise the
    time-ordered product of exponentials over sub-intervals."""
    pairs = [(s, t) for s, t in itertools.combinations(RATE_TIMES, 2)]
    for s, t in pairs:
        nodes, weights = _gauss_legendre(s, t, 32)
        rates = process.rate_matrix(nodes)  # [32, S, S]
        commute = _rates_commute(rates)
        if commute:
            integrated = (weights[:, None, None] * rates).sum(0)
            expected = torch.linalg.matrix_exp(integrated)
            tolerance, method = 1e-8, "expm of the 32-point Gauss-Legendre integral (rates commute)"
        else:
            edges = torch.linspace(s, t, 65, dtype=_F64)
            expected = torch.eye(process.num_states, dtype=_F64)
            for a, b in zip(edges[:-1].tolist(), edges[1:].tolist()):
                sub_nodes, sub_weights = _gauss_legendre(a, b, 4)
                piece = (sub_weights[:, None, None] * process.rate_matrix(sub_nodes)).sum(0)
                expected = expected @ torch.linalg.matrix_exp(piece)
            tolerance, method = 1e-4, "time-ordered product of 64 exponentials (rates do not commute)"
        assert_close(process.transition_matrix(_t(s), _t(t)), expected,
                     f"transition_matrix(s, t) vs {method}", atol=tolerance, s=s, t=t)


def _rates_commute(rates: Tensor) -> bool:
    picks = rates[[0, len(rates) // 2, -1]]
    scale = float(picks.abs().max()) ** 2 + 1e-300
    for a, b in itertools.combinations(picks, 2):
        if float((a @ b - b @ a).abs().max()) > 1e-10 * scale:
            return False
    return True


# -- posterior and ELBO terms ----------------------------------------------------------------

_POSTERIOR_PAIRS = ((0.0, 0.5), (0.2, 0.6), (0.5, 0.95), (0.4, 1.0), (0.6, 0.6), (0.0, 1.0),
                    (0.05, 0.2))


def _bayes_tables(process: Process, s: float, t: float) -> tuple[Tensor, Tensor]:
    """``(cond, support)``: cond[k, v, j] = q(x_s = j | x_t = k, x_0 = v) by enumeration
    (normalising the joint over x_s, not dividing by Q(t)); support[k, v] = q(x_t = k | x_0 = v) > 0."""
    V = process.vocab_size
    q_s = process.marginal_matrix(_t(s))[:V]  # [V, S]
    q_st = process.transition_matrix(_t(s), _t(t))  # [S, S]
    q_t = process.marginal_matrix(_t(t))[:V]  # [V, S]
    joint = q_s[None, :, :] * q_st.T[:, None, :]  # [k, v, j] = Q(s)[v, j] Q(s,t)[j, k]
    cond = joint / joint.sum(-1, keepdim=True).clamp_min(1e-300)
    return cond, (q_t.T > 0)


class _PositionLayout:
    """Puts ``M`` test cases (each with its own time) at the positions of ``rows`` sequences,
    in a different seeded order in every row, so that no two positions of a row share a case
    and the order of positions says nothing about the time."""

    def __init__(self, cases: int, rows: int, generator: torch.Generator):
        self.order = torch.stack([torch.randperm(cases, generator=generator) for _ in range(rows)])

    def __call__(self, per_case: Tensor) -> Tensor:
        """``[M, ...]`` -> ``[rows, M, ...]``."""
        return per_case[self.order]

    def per_row(self, per_row_case: Tensor) -> Tensor:
        """``[rows, M, ...]`` (row ``r`` and case ``m``) -> the same at the row's positions."""
        return per_row_case[torch.arange(len(self.order))[:, None], self.order]


def _random_means(support: Tensor, rows: int, generator: torch.Generator) -> Tensor:
    """Random distributions over clean tokens, one per (row, state k), on support[k]."""
    raw = torch.rand(rows, *support.shape, generator=generator, dtype=_F64) + 0.05
    raw = raw * support
    return raw / raw.sum(-1, keepdim=True).clamp_min(1e-300)


def check_process_posterior_bayes(process: Process) -> None:
    """posterior_probs(x_t, mu, s, t) equals Bayes' rule by enumeration from dense matrices."""
    gen = torch.Generator().manual_seed(SEED)
    S = process.num_states
    rows = 3
    x_t = torch.arange(S).expand(rows, -1).contiguous()
    for s, t in _POSTERIOR_PAIRS:
        cond, support = _bayes_tables(process, s, t)
        reachable = support.any(-1)  # states x_t that some clean token can produce
        mean = _random_means(support, rows, gen)  # [rows, S, V]
        expected = torch.einsum("rkv,kvj->rkj", mean, cond)
        for s_arg, t_arg in ((_t([s] * rows), _t([t] * rows)),
                             (_t(s).expand(rows, S), _t(t).expand(rows, S))):
            actual = process.posterior_probs(x_t, mean, s_arg, t_arg)
            if tuple(actual.shape) != (rows, S, S):
                fail("posterior_probs must return [B, N, S]", shape=tuple(actual.shape),
                     t_shape=tuple(t_arg.shape))
            for k in reachable.nonzero()[:, 0].tolist():
                assert_close(actual[:, k], expected[:, k],
                             f"posterior_probs vs Bayes' rule by enumeration (t of shape "
                             f"{tuple(t_arg.shape)})", atol=1e-9, s=s, t=t, x_t=k, mean=mean[:, k])
                _check_distribution_rows(actual[:, k], "posterior_probs", s=s, t=t, x_t=k)
    # every position its own (s, t): a posterior that reads one time per row breaks here
    tables = [_bayes_tables(process, s, t) for s, t in _POSTERIOR_PAIRS]
    cases = [(i, k) for i, (_, support) in enumerate(tables) for k in support.any(-1).nonzero()[:, 0].tolist()]
    pair, k = (torch.tensor(c) for c in zip(*cases))
    layout = _PositionLayout(len(cases), rows, gen)
    support = torch.stack([tables[i][1][j] for i, j in cases])  # [M, V]
    cond = torch.stack([tables[i][0][j] for i, j in cases])  # [M, V, S]
    mean = layout.per_row(_random_means(support, rows, gen))  # [rows, M, V]
    s_times, t_times = (_t([p[col] for p in _POSTERIOR_PAIRS])[pair] for col in (0, 1))
    x_t, s, t = layout(k), layout(s_times), layout(t_times)
    expected = torch.einsum("rmv,rmvj->rmj", mean, layout(cond))
    actual = process.posterior_probs(x_t, mean, s, t)
    assert_close(actual, expected, "posterior_probs vs Bayes' rule by enumeration with a different "
                 "(s, t) at every position (t of shape [B, N])", atol=1e-9, s=s, t=t, x_t=x_t, mean=mean)


def check_process_discrete_elbo_is_posterior_kl(process: Process) -> None:
    """discrete_elbo(x0, x_t, log mu, s, t) = KL(q(x_s | x_t, x0) || p_mu(x_s | x_t))."""
    gen = torch.Generator().manual_seed(SEED + 1)
    for s, t in ((0.2, 0.6), (0.5, 0.95), (0.0, 0.5), (0.6, 1.0)):
        cond, support = _bayes_tables(process, s, t)
        ks, vs = support.nonzero(as_tuple=True)  # every (x_t, x_0) pair with q(x_t | x_0) > 0
        mean = _random_means(support, 1, gen)[0][ks]  # [M, V], depends on x_t only
        true = cond[ks, vs]  # [M, S]
        model = torch.einsum("mv,mvj->mj", mean, cond[ks])
        expected = (torch.xlogy(true, true) - torch.xlogy(true, model)).sum(-1)
        actual = process.discrete_elbo(vs[None], ks[None], torch.log(mean)[None],
                                       _t([s]), _t([t]))
        assert_close(actual.reshape(-1), expected,
                     "discrete_elbo vs KL of the posteriors by enumeration",
                     atol=1e-9, rtol=1e-9, s=s, t=t, x0=vs, x_t=ks)


def check_process_continuous_elbo_is_limit(process: Process) -> None:
    """E_{x_t|x0}[continuous_elbo] = lim_{h->0} E_{x_t|x0}[discrete_elbo(t-h, t)] / h, and the
    integrand is 0 for the perfect denoiser."""
    gen = torch.Generator().manual_seed(SEED + 2)
    V = process.vocab_size
    h = 1e-5
    for t in (0.2, 0.5, 0.8):
        q_t = process.marginal_matrix(_t(t))[:V]  # [V, S]
        support = q_t.T > 0  # [S, V]
        states = support.any(-1).nonzero()[:, 0]  # x_t states that can occur
        mean = _random_means(support, 1, gen)[0][states]  # [K, V]: mu depends on x_t only
        x_t = states[:, None].expand(-1, V).contiguous()  # row k: every position in state k
        x0 = torch.arange(V).expand(len(states), -1).contiguous()
        log_mean = torch.log(mean)[:, None, :].expand(-1, V, -1).contiguous()
        times = _t([t] * len(states))
        cont = process.continuous_elbo(x0, x_t, log_mean, times)
        disc = process.discrete_elbo(x0, x_t, log_mean, times - h, times) / h
        weight = q_t[:, states].T  # [K, V] = q(x_t = k | x0 = v)
        possible = weight > 0
        expect_cont = torch.where(possible, weight * cont, 0.0).sum(0)
        expect_disc = torch.where(possible, weight * disc, 0.0).sum(0)
        assert_close(expect_cont, expect_disc,
                     "E[continuous_elbo] vs E[discrete_elbo(t - h, t)] / h (h = 1e-5)",
                     atol=1e-6, rtol=1e-3, t=t, x0=torch.arange(V))
        if bool((expect_cont < -1e-12).any()):
            fail("the expected continuous-time ELBO integrand must be >= 0", t=t,
                 expectation=expect_cont)
        perfect = torch.log(torch.nn.functional.one_hot(x0, V).to(_F64))
        zero = process.continuous_elbo(x0, x_t, perfect, times)
        assert_close(torch.where(possible, zero, 0.0), torch.zeros_like(zero),
                     "continuous_elbo with the perfect denoiser (log mu = log one_hot(x0))",
                     atol=1e-12, t=t, x_t=x_t[:, 0])


# -- the score (ratio) form --------------------------------------------------------------------

#: the score methods of :class:`ddkit.Process` that the score checks exercise
SCORE_METHODS = ("score_from_mean", "reverse_rates", "score_posterior", "score_entropy")


def _data_law(process: Process, generator: torch.Generator) -> Tensor:
    """A random distribution over the clean tokens with full support, ``[V]``."""
    raw = torch.rand(process.vocab_size, generator=generator, dtype=_F64) + 0.05
    return raw / raw.sum()


def _cases(mask: Tensor) -> tuple[Tensor, ...]:
    """The index tuples where ``mask`` is true, in a fixed order (one test case each)."""
    return mask.nonzero(as_tuple=True)


def check_process_score_from_mean(process: Process) -> None:
    """score_from_mean(x_t, mu, t) = sum_x0 mu(x0) Q(t)[x0, j] / Q(t)[x0, x_t] over the x0 that
    can produce x_t, from the dense marginal, with a different t at every position."""
    gen = torch.Generator().manual_seed(SEED + 3)
    V, rows = process.vocab_size, 2
    times = _t(TIMES)
    marginal = process.marginal_matrix(times)[:, :V]  # [T, V, S]
    when, k = _cases((marginal > 0).any(1))  # every state some clean token produces at t
    column = marginal[when, :, k]  # [M, V]: q(x_t = k | x0)
    layout = _PositionLayout(len(k), rows, gen)
    mean = layout.per_row(_random_means(column > 0, rows, gen))  # on the x0 that produce x_t
    weights = torch.where(mean > 0, mean / layout(column).clamp_min(1e-300), 0.0)
    expected = torch.einsum("rmv,rmvj->rmj", weights, layout(marginal[when][..., :V]))
    x_t, t = layout(k), layout(times[when])
    actual = process.score_from_mean(x_t, mean, t)
    if tuple(actual.shape) != (rows, len(k), V) or actual.dtype != _F64:
        fail("score_from_mean must return float64 ratios of shape [B, N, V]", shape=tuple(actual.shape),
             dtype=str(actual.dtype))
    assert_close(actual, expected, "score_from_mean vs sum over x0 of mu(x0) Q(t)[x0, j] / Q(t)[x0, x_t] "
                 "(dense marginal, a different t at every position)", atol=1e-12, rtol=1e-9,
                 t=t, x_t=x_t, mean=mean)


def check_process_reverse_rates(process: Process) -> None:
    """reverse_rates(x_t, s, t) is row x_t of the reverse generator: R(t)[y, x_t] s_y off the
    diagonal, minus their sum on it (random ratios, a different t at every position); with the
    true ratios of a data distribution it reverses the forward equation,
    sum_x q_t(x) Rhat_t(x -> y) = -(q_t R(t))_y."""
    gen = torch.Generator().manual_seed(SEED + 4)
    V, S, rows = process.vocab_size, process.num_states, 2
    times = _t(RATE_TIMES)
    rates = process.rate_matrix(times)  # [T, S, S]
    scale = 1.0 + float(rates.abs().max())
    when, k = _cases(torch.ones(len(times), S, dtype=torch.bool))  # every state at every time
    layout = _PositionLayout(len(k), rows, gen)
    x_t, t = layout(k), layout(times[when])
    score = layout.per_row(torch.exp(torch.randn(rows, len(k), V, generator=gen, dtype=_F64)))
    into = layout(rates[when, :, k])  # [rows, M, S]: R(t)[y, x_t]
    off = torch.zeros(rows, len(k), S, dtype=_F64)
    off[..., :V] = into[..., :V] * score
    off = off.scatter(-1, x_t[..., None], 0.0)
    expected = off.scatter(-1, x_t[..., None], -off.sum(-1, keepdim=True))
    actual = process.reverse_rates(x_t, score, t)
    if tuple(actual.shape) != (rows, len(k), S) or actual.dtype != _F64:
        fail("reverse_rates must return float64 rows of shape [B, N, S]", shape=tuple(actual.shape),
             dtype=str(actual.dtype))
    assert_close(actual, expected, "reverse_rates vs R(t)[y, x_t] s_y from the dense generator (a "
                 "different t at every position)", atol=1e-12 * scale, rtol=1e-9, t=t, x_t=x_t,
                 score=score)
    # the true ratios q_t(y) / q_t(x) of a data distribution: the time reversal of the chain
    q = _data_law(process, gen) @ process.marginal_matrix(times)[:, :V]  # [T, S]
    when, k = _cases(q > 0)
    order = torch.randperm(len(k), generator=gen)  # one sequence, times in no particular order
    when, k = when[order], k[order]
    true = q[when, :V] / q[when, k][:, None]
    reverse = process.reverse_rates(k[None], true[None], times[when][None])[0]  # [M, S]
    flux = torch.zeros(len(times), S, dtype=_F64).index_add_(0, when, q[when, k][:, None] * reverse)
    forward = torch.einsum("ts,tsy->ty", q, rates)  # d/dt q_t = q_t R(t)
    assert_close(flux, -forward, "sum over x of q_t(x) reverse_rates(x -> y) with the true ratios "
                 "q_t(y) / q_t(x) vs -(q_t R(t))_y (the time reversal of the forward equation)",
                 atol=1e-10 * scale, rtol=1e-8, t=times)


def _invertible(matrix: Tensor) -> bool:
    return bool(torch.linalg.cond(matrix) < 1e12)


def check_process_score_posterior(process: Process) -> None:
    """With the true ratios q_t(y) / q_t(x_t) of a data distribution, the analytic step
    score_posterior(x_t, s, s_time, t) is the exact reverse transition
    q(x_s = y | x_t) = q_s(y) Q(s, t)[y, x_t] / q_t(x_t), from the dense matrices, with a
    different (s, t) at every position (pairs with Q(s, t) invertible)."""
    gen = torch.Generator().manual_seed(SEED + 5)
    V, rows = process.vocab_size, 2
    law = _data_law(process, gen)
    pairs = [(s, t) for s, t in _POSTERIOR_PAIRS if t < 1.0
             and _invertible(process.transition_matrix(_t(s), _t(t)))]
    s_times, t_times = _t([p[0] for p in pairs]), _t([p[1] for p in pairs])
    q_s = law @ process.marginal_matrix(s_times)[:, :V]  # [P, S]
    q_t = law @ process.marginal_matrix(t_times)[:, :V]
    q_st = process.transition_matrix(s_times, t_times)  # [P, S, S]
    when, k = _cases(q_t > 0)
    exact = q_s[when] * q_st[when, :, k] / q_t[when, k][:, None]  # [M, S]
    true = q_t[when, :V] / q_t[when, k][:, None]  # [M, V]
    layout = _PositionLayout(len(k), rows, gen)
    x_t, s, t = layout(k), layout(s_times[when]), layout(t_times[when])
    actual = process.score_posterior(x_t, layout(true), s, t)
    assert_close(actual, layout(exact), "score_posterior with the true ratios vs the exact reverse "
                 "transition q_s(y) Q(s, t)[y, x_t] / q_t(x_t) (dense, a different (s, t) at every "
                 "position)", atol=1e-9, s=s, t=t, x_t=x_t)


def check_process_score_entropy(process: Process) -> None:
    """score_entropy(x0, x_t, log s, t) = sum_{y != x_t} R(t)[y, x_t] (s_y - r_y log s_y +
    r_y log r_y - r_y) with r_y = Q(t)[x0, y] / Q(t)[x0, x_t] from the dense matrices (random
    ratios, a different t at every position); it is >= 0, and 0 at the true ratios s = r."""
    gen = torch.Generator().manual_seed(SEED + 6)
    V, rows = process.vocab_size, 2
    times = _t(RATE_TIMES)
    rates = process.rate_matrix(times)  # [T, S, S]
    scale = 1.0 + float(rates.abs().max())
    marginal = process.marginal_matrix(times)[:, :V]  # [T, V, S]
    when, x0, k = _cases(marginal > 0)  # every (x0, x_t) with q(x_t | x0) > 0
    ratio = marginal[when, x0, :V] / marginal[when, x0, k][:, None]  # [M, V]
    weight = rates[when, :V, k].scatter(-1, k.clamp_max(V - 1)[:, None], 0.0)  # R(t)[y, x_t], y != x_t
    weight = torch.where(k[:, None] < V, weight, rates[when, :V, k])
    layout = _PositionLayout(len(k), rows, gen)
    log_score = torch.randn(rows, len(k), V, generator=gen, dtype=_F64)
    r, w = layout(ratio), layout(weight)
    terms = log_score.exp() - r * log_score + torch.xlogy(r, r) - r
    expected = torch.where(w > 0, w * terms, 0.0).sum(-1)
    clean, x_t, t = layout(x0), layout(k), layout(times[when])
    actual = process.score_entropy(clean, x_t, log_score, t)
    assert_close(actual, expected, "score_entropy vs sum over y != x_t of R(t)[y, x_t] (s_y - r_y "
                 "log s_y + r_y log r_y - r_y) from the dense matrices (a different t at every "
                 "position)", atol=1e-10 * scale, rtol=1e-9, t=t, x0=clean, x_t=x_t)
    negative = actual < -1e-12 * scale
    if bool(negative.any()):
        b, n = (int(i) for i in negative.nonzero()[0])
        fail("score_entropy must be >= 0 (a Bregman divergence between the ratios and the true "
             "ones)", value=actual[b, n], t=t[b, n], x0=clean[b, n], x_t=x_t[b, n])
    at_truth = process.score_entropy(clean, x_t, torch.log(r), t)
    assert_close(at_truth, torch.zeros_like(at_truth), "score_entropy at the true ratios "
                 "r_y = Q(t)[x0, y] / Q(t)[x0, x_t] (must be 0)", atol=1e-10 * scale, t=t, x0=clean,
                 x_t=x_t)


def check_process_prior_kl(process: Process) -> None:
    """prior_kl(x0) = KL(Q(1)[x0, :] || prior) from the dense matrices."""
    V = process.vocab_size
    q1 = process.marginal_matrix(_t(1.0))[:V]
    prior = process.prior_probs().to(_F64)
    expected = (torch.xlogy(q1, q1) - torch.xlogy(q1, prior.expand_as(q1))).sum(-1)
    actual = process.prior_kl(torch.arange(V)[None])
    assert_close(actual.reshape(-1), expected, "prior_kl vs dense KL(q(x_1 | x_0) || prior)",
                 atol=1e-9, rtol=1e-9, x0=torch.arange(V))


def check_process_absorbing(process: Process) -> None:
    """The mask is absorbing, clean tokens stay w.p. alpha_t / alpha_s or become the mask,
    the prior is the mask."""
    V, S, m = process.vocab_size, process.num_states, process.mask_id
    s, t = _pairs()
    q = process.transition_matrix(s, t)
    mask_row = torch.nn.functional.one_hot(torch.tensor(m), S).to(_F64).expand(len(s), S)
    assert_close(q[:, m], mask_row, "the mask row of Q(s, t) (the mask is absorbing)", atol=1e-12,
                 s=s, t=t)
    allowed = torch.eye(S, dtype=torch.bool)[:V]
    allowed[:, m] = True
    leak = q[:, :V] * ~allowed
    if bool((leak.abs() > 1e-12).any()):
        i, v, j = (int(x) for x in (leak.abs() > 1e-12).nonzero()[0])
        fail("a clean token may only stay or become the mask", s=s[i], t=t[i], x_s=v, x_t=j,
             probability=q[i, v, j])
    schedule = getattr(process, "schedule", None)
    if schedule is not None and hasattr(schedule, "alpha"):
        vector = getattr(schedule, "vector_size", None) is not None  # alpha_{t, v} for each v

        def by_token(alpha: Tensor) -> Tensor:
            return alpha if vector else alpha[:, None].expand(-1, V)

        a_s, a_t = by_token(schedule.alpha(s)), by_token(schedule.alpha(t))
        keep = torch.where(a_s > 0, a_t / a_s.clamp_min(1e-300), torch.ones_like(a_t))
        stay = torch.diagonal(q[:, :V, :V], dim1=-2, dim2=-1)
        assert_close(stay, keep, "P(clean token v unchanged from s to t) vs alpha_t / alpha_s "
                     "(of token v for a vector schedule)", atol=1e-12, s=s, t=t)
        times = _t(TIMES)
        marginal_stay = torch.diagonal(process.marginal_matrix(times)[:, :V, :V], dim1=-2, dim2=-1)
        assert_close(marginal_stay, by_token(schedule.alpha(times)),
                     "q(x_t = x_0 | x_0) vs alpha_t (of token x_0 for a vector schedule)", atol=1e-12, t=times)
    prior = process.prior_probs().to(_F64)
    assert_close(prior, mask_row[0], "the prior of an absorbing process (all mass on the mask)",
                 atol=1e-12)
    draws = process.sample_prior((4, 7), generator=torch.Generator().manual_seed(SEED))
    if tuple(draws.shape) != (4, 7) or not bool((draws == m).all()):
        fail("sample_prior of an absorbing process must return only the mask id",
             draws=draws, mask_id=m)


def _implements(process: Process, method: str) -> bool:
    return getattr(type(process), method, None) not in (None, getattr(Process, method))


def _score_form_applies(process: Process) -> bool:
    """The score methods exist and the process fits them: every state beyond the clean
    vocabulary is absorbing (its row of R(t) is 0), so no reverse rate needs its ratio."""
    if not all(callable(getattr(process, name, None)) for name in SCORE_METHODS):
        return False
    V, S = process.vocab_size, process.num_states
    if S == V:
        return True
    try:
        rates = process.rate_matrix(_t(0.5))
    except Exception:  # noqa: BLE001 - a broken rate matrix is the rate checks' report
        return True
    return not bool((rates[V:] != 0).any())


def applicable_checks(process: Process) -> list:
    """The checks that apply to ``process``: the score checks when the score form applies
    (every extra state absorbing), the continuous-ELBO check when ``continuous_elbo`` is
    overridden or the generic one (score entropy of the mean's ratios) applies, the
    absorbing-state check only with the ``"absorbing"`` capability."""
    checks = [check_process_attributes, check_process_transitions_are_distributions,
              check_process_identity_at_equal_times, check_process_chapman_kolmogorov,
              check_process_marginal_closed_form, check_process_marginal_sampling,
              check_process_prior_reached, check_process_rate_matrix_is_generator,
              check_process_kolmogorov_equations, check_process_expm_of_integrated_rates,
              check_process_posterior_bayes, check_process_discrete_elbo_is_posterior_kl]
    score_form = _score_form_applies(process)
    if _implements(process, "continuous_elbo") or score_form:
        checks.append(check_process_continuous_elbo_is_limit)
    if score_form:
        checks += [check_process_score_from_mean, check_process_reverse_rates,
                   check_process_score_posterior, check_process_score_entropy]
    checks.append(check_process_prior_kl)
    if "absorbing" in process.capabilities:
        checks.append(check_process_absorbing)
    # the checks compare values: without autograd, a learnable schedule's parameters do not
    # put every matrix on the graph
    return [torch.no_grad()(check) for check in checks]
