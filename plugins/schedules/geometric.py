r"""Geometric noise schedule (SEDD "geometric"), written in :math:`\sigma = -\log\alpha`.

.. math::  \sigma_t = \sigma_{min}^{1-t}\,\sigma_{max}^{t}, \qquad \alpha_t = e^{-\sigma_t},
           \qquad \alpha'_t = -\sigma_t \log(\sigma_{max}/\sigma_{min})\,\alpha_t,
           \qquad t(\alpha) = \frac{\log(-\log\alpha) - \log\sigma_{min}}
                                  {\log\sigma_{max} - \log\sigma_{min}}

Endpoints are shifted, never exact: :math:`\alpha_0 = e^{-\sigma_{min}}` (defaults
:math:`1 - 10^{-4}`) and :math:`\alpha_1 = e^{-\sigma_{max}}` (:math:`2 \cdot 10^{-9}`).
Because :math:`\alpha_0 < 1` a fraction :math:`1 - \alpha_0` of tokens is masked already at
:math:`t = 0`; the continuous-time ELBO of the losses omits that reconstruction term.
"""

from __future__ import annotations

import math

import torch
from pydantic import PositiveFloat, model_validator
from torch import Tensor

import ddkit


class GeometricSchedule(ddkit.Schedule):
    invertible = True

    def __init__(self, sigma_min: PositiveFloat = 1e-4, sigma_max: PositiveFloat = 20.0):
        super().__init__()
        check_sigmas(sigma_min, sigma_max)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(sigma_max / sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(self._log_ratio * t)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-self.sigma(t))

    def alpha_prime(self, t: Tensor) -> Tensor:
        sigma = self.sigma(t)
        return -sigma * self._log_ratio * torch.exp(-sigma)

    def inverse(self, alpha: Tensor) -> Tensor:
        lo, hi = math.exp(-self.sigma_max), math.exp(-self.sigma_min)
        sigma = -torch.log(alpha.clamp(lo, hi))
        return (torch.log(sigma / self.sigma_min) / self._log_ratio).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}"


def check_sigmas(sigma_min: float, sigma_max: float) -> None:
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must be below sigma_max ({sigma_max}), both > 0")


class GeometricParams(ddkit.params_model(GeometricSchedule)):
    # the signature's parameters, and their order checked before the schedule is built

    @model_validator(mode="after")
    def _ordered(self):
        check_sigmas(self.sigma_min, self.sigma_max)
        return self


@ddkit.hookimpl
def register_schedules(register):
    register("geometric", GeometricSchedule, params=GeometricParams,
             summary="alpha(t) = exp(-sigma_min^(1-t) sigma_max^t) (SEDD geometric)")
