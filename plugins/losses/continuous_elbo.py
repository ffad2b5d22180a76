r"""Continuous-time negative ELBO (MD4 / MDLM), a Monte-Carlo estimate in nats per token.

.. math::  \mathcal L_\infty = \int_0^1 \mathbb E_{q(x_t \mid x_0)}\Big[\sum_n
           \ell_n(x_0, x_t, t)\Big]\,dt \;\ge\; -\log p_\theta(x_0)

where :math:`\ell_n` is the process's integrand (:meth:`ddkit.Process.continuous_elbo`); for
the masked process :math:`\ell_n = \frac{-\alpha'_t}{1-\alpha_t}\delta_{x^n_t,m}
(-\log\mu^n_\theta(x_t)_{x^n_0})`. One time per sequence, drawn iid or antithetically from
:math:`[t_{min}, 1]`; the estimate is :math:`(1 - t_{min})\,\ell_n`. Omitted: the piece of
the integral below :math:`t_{min}` and the prior term (zero when :math:`\alpha_1 = 0`).
"""

from __future__ import annotations

from torch import Tensor

import ddkit


class ContinuousELBO(ddkit.ContinuousTimeLoss):
    def integrand(self, denoiser: ddkit.Denoiser, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        log_mean = self.parameterization.log_mean(denoiser, x_t, t, self.process)
        return self.process.continuous_elbo(x0, x_t, log_mean, t)


@ddkit.hookimpl
def register_losses(register):
    register("continuous_elbo", ContinuousELBO,
             summary="continuous-time NELBO, weight -alpha'/(1-alpha) (MD4/MDLM)")
