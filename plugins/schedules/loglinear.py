r"""Log-linear schedule (MDLM / SEDD "loglinear"), written in :math:`\sigma = -\log\alpha`.

.. math::  \sigma_t = -\log(1 - (1-\varepsilon)t), \qquad \alpha_t = 1 - (1-\varepsilon)t,
           \qquad \alpha'_t = -(1-\varepsilon), \qquad t(\alpha) = \frac{1-\alpha}{1-\varepsilon}

Endpoints :math:`\alpha_0 = 1` and :math:`\alpha_1 = \varepsilon` (default ``1e-3``): the
:math:`\varepsilon`-shift keeps :math:`\sigma_1` finite. The ELBO weight is exactly
:math:`-\alpha'_t/(1-\alpha_t) = 1/t` for every :math:`\varepsilon`. With
:math:`\varepsilon > 0` a fraction :math:`\varepsilon` of tokens is still clean at
:math:`t = 1`, so samplers starting from the all-mask prior ignore that mass.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

import ddkit


class LogLinearSchedule(ddkit.Schedule):
    invertible = True

    def __init__(self, eps: Annotated[float, Field(ge=0.0, lt=1.0)] = 1e-3):
        super().__init__()
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"eps must be in [0, 1), got {eps}")
        self.eps = float(eps)

    def sigma(self, t: Tensor) -> Tensor:
        return -torch.log1p(-(1.0 - self.eps) * t)

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - (1.0 - self.eps) * t

    def alpha_prime(self, t: Tensor) -> Tensor:
        return -(t * 0.0 + (1.0 - self.eps))

    def inverse(self, alpha: Tensor) -> Tensor:
        return ((1.0 - alpha) / (1.0 - self.eps)).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


@ddkit.hookimpl
def register_schedules(register):
    register("loglinear", LogLinearSchedule,
             summary="alpha(t) = 1 - (1 - eps) t, sigma = -log alpha (MDLM/SEDD log-linear)")
