r"""Analytic (Tweedie) sampling: SEDD's analytic step of the reverse process.

For each step :math:`t \to s` of the grid, every free position draws from

.. math::  p(x_s = y \mid x_t) \propto \big[\hat s^\top \bar Q(s, t)^{-1}\big]_y^{+}\,
           \bar Q(s, t)_{y, x_t}

(:meth:`ddkit.Process.score_posterior`, :func:`ddkit.steps.analytic_probs`), Tweedie's
formula for discrete diffusion: with the true ratios :math:`\hat s_y = q_t(y)/q_t(x_t)` it is
the exact reverse transition :math:`q(x_s \mid x_t)`, because
:math:`q_s^\top = q_t^\top \bar Q(s,t)^{-1}`; a learned score is clipped at 0. Unlike the
Euler step it allows several jumps within a step and has no time-discretisation error for the
exact score; what is approximated is only that positions are updated independently given
:math:`x_t`.

With the mean parameterization the ratios are :math:`\hat s_y = \sum_{x_0}\mu(x_0)
\bar Q(t)_{x_0 y}/\bar Q(t)_{x_0 x_t}` and the formula reduces, using
:math:`\bar Q(t) = \bar Q(s)\bar Q(s,t)`, to :math:`\sum_{x_0}\mu(x_0)\,q(x_s \mid x_t, x_0)`,
the process's posterior (:meth:`ddkit.Process.posterior_probs`); the sampler computes it that
way, which stays finite where :math:`\bar Q(s, t)` is singular (:math:`\alpha_t = 0`), and then
samples what ``ancestral`` samples. With the score parameterization
:math:`\bar Q(s, t)` must be invertible at every step: at :math:`\alpha_t = 0` the ratios carry
no information, so use a schedule with :math:`\alpha_1 > 0` (SEDD's log-linear one).

Temperature, top-k, top-p, the last step to data, ``final_argmax``, fixed positions, caching
and NFE are those of every :class:`ddkit.sampler.TransitionSampler`.
"""

from __future__ import annotations

import ddkit
from ddkit import steps
from ddkit.sampler import TransitionSampler


class AnalyticSampler(TransitionSampler):
    def transition_probs(self, out, x, process, s, t, last, *, score):
        return steps.analytic_probs(process, out, x, s, t, score=score)


@ddkit.hookimpl
def register_samplers(register):
    register("analytic", AnalyticSampler,
             summary="Tweedie / SEDD analytic step: exact reverse transition for the exact score")
