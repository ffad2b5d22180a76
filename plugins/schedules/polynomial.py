r"""Polynomial schedule (MD4 "poly-k").

.. math::  \alpha_t = 1 - t^k, \qquad \alpha'_t = -k\,t^{k-1}, \qquad
           t(\alpha) = (1 - \alpha)^{1/k}, \qquad k > 0

Endpoints :math:`\alpha_0 = 1, \alpha_1 = 0` exactly; ``exponent = 1`` is the linear
schedule. For :math:`k < 1` the derivative is infinite at :math:`t = 0`.
"""

from __future__ import annotations

from pydantic import PositiveFloat
from torch import Tensor

import ddkit


class PolynomialSchedule(ddkit.Schedule):
    invertible = True

    def __init__(self, exponent: PositiveFloat = 2.0):
        super().__init__()
        self.exponent = float(exponent)

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t**self.exponent

    def alpha_prime(self, t: Tensor) -> Tensor:
        return -self.exponent * t ** (self.exponent - 1.0)

    def inverse(self, alpha: Tensor) -> Tensor:
        return (1.0 - alpha).clamp(0.0, 1.0) ** (1.0 / self.exponent)

    def extra_repr(self) -> str:
        return f"exponent={self.exponent}"


@ddkit.hookimpl
def register_schedules(register):
    register("polynomial", PolynomialSchedule, summary="alpha(t) = 1 - t^k (MD4 poly)")
