r"""Continuous-time negative ELBO (MD4 / MDLM), a Monte-Carlo estimate in nats per token.

.. math::  \mathcal L_\infty = \int_0^1 \mathbb E_{q(x_t \mid x_0)}\Big[\sum_n
           \ell_n(x_0, x_t, t)\Big]\,dt \;\ge\; -\log p_\theta(x_0)

where :math:`\ell_n` is the process's integrand (:meth:`ddkit.Process.continuous_elbo`); for
the masked process :math:`\ell_n = \frac{-\alpha'_t}{1-\alpha_t}\delta_{x^n_t,m}
(-\log\mu^n_\theta(x_t)_{x^n_0})`. One time per sequence, drawn iid or antithetically from
:math:`[t_{min}, 1]`; the estimate is :math:`(1 - t_{min})\,\ell_n`. Omitted: the piece of
the integral below :math:`t_{min}` and the prior term (zero when :math:`\alpha_1 = 0`).

``complementary_masks`` (masked process, training): each sequence is noised twice with one
set of uniforms :math:`u_n`, at :math:`t` (:math:`x^n_t = x^n_0` iff :math:`u_n < \alpha_t`)
and at :math:`t'` with :math:`\alpha_{t'} = 1 - \alpha_t` (:math:`x^n_{t'} = x^n_0` iff
:math:`u_n \ge \alpha_t`, i.e. :math:`1 - u_n < \alpha_{t'}`): the two masks are complements,
so every token carries a loss term in one of them, and each copy alone is a draw of
:math:`q(x_t \mid x_0)` at its own time. :math:`t' = g(t)` is not uniform (except for the linear
schedule, :math:`t' = 1 - t`), so its term is divided by its density, the change of variables
:math:`|dt/dt'| = \alpha'_{t'}/\alpha'_t`:

.. math::  \hat L = \tfrac12 (1 - t_{min}) \Big[\ell(x_t, t)
           + \frac{\alpha'_t}{\alpha'_{t'}}\,\ell(x_{t'}, t')\Big],

unbiased for :math:`\tfrac12\big(\int_{t_{min}}^1 + \int_0^{g(t_{min})}\big)` of the
integrand. One denoiser call over :math:`2B` rows (halve ``train.batch_size`` for the same
cost). Evaluation uses the plain estimator (:meth:`ContinuousELBO.evaluation`).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor


import ddkit
from ddkit.plugins.processes.masked import check_complementary


class ContinuousELBO(ddkit.ContinuousTimeLoss):
    def __init__(self, *args, complementary_masks: Annotated[bool, Field(
            description="noise each sequence twice with complementary masks (masked process; training)")] = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.complementary_masks = bool(complementary_masks)
        if self.complementary_masks:
            check_complementary(self.process)

    def integrand(self, denoiser: ddkit.Denoiser, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        log_mean = self.parameterization.log_mean(denoiser, x_t, t, self.process)
        return self.process.continuous_elbo(x0, x_t, log_mean, t)

    def evaluation(self) -> ContinuousELBO:
        if not self.complementary_masks:
            return self
        return ContinuousELBO(self.process, self.parameterization, self.time_sampling, self.t_min)

    def forward(self, denoiser: ddkit.Denoiser, x0: Tensor, generator: torch.Generator | None = None) -> ddkit.LossOutput:
        if not self.complementary_masks:
            return super().forward(denoiser, x0, generator)
        t = ddkit.sample_times(x0.shape[0], method=self.time_sampling, t_min=self.t_min, generator=generator,
                               device=x0.device)
        x_t, x_other, t_other, weight = self.process.sample_complementary(x0, t, generator=generator)
        nats = self.integrand(denoiser, torch.cat([x0, x0]), torch.cat([x_t, x_other]), torch.cat([t, t_other]))
        first, second = nats.chunk(2)
        second = second * weight[:, None].to(second.dtype)
        return ddkit.LossOutput(nats=(1.0 - self.t_min) * 0.5 * (first + second), t=t)


@ddkit.hookimpl
def register_losses(register):
    register("continuous_elbo", ContinuousELBO,
             summary="continuous-time NELBO, weight -alpha'/(1-alpha) (MD4/MDLM)")
