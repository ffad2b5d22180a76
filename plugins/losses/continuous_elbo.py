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

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import ddkit


class ContinuousELBO(ddkit.Loss):
    def __init__(self, process: ddkit.Process, parameterization: ddkit.Parameterization | str = "mean",
                 time_sampling: Literal["iid", "antithetic"] = "antithetic", t_min: float = 1e-4):
        super().__init__()
        self.process = process
        self.parameterization = ddkit.build("parameterization", parameterization)
        self.time_sampling = time_sampling
        self.t_min = float(t_min)
        if isinstance(process.schedule, torch.nn.Module):
            self.schedule = process.schedule  # learnable schedule parameters reach the optimiser

    def forward(self, denoiser: ddkit.Denoiser, x0: Tensor,
                generator: torch.Generator | None = None) -> ddkit.LossOutput:
        t = ddkit.sample_times(x0.shape[0], method=self.time_sampling, t_min=self.t_min,
                               generator=generator, device=x0.device)
        x_t = self.process.sample_marginal(x0, t, generator=generator)
        log_mean = self.parameterization.log_mean(denoiser, x_t, t, self.process)
        nats = (1.0 - self.t_min) * self.process.continuous_elbo(x0, x_t, log_mean, t)
        return ddkit.LossOutput(nats=nats, t=t)


class ContinuousELBOParams(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    process: ddkit.Component("process")
    parameterization: ddkit.Component("parameterization") = "mean"
    time_sampling: Literal["iid", "antithetic"] = "antithetic"
    t_min: float = Field(1e-4, ge=0.0, lt=1.0)


@ddkit.hookimpl
def register_losses(register):
    register("continuous_elbo", ContinuousELBO, params=ContinuousELBOParams,
             summary="continuous-time NELBO, weight -alpha'/(1-alpha) (MD4/MDLM)")
