r"""Euler (τ-leaping) sampling of the reverse CTMC (SEDD's Euler sampler; Campbell et al. 2022).

On a time grid (:func:`ddkit.time_grid`) each step :math:`t \to s`, :math:`h = t - s`, holds
the state fixed and takes the reverse rates at :math:`t`,
:math:`\hat R_t(x \to y) = R(t)_{y x}\, s_\theta(x, t)_y`
(:meth:`ddkit.Process.reverse_rates`), with the ratios from the score parameterization or,
for the mean parameterization, implied by :math:`\mu_\theta`
(:meth:`ddkit.Process.score_from_mean`). Every position jumps at most once per step:

.. math::  p(x_s = y \mid x_t = x) = h\,\hat R_t(x \to y) \;(y \ne x), \qquad
           p(x_s = x \mid x_t = x) = 1 - h \sum_{y \ne x} \hat R_t(x \to y),

and where the total jump probability :math:`\Lambda = h\sum_{y \ne x}\hat R_t(x \to y)` exceeds
1 the position jumps surely, to :math:`y` with probability :math:`\hat R_t(x \to y)/\sum`.
The error per step is :math:`O(h^2)`, so the law of the samples approaches the model's as the
number of steps grows (first order). The last step, to :math:`s = 0`, is SEDD's final
denoising step: the analytic (Tweedie) step of :mod:`ddkit.plugins.samplers.analytic`, which
for the mean parameterization draws the clean token from the model's posterior. For a schedule with :math:`\alpha_1 = 0` the masked
rates at :math:`t = 1` are :math:`\beta_1 s = \infty \cdot 0`, taken as 0: the first step
leaves the all-mask state (an :math:`O(h)` error that vanishes with the step size). That holds
for the mean parameterization, whose ratios vanish there; a network that predicts the ratios
itself would get infinite rates at :math:`t = 1`, so the score parameterization is refused
with such a schedule (use one with :math:`\alpha_1 > 0`, e.g. log-linear).

Shared by :mod:`ddkit.plugins.samplers.analytic` (this module's :class:`ReverseStepSampler`):

* temperature, top-k and top-p reshape *where* a position jumps, not *whether*: the jump
  probability :math:`1 - p(x_s = x)` is kept and its targets are drawn from
  :func:`ddkit.categorical.filter_logits` of the step probabilities without the stay entry
  (for the masked process at a mask these are :math:`\propto \mu_\theta`, as in ancestral
  sampling);
* the last step denoises to data: extra states (the mask) get probability zero there, and
  ``final_argmax`` takes the most likely state instead of sampling;
* float64 categorical sampling (:func:`ddkit.categorical.sample_categorical`), fixed positions
  (the prompt) never change, NFE counted by :class:`ddkit.DenoiserCalls`; with ``cache`` and
  a parameterization without time conditioning the denoiser is called only when the tokens
  changed (the ratios are then recomputed from the cached :math:`\mu` at the new ``t``); for
  an absorbing process sampling stops once no free mask remains (nothing can change).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

import ddkit
from ddkit.categorical import filter_logits, sample_categorical

from ._options import GridParams, TokenSamplingParams


class ReverseStepSampler(ddkit.Sampler):
    """A discrete-time walk from :math:`t = 1` to 0 whose step distribution comes from
    :meth:`step_probs` (subclasses); see the module docstring for what is shared."""

    def __init__(self, steps: int = 128, grid: Literal["uniform", "cosine"] = "uniform",
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 cache: bool = True, final_argmax: bool = False,
                 parameterization: ddkit.Parameterization | str = "mean"):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.steps, self.grid = int(steps), grid
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.cache, self.final_argmax = cache, final_argmax
        self.parameterization = ddkit.build("parameterization", parameterization)

    def step_probs(self, out: Tensor, x: Tensor, process: ddkit.Process, s: Tensor, t: Tensor,
                   last: bool) -> Tensor:
        r""":math:`p(x_s \mid x_t = x)` over the ``S`` states, ``[B, N, S]`` float64, from the
        parameterization's output ``out`` (log mean or log score); ``last``: the step to
        :math:`s = 0`."""
        raise NotImplementedError

    def analytic_probs(self, out: Tensor, x: Tensor, process: ddkit.Process, s: Tensor, t: Tensor) -> Tensor:
        r"""The Tweedie step :math:`\propto [\hat s^\top \bar Q(s,t)^{-1}]^+_y \bar Q(s,t)_{y x}`;
        for the mean parameterization it is the posterior :math:`\sum_{x_0}\mu(x_0) q(x_s \mid
        x_t, x_0)` (see :mod:`ddkit.plugins.samplers.analytic`)."""
        if not self._uses_score():
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

    def _uses_score(self) -> bool:
        return getattr(self.parameterization, "predicts", "mean") == "score"

    @torch.no_grad()
    def sample(self, denoiser, process, *, num_samples=None, length=None, prompt=None,
               generator=None, device=None, record_trajectory=False) -> ddkit.SampleResult:
        self.check_process(process)
        x, fixed = self.initial_state(process, num_samples=num_samples, length=length,
                                      prompt=prompt, generator=generator, device=device)
        calls = ddkit.DenoiserCalls(denoiser, process, self.parameterization, cache=self.cache,
                                    output="log_score" if self._uses_score() else "log_mean")
        grid = ddkit.time_grid(self.steps, self.grid, device=x.device)
        trajectory = [x.clone()] if record_trajectory else None
        absorbing = "absorbing" in process.capabilities
        steps_taken = 0
        for i in range(self.steps):
            if absorbing and not bool(((x == process.mask_id) & ~fixed).any()):
                break
            t, s = grid[i].expand(x.shape[0]), grid[i + 1].expand(x.shape[0])
            last = i == self.steps - 1
            probs = self.step_probs(calls(x, t), x, process, s, t, last)
            probs = self._shape(probs, x, process, last)
            # fixed positions keep their token (their own step may be undefined, e.g. a clean
            # token where the process allows only the mask)
            probs = torch.where(fixed[..., None], torch.nn.functional.one_hot(x, probs.shape[-1]).to(probs), probs)
            if last and self.final_argmax:
                new = probs.argmax(-1)
            else:
                new = sample_categorical(probs, generator=generator)
            x = torch.where(fixed, x, new)
            steps_taken = i + 1
            if trajectory is not None:
                trajectory.append(x.clone())
        return ddkit.SampleResult(tokens=x, nfe=calls.nfe, steps=steps_taken,
                                  trajectory=trajectory, fixed=fixed)

    def _shape(self, probs: Tensor, x: Tensor, process: ddkit.Process, last: bool) -> Tensor:
        """Restrict the last step to data, then filter the jump targets."""
        if last:
            probs = probs.clone()
            probs[..., process.vocab_size:] = 0.0
            total = probs.sum(-1, keepdim=True)
            probs = torch.where(total > 0, probs / total.clamp_min(torch.finfo(torch.float64).tiny), probs)
        if self.temperature == 1.0 and self.top_k is None and self.top_p is None:
            return probs
        own = torch.nn.functional.one_hot(x, probs.shape[-1]).bool()
        stay = probs.masked_fill(~own, 0.0)
        jump = probs.masked_fill(own, 0.0)
        mass = jump.sum(-1, keepdim=True)
        logits = filter_logits(torch.log(jump), temperature=self.temperature, top_k=self.top_k,
                               top_p=self.top_p)
        targets = torch.softmax(logits, -1).nan_to_num(0.0)  # rows without targets: no jump mass
        return stay + mass * targets


class EulerSampler(ReverseStepSampler):
    def sample(self, denoiser, process, **kwargs) -> ddkit.SampleResult:
        if self._uses_score() and float(process.schedule.alpha(torch.ones((), dtype=torch.float64))) <= 0:
            # beta_1 = -alpha'/alpha is infinite: any positive ratio a network outputs gives an
            # infinite rate, and every position would jump in the first step
            raise ValueError("euler with the score parameterization needs a schedule with alpha_1 > 0 "
                             "(the reverse rates at alpha_t = 0 are infinite), e.g. loglinear; or use "
                             "the mean parameterization")
        return super().sample(denoiser, process, **kwargs)

    def step_probs(self, out, x, process, s, t, last):
        if last:  # the final denoising step (SEDD's): the analytic step to s = 0
            return self.analytic_probs(out, x, process, s, t)
        if self._uses_score():
            score = out.to(torch.float64).exp()
        else:
            score = process.score_from_mean(x, out.to(torch.float64).exp(), t)
        rates = process.reverse_rates(x, score, t)
        own = torch.nn.functional.one_hot(x, rates.shape[-1]).bool()
        rates = rates.masked_fill(own, 0.0)
        h = (t - s).to(torch.float64)
        h = (h[:, None] if h.dim() == 1 else h)[..., None]
        jump = h * rates
        total = jump.sum(-1, keepdim=True)  # Lambda, possibly inf
        # where Lambda > 1 the position jumps surely, to y in proportion to the rates
        infinite = torch.isinf(rates)
        largest = rates.amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        direction = torch.where(infinite.any(-1, keepdim=True), infinite.to(torch.float64),
                                rates / largest.where(torch.isfinite(largest), 1.0))
        direction = direction / direction.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        certain = total > 1.0
        stay = torch.where(certain, 0.0, 1.0 - total)
        return torch.where(certain, direction, jump) + own * stay


class EulerParams(GridParams, TokenSamplingParams):
    pass


@ddkit.hookimpl
def register_samplers(register):
    register("euler", EulerSampler, params=EulerParams,
             summary="tau-leaping: one Euler step of the reverse CTMC rates per grid step, at most one jump")
