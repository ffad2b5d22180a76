r"""Score (ratio) parameterization (SEDD, Lou et al. 2024).

The network's outputs are the logarithms of the ratios of marginals

.. math::  s_\theta(x_t, t)_j = \exp f_\theta(x_t, t)_j \approx \frac{q_t(j)}{q_t(x_t)},
           \qquad j \in \{0, \dots, V-1\},

(SEDD's "concrete score"). The entry :math:`j = x_t` of a clean :math:`x_t` is 1 by
definition and is set so (:math:`\log s = 0`); extra states (the mask) need no ratio, they
are absorbing. The score enters the reverse rates
:math:`\hat R_t(x \to y) = R(t)_{y x}\, s_\theta(x, t)_y` (:meth:`ddkit.Process.reverse_rates`),
the analytic step (:meth:`ddkit.Process.score_posterior`) and the ``score_entropy`` loss.

The mean parameterization is the special case in which the ratios come from a clean-token
distribution (:meth:`ddkit.Process.score_from_mean`); for the masked process at
:math:`x_t = m`, :math:`s(m, t)_j = \frac{\alpha_t}{1-\alpha_t}\mu(m, t)_j`. A free score
need not satisfy :math:`\sum_j s(m, t)_j = \frac{\alpha_t}{1-\alpha_t}`, so forward and reverse
processes may disagree (the argument for the mean parameterization); it has no
mean prediction, so samplers that need one (``ancestral``, ``first_hitting``) refuse it:
use ``euler`` or ``analytic``. The true ratios depend on ``t``: time conditioning is on by
default.

Example::

    >>> import torch, ddkit
    >>> score = ddkit.build("parameterization", "score")
    >>> process = ddkit.build("process", "uniform", vocab_size=3)
    >>> net = lambda x_t, t: torch.zeros(*x_t.shape, 3)  # every ratio 1: q_t uniform
    >>> score.log_score(net, torch.tensor([[0, 2]]), torch.tensor([0.5]), process).exp()
    tensor([[[1., 1., 1.],
             [1., 1., 1.]]], dtype=torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

import ddkit


class ScoreParameterization(ddkit.Parameterization):
    predicts = "score"

    def __init__(self, time_conditioning: bool = True):
        self.time_conditioning = bool(time_conditioning)

    def log_score(self, denoiser: ddkit.Denoiser, x_t: Tensor, t: Tensor, process: ddkit.Process) -> Tensor:
        V = process.vocab_size
        log_score = self.network_output(denoiser, x_t, t, process, what="outputs",
                                        meaning="log ratios over the clean vocabulary").to(torch.float64)
        clean = x_t < V
        own = torch.nn.functional.one_hot(x_t.clamp_max(V - 1), V).bool() & clean[..., None]
        return log_score.masked_fill(own, 0.0)

    def log_mean(self, denoiser, x_t, t, process) -> Tensor:
        raise NotImplementedError(
            "the score parameterization predicts ratios, not a clean-token distribution; use it "
            "with the score_entropy loss and the euler or analytic sampler")

    def __repr__(self) -> str:
        return f"ScoreParameterization(time_conditioning={self.time_conditioning})"


@ddkit.hookimpl
def register_parameterizations(register):
    register("score", ScoreParameterization,
             summary="SEDD ratios: outputs are log q_t(j)/q_t(x_t) over clean tokens")
