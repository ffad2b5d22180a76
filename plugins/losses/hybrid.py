r"""The hybrid loss of D3PM (Austin et al. 2021): a variational bound plus an auxiliary
cross-entropy on the clean-token prediction, in nats per token.

.. math::  \mathcal L_\lambda = \mathcal L_{vb} + \lambda\, \mathbb E_{q(x_t \mid x_0)}
           \sum_n -\log \mu_\theta(x_t, t)^n_{x^n_0}

* :math:`\mathcal L_{vb}`: the discrete-time NELBO with ``num_steps`` = :math:`T` steps (D3PM,
  :math:`T\,\mathrm{KL}(q(x_{s} \mid x_t, x_0) \,\|\, p_\theta(x_s \mid x_t))` at one uniformly
  drawn step, :mod:`ddkit.plugins.losses.discrete_elbo`), or with ``num_steps: null`` the
  continuous-time one (:mod:`ddkit.plugins.losses.continuous_elbo`, times on
  :math:`[t_{min}, 1]`);
* the cross-entropy is taken at the same :math:`x_t` and at every position (for the masked
  process the carried-over clean positions contribute 0).

The cross-entropy is non-negative, so :math:`\mathcal L_\lambda` is still an upper bound on
:math:`-\log p_\theta(x_0)`, looser than :math:`\mathcal L_{vb}` by :math:`\lambda\,\mathrm{CE}`:
report likelihoods with an ELBO loss. D3PM used :math:`\lambda` between 0.001 and 0.01.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor

import ddkit


class HybridLoss(ddkit.Loss):
    def __init__(self, process: ddkit.Component("process"),
                 parameterization: ddkit.Component("parameterization") = "mean",
                 weight: Annotated[float, Field(ge=0.0, description="lambda, the weight of the cross-entropy")] = 0.01,
                 num_steps: Annotated[int | None, Field(ge=1, description="T of the discrete-time bound; null: continuous time")] = 1000,
                 time_sampling: Literal["iid", "antithetic"] = "antithetic",
                 t_min: Annotated[float, Field(ge=0.0, lt=1.0, description="continuous time only")] = 1e-4):
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if num_steps is not None and num_steps < 1:
            raise ValueError(f"num_steps must be >= 1 or None (continuous time), got {num_steps}")
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must be in [0, 1), got {t_min}")
        self.process = process
        self.parameterization = ddkit.build("parameterization", parameterization)
        self.weight = float(weight)
        self.num_steps = None if num_steps is None else int(num_steps)
        self.time_sampling = time_sampling
        self.t_min = float(t_min)
        if isinstance(process.schedule, torch.nn.Module):
            self.schedule = process.schedule

    def forward(self, denoiser: ddkit.Denoiser, x0: Tensor,
                generator: torch.Generator | None = None) -> ddkit.LossOutput:
        B = x0.shape[0]
        if self.num_steps is None:
            t = ddkit.sample_times(B, method=self.time_sampling, t_min=self.t_min,
                                   generator=generator, device=x0.device)
        else:
            steps = ddkit.sample_steps(B, self.num_steps, method=self.time_sampling,
                                       generator=generator, device=x0.device)
            t = steps.to(torch.float64) / self.num_steps
            s = (steps - 1).to(torch.float64) / self.num_steps
        x_t = self.process.sample_marginal(x0, t, generator=generator)
        log_mean = self.parameterization.log_mean(denoiser, x_t, t, self.process)
        if self.num_steps is None:
            vb = (1.0 - self.t_min) * self.process.continuous_elbo(x0, x_t, log_mean, t)
        else:
            vb = self.num_steps * self.process.discrete_elbo(x0, x_t, log_mean, s, t)
        cross_entropy = -log_mean.gather(-1, x0[..., None]).squeeze(-1)
        return ddkit.LossOutput(nats=vb + self.weight * cross_entropy.to(vb.dtype), t=t)


@ddkit.hookimpl
def register_losses(register):
    register("hybrid", HybridLoss,
             summary="D3PM hybrid loss: variational bound + lambda * cross-entropy of the x0 prediction")
