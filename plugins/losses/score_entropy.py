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

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import ddkit


class ScoreEntropy(ddkit.Loss):
    def __init__(self, process: ddkit.Process, parameterization: ddkit.Parameterization | str = "score",
                 time_sampling: Literal["iid", "antithetic"] = "antithetic", t_min: float = 1e-4):
        super().__init__()
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must be in [0, 1), got {t_min}")
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
        log_score = self.parameterization.log_score(denoiser, x_t, t, self.process)
        nats = (1.0 - self.t_min) * self.process.score_entropy(x0, x_t, log_score, t)
        return ddkit.LossOutput(nats=nats, t=t)


class ScoreEntropyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    process: ddkit.Component("process")
    parameterization: ddkit.Component("parameterization") = "score"
    time_sampling: Literal["iid", "antithetic"] = "antithetic"
    t_min: float = Field(1e-4, ge=0.0, lt=1.0)


@ddkit.hookimpl
def register_losses(register):
    register("score_entropy", ScoreEntropy, params=ScoreEntropyParams,
             summary="denoising score entropy (SEDD), the continuous-time NELBO in ratio form")
