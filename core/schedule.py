r"""The schedule protocol: :math:`\alpha_t`, the probability that a token is still clean.

Conventions: time :math:`t \in [0, 1]`, :math:`t = 0` is data and :math:`t = 1`
is noise; :math:`\alpha_t` decreases from :math:`\alpha_0 \approx 1` to
:math:`\alpha_1 \approx 0`; :math:`\alpha'_t = d\alpha_t/dt \le 0`.

A schedule is *scalar* (one :math:`\alpha_t` for every token: ``alpha(t)`` has the shape of
``t``) or *vector-valued* (one :math:`\alpha_{t,v}` per clean token ``v``, GenMD4: ``alpha(t)``
has shape ``[*t.shape, V]`` with ``V`` = :attr:`Schedule.vector_size`). Under a vector
schedule a token's masking rate depends on its clean value; the masked process gathers
:math:`\alpha_{t, x_0}` for the forward marginal and keeps the vector for the posterior.

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
    take tensors of any shape and act elementwise; a scalar schedule returns the input's
    shape, a vector-valued one (:attr:`vector_size` set) appends one axis of size
    :attr:`vector_size`. Compute in float64 for accuracy.

    Example::

        >>> import torch, ddkit
        >>> s = ddkit.build("schedule", "cosine")
        >>> s.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
        tensor([1., 0.], dtype=torch.float64)
    """

    #: whether :meth:`inverse` is implemented
    invertible: bool = False

    #: ``None`` for a scalar schedule; for a vector-valued one the number of clean tokens
    #: ``V`` (``alpha(t)`` then has shape ``[*t.shape, V]``)
    vector_size: int | None = None

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def one_minus_alpha(self, t: Tensor) -> Tensor:
        r""":math:`1 - \alpha_t`, the probability that a token is noised by time ``t``. A
        schedule whose :math:`\alpha` comes close to 1 overrides it with a form free of the
        cancellation in ``1 - alpha(t)`` (the masked process uses it for vector schedules)."""
        return 1.0 - self.alpha(t)

    def inverse(self, alpha: Tensor) -> Tensor:
        r"""The time :math:`t` with :math:`\alpha_t = \alpha`, for :math:`\alpha \in
        [\alpha_1, \alpha_0]`."""
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def endpoints(self) -> tuple[float, float]:
        r""":math:`(\alpha_0, \alpha_1)`; for a vector-valued schedule the extremes over the
        tokens, :math:`(\min_v \alpha_{0,v}, \max_v \alpha_{1,v})`."""
        with torch.no_grad():
            values = self.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
        return float(values[0].min()), float(values[1].max())

    def metrics(self) -> dict[str, float]:
        """Numbers worth logging while training (a learnable schedule's parameters); empty
        for a fixed schedule."""
        return {}

    def forward(self, t: Tensor) -> Tensor:
        return self.alpha(t)
