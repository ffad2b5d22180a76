r"""Linear-in-:math:`\alpha` schedule (MD4 "linear").

.. math::  \alpha_t = 1 - t, \qquad \alpha'_t = -1, \qquad t(\alpha) = 1 - \alpha

Endpoints :math:`\alpha_0 = 1, \alpha_1 = 0` exactly (no shift); the ELBO weight
:math:`-\alpha'_t/(1-\alpha_t) = 1/t` is handled by the loss's :math:`t_{min}`.
"""

from __future__ import annotations

from torch import Tensor

import ddkit


class LinearSchedule(ddkit.Schedule):
    invertible = True

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def alpha_prime(self, t: Tensor) -> Tensor:
        return -(t * 0.0 + 1.0)

    def inverse(self, alpha: Tensor) -> Tensor:
        return (1.0 - alpha).clamp(0.0, 1.0)


@ddkit.hookimpl
def register_schedules(register):
    register("linear", LinearSchedule, summary="alpha(t) = 1 - t (MD4 linear)")
