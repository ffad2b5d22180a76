r"""The schedule protocol: :math:`\alpha_t`, the probability that a token is still clean.

Conventions (DESIGN §1): time :math:`t \in [0, 1]`, :math:`t = 0` is data and :math:`t = 1`
is noise; :math:`\alpha_t` decreases from :math:`\alpha_0 \approx 1` to
:math:`\alpha_1 \approx 0`; :math:`\alpha'_t = d\alpha_t/dt \le 0`.

Where a schedule reaches :math:`\alpha = 1` (at :math:`t = 0`) the ELBO weight
:math:`-\alpha'_t / (1 - \alpha_t)` is infinite; losses sample :math:`t` from
:math:`[t_{min}, 1]` instead (see :mod:`ddkit.loss`). Schedules written in the
:math:`\sigma = -\log \alpha` form (geometric, log-linear) state their own shift.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Schedule(nn.Module):
    r"""Base class of schedules; an ``nn.Module`` so that a schedule may be learnable.

    Subclasses implement :meth:`alpha` and :meth:`alpha_prime`, and :meth:`inverse` where
    :math:`\alpha` is strictly decreasing (first-hitting sampling needs it). All methods
    take and return tensors of any shape, elementwise; compute in float64 for accuracy.

    Example::

        >>> import torch, ddkit
        >>> s = ddkit.build("schedule", "cosine")
        >>> s.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
        tensor([1., 0.], dtype=torch.float64)
    """

    #: whether :meth:`inverse` is implemented
    invertible: bool = False

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def inverse(self, alpha: Tensor) -> Tensor:
        r"""The time :math:`t` with :math:`\alpha_t = \alpha`, for :math:`\alpha \in
        [\alpha_1, \alpha_0]`."""
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def endpoints(self) -> tuple[float, float]:
        r""":math:`(\alpha_0, \alpha_1)`."""
        values = self.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
        return float(values[0]), float(values[1])

    def forward(self, t: Tensor) -> Tensor:
        return self.alpha(t)
