r"""Reusable sampler steps: the pieces the built-in samplers are made of, public so that a
new sampler can be assembled from them.

* :func:`unmask_probabilities` and :func:`masked_step`: the masked posterior step, a masked
  token unmasks w.p. :math:`\frac{\alpha_s-\alpha_t}{1-\alpha_t}` and draws its token from the
  filtered mean (one fused kernel, :func:`ddkit.kernels.masked_step`);
* :func:`posterior_step`: any process with a posterior,
  :math:`x_s \sim \sum_{x_0}\mu_\theta(x_0)\,q(x_s \mid x_t, x_0)` over all ``S`` states;
* :func:`analytic_probs` (Tweedie) and :func:`euler_probs` (τ-leaping): transition
  distributions over the ``S`` states for :class:`ddkit.sampler.TransitionSampler`;
* :func:`restrict_to_data` and :func:`filter_jump_targets`: the last step to data, and
  temperature / top-k / top-p applied to where a position jumps;
* :func:`sample_categorical` (float64 inverse CDF, :mod:`ddkit.categorical`).

Every step reads what it needs from a :class:`ddkit.SamplerState`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import kernels
from .categorical import filter_logits, sample_categorical
from .kernels import TokenFilter
from .process import Process
from .sampler import SamplerState
from .schedule import Schedule

__all__ = ["analytic_probs", "euler_probs", "filter_jump_targets", "masked_step", "posterior_step",
           "restrict_to_data", "sample_categorical", "unmask_probabilities"]

_TINY = torch.finfo(torch.float64).tiny


def unmask_probabilities(schedule: Schedule, grid: Tensor) -> Tensor:
    r"""Per step :math:`t_i \to t_{i+1}` of ``grid``, the masked posterior's probability that
    a masked token unmasks, :math:`(\alpha_s - \alpha_t)/(1 - \alpha_t)`; 1 on the last step,
    whose state is data."""
    alpha = schedule.alpha(grid)
    alpha_t, alpha_s = alpha[:-1], alpha[1:]
    p = (alpha_s - alpha_t) / (1.0 - alpha_t).clamp_min(_TINY)
    p[-1] = 1.0
    return p


def masked_step(state: SamplerState, logits: Tensor, p_unmask: Tensor | float, *, tokens: TokenFilter,
                argmax: bool = False, remask_prob: Tensor | float | None = None, backend: str = "auto") -> Tensor:
    """The masked posterior step: each masked token unmasks w.p. ``p_unmask`` (a number, per
    sequence or per position) and draws its token from the filtered mean (``logits``:
    :meth:`ddkit.DenoiserCalls.mean_logits`; ``argmax``: the most likely token); with
    ``remask_prob`` (likewise) each free clean token is masked again w.p. ``remask_prob`` in
    the same pass. Draws two uniforms per position (three with remasking), in that order.
    Fixed positions stay as they are. Returns the new tokens."""
    x, generator = state.x, state.generator
    u_move, u_token, *u_remask = (torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device)
                                  for _ in range(2 if remask_prob is None else 3))
    remasking = {} if remask_prob is None else {"remask_prob": remask_prob, "u_remask": u_remask[0],
                                                "fixed": state.fixed}
    return kernels.masked_step(
        x, logits, p_unmask, u_move, u_token, mask_id=state.process.mask_id, temperature=tokens.temperature,
        top_k=tokens.top_k, top_p=tokens.top_p, argmax=argmax, backend=backend, **remasking)


def posterior_step(state: SamplerState, log_mean: Tensor, s: Tensor, t: Tensor, *, tokens: TokenFilter,
                   last: bool, argmax: bool = False) -> Tensor:
    r"""Any process: draw :math:`x_s` from the posterior over all states (float64,
    ``[B, N, S]``) with the filtered mean; on the ``last`` step extra states (the mask) get
    probability zero. Fixed positions keep their token. Returns the new tokens."""
    process, x = state.process, state.x
    logits = filter_logits(log_mean, temperature=tokens.temperature, top_k=tokens.top_k, top_p=tokens.top_p)
    probs = process.posterior_probs(x, logits.softmax(-1), s, t)
    if last:
        probs[..., process.vocab_size:] = 0.0  # the final state is data
    new = probs.argmax(-1) if argmax else sample_categorical(probs, generator=state.generator)
    return torch.where(state.fixed, x, new)


def analytic_probs(process: Process, out: Tensor, x: Tensor, s: Tensor, t: Tensor, *, score: bool) -> Tensor:
    r"""The Tweedie step :math:`\propto [\hat s^\top \bar Q(s,t)^{-1}]^+_y \bar Q(s,t)_{y x}`
    from the log score (``score=True``), or, from the log mean, the posterior
    :math:`\sum_{x_0}\mu(x_0) q(x_s \mid x_t, x_0)`, which it equals and which stays finite
    where :math:`\bar Q(s, t)` is singular. ``[B, N, S]`` float64."""
    if not score:
        return process.posterior_probs(x, out.to(torch.float64).exp(), s, t)
    probs = process.score_posterior(x, out.to(torch.float64).exp(), s, t)
    empty = probs.sum(-1) <= 0
    if bool(empty.any()):
        b, n = (int(i) for i in empty.nonzero()[0])
        raise ValueError(
            f"the analytic step from t = {float(t[b])} to s = {float(s[b])} gives position "
            f"[{b}, {n}] no probability: the score's clipped Tweedie weights are all zero "
            f"(at alpha_t = 0 the ratios carry no information); use a schedule with "
            f"alpha_1 > 0 or the mean parameterization")
    return probs


def euler_probs(process: Process, out: Tensor, x: Tensor, s: Tensor, t: Tensor, *, score: bool) -> Tensor:
    r"""One Euler (τ-leaping) step of the reverse rates at ``t`` over :math:`h = t - s`, at
    most one jump per position: :math:`p(y) = h \hat R_t(x \to y)` for :math:`y \ne x`, the
    rest stays; where the total jump probability exceeds 1 the position jumps surely, to
    :math:`y` in proportion to the rates. ``out``: the log score (``score=True``) or the log
    mean, whose ratios come from :meth:`ddkit.Process.score_from_mean`."""
    ratios = out.to(torch.float64).exp()
    if not score:
        ratios = process.score_from_mean(x, ratios, t)
    rates = process.reverse_rates(x, ratios, t)
    own = torch.nn.functional.one_hot(x, rates.shape[-1]).bool()
    rates = rates.masked_fill(own, 0.0)
    h = (t - s).to(torch.float64)
    h = (h[:, None] if h.dim() == 1 else h)[..., None]
    jump = h * rates
    total = jump.sum(-1, keepdim=True)  # Lambda, possibly inf
    infinite = torch.isinf(rates)
    largest = rates.amax(-1, keepdim=True).clamp_min(_TINY)
    direction = torch.where(infinite.any(-1, keepdim=True), infinite.to(torch.float64),
                            rates / largest.where(torch.isfinite(largest), 1.0))
    direction = direction / direction.sum(-1, keepdim=True).clamp_min(_TINY)
    certain = total > 1.0
    stay = torch.where(certain, 0.0, 1.0 - total)
    return torch.where(certain, direction, jump) + own * stay


def restrict_to_data(probs: Tensor, vocab_size: int) -> Tensor:
    """The step to :math:`s = 0`: extra states (the mask) get probability zero, the rest is
    renormalised (rows with no data state left stay as they are)."""
    probs = probs.clone()
    probs[..., vocab_size:] = 0.0
    total = probs.sum(-1, keepdim=True)
    return torch.where(total > 0, probs / total.clamp_min(_TINY), probs)


def filter_jump_targets(probs: Tensor, x: Tensor, tokens: TokenFilter) -> Tensor:
    """Temperature, top-k and top-p reshape *where* a position jumps, not *whether*: the jump
    probability :math:`1 - p(x)` is kept and its targets are drawn from the filtered step
    probabilities without the stay entry."""
    if tokens.temperature == 1.0 and tokens.top_k is None and tokens.top_p is None:
        return probs
    own = torch.nn.functional.one_hot(x, probs.shape[-1]).bool()
    stay = probs.masked_fill(~own, 0.0)
    jump = probs.masked_fill(own, 0.0)
    mass = jump.sum(-1, keepdim=True)
    logits = filter_logits(torch.log(jump), temperature=tokens.temperature, top_k=tokens.top_k,
                           top_p=tokens.top_p)
    targets = torch.softmax(logits, -1).nan_to_num(0.0)  # rows without targets: no jump mass
    return stay + mass * targets
