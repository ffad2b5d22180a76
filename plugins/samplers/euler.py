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

Shared with :mod:`ddkit.plugins.samplers.analytic` (both are
:class:`ddkit.sampler.TransitionSampler` s):

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

import torch

import ddkit
from ddkit import steps
from ddkit.sampler import TransitionSampler


class EulerSampler(TransitionSampler):
    def start(self, state):
        schedule = state.process.schedule
        if state.calls.parameterization.predicts == "score" and float(schedule.alpha(torch.ones((), dtype=torch.float64)).min()) <= 0:
            # beta_1 = -alpha'/alpha is infinite: any positive ratio a network outputs gives an
            # infinite rate, and every position would jump in the first step
            raise ValueError("euler with the score parameterization needs a schedule with alpha_1 > 0 "
                             "(the reverse rates at alpha_t = 0 are infinite), e.g. loglinear; or use "
                             "the mean parameterization")
        super().start(state)

    def transition_probs(self, out, x, process, s, t, last, *, score):
        # the last step is the final denoising step (SEDD's): the analytic step to s = 0
        probs = steps.analytic_probs if last else steps.euler_probs
        return probs(process, out, x, s, t, score=score)


@ddkit.hookimpl
def register_samplers(register):
    register("euler", EulerSampler,
             summary="tau-leaping: one Euler step of the reverse CTMC rates per grid step, at most one jump")
