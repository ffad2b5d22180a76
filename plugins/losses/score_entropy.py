r"""Denoising score entropy (SEDD, Lou et al. 2024; Benton et al. 2024), in nats per token.

.. math::  \mathcal L_{DSE} = \int_0^1 \mathbb E_{q(x_t \mid x_0)} \sum_n \sum_{y \ne x^n_t}
           R(t)_{y, x^n_t}\Big(s_\theta(x_t, t)^n_y - r^n_y \log s_\theta(x_t, t)^n_y
           + r^n_y \log r^n_y - r^n_y\Big)\,dt, \qquad
           r^n_y = \frac{q_t(y \mid x^n_0)}{q_t(x^n_t \mid x^n_0)}

(:meth:`ddkit.Process.score_entropy`; the constant :math:`r \log r - r` makes each term
non-negative and zero at :math:`s = r`). With the prior term
:math:`\mathrm{KL}(q(x_1 \mid x_0) \,\|\, p_1)` it bounds :math:`-\log p_\theta(x_0)` for the
reverse CTMC with rates :math:`R(t)_{y x} s_\theta(x, t)_y`: each term is the limit of
:math:`\frac1h \mathrm{KL}` of one reverse step, so it is the continuous-time ELBO in the
score parameterization. With the mean parameterization
(:math:`s` from :meth:`ddkit.Process.score_from_mean`) it equals ``continuous_elbo``; for
the masked process at a mask, :math:`R(t)_{y m} = \beta_t = -\alpha'_t/\alpha_t`,
:math:`r_y = \frac{\alpha_t}{1-\alpha_t}\delta_{y x_0}` and
:math:`s_y = \frac{\alpha_t}{1-\alpha_t}\mu_y` turn it into
:math:`\frac{-\alpha'_t}{1-\alpha_t}(-\log\mu_{x_0})`, the MD4 objective.

One time per sequence, iid or antithetic on :math:`[t_{min}, 1]`, weighted by
:math:`1 - t_{min}`; omitted: the integral below :math:`t_{min}` and the prior term.
"""

from __future__ import annotations

from torch import Tensor

import ddkit


class ScoreEntropy(ddkit.ContinuousTimeLoss):
    def __init__(self, process: ddkit.Component("process"),
                 parameterization: ddkit.Component("parameterization") = "score", **kwargs):
        super().__init__(process, parameterization, **kwargs)

    def integrand(self, denoiser: ddkit.Denoiser, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        log_score = self.parameterization.log_score(denoiser, x_t, t, self.process)
        return self.process.score_entropy(x0, x_t, log_score, t)


@ddkit.hookimpl
def register_losses(register):
    register("score_entropy", ScoreEntropy,
             summary="denoising score entropy (SEDD), the continuous-time NELBO in ratio form")
