r"""Discrete-time negative ELBO with ``T`` steps, a Monte-Carlo estimate in nats per token.

With :math:`t(i) = i/T`, :math:`s(i) = (i-1)/T`:

.. math::  \mathcal L_T = \sum_{i=1}^{T} \mathbb E_{q(x_{t(i)} \mid x_0)}
           \mathrm{KL}\big(q(x_{s(i)} \mid x_{t(i)}, x_0) \,\|\, p_\theta(x_{s(i)} \mid x_{t(i)})\big)
           \;\ge\; -\log p_\theta(x_0)

(the :math:`i = 1` term is the reconstruction term when :math:`\alpha_0 = 1`). One step per
sequence is drawn uniformly (iid or antithetically) and weighted by :math:`T`; for the
masked process the KL is :math:`\frac{\alpha_s-\alpha_t}{1-\alpha_t}\delta_{x_t,m}
(-\log\mu_\theta(x_t)_{x_0})`. For a fixed denoiser :math:`\mathcal L_T \to
\mathcal L_\infty` (:mod:`ddkit.plugins.losses.continuous_elbo`) as :math:`T \to \infty`.
The prior term (zero when :math:`\alpha_1 = 0`) is omitted.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor

import ddkit


class DiscreteELBO(ddkit.Loss):
    def __init__(self, process: ddkit.Component("process"),
                 num_steps: Annotated[int, Field(ge=1)] = 1000,
                 parameterization: ddkit.Component("parameterization") = "mean",
                 time_sampling: Literal["iid", "antithetic"] = "antithetic"):
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.process = process
        self.num_steps = int(num_steps)
        self.parameterization = ddkit.build("parameterization", parameterization)
        self.time_sampling = time_sampling
        if isinstance(process.schedule, torch.nn.Module):
            self.schedule = process.schedule

    def forward(self, denoiser: ddkit.Denoiser, x0: Tensor,
                generator: torch.Generator | None = None) -> ddkit.LossOutput:
        steps = ddkit.sample_steps(x0.shape[0], self.num_steps, method=self.time_sampling,
                                   generator=generator, device=x0.device)
        t = steps.to(torch.float64) / self.num_steps
        s = (steps - 1).to(torch.float64) / self.num_steps
        x_t = self.process.sample_marginal(x0, t, generator=generator)
        log_mean = self.parameterization.log_mean(denoiser, x_t, t, self.process)
        nats = self.num_steps * self.process.discrete_elbo(x0, x_t, log_mean, s, t)
        return ddkit.LossOutput(nats=nats, t=t)


@ddkit.hookimpl
def register_losses(register):
    register("discrete_elbo", DiscreteELBO,
             summary="discrete-time NELBO with T steps, weight T (alpha_s - alpha_t)/(1 - alpha_t)")
