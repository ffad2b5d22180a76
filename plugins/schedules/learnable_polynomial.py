r"""Learnable per-token polynomial schedule (GenMD4, Shi et al. 2024), vector-valued.

One exponent :math:`w_v > 0` per clean token :math:`v`:

.. math::  \alpha_{t,v} = 1 - (1-\varepsilon)\,t^{w_v}, \qquad
           \alpha'_{t,v} = -(1-\varepsilon)\,w_v\,t^{w_v-1}, \qquad
           w_v = \mathrm{softplus}(\rho_v)

with learnable :math:`\rho \in \mathbb R^V` (so :math:`w_v` stays positive), initialised at
:math:`w_v = ` ``exponent_init`` for every token (1: the linear schedule). ``alpha(t)`` has
shape ``[*t.shape, V]``. The ELBO weight is :math:`-\alpha'_{t,v}/(1-\alpha_{t,v}) = w_v/t`
for every :math:`\varepsilon`.

Endpoints :math:`\alpha_{0,v} = 1` and :math:`\alpha_{1,v} = \varepsilon`. The default
:math:`\varepsilon = 0` reaches the all-mask prior exactly, so the NELBO needs no prior term;
the GenMD4 reference uses :math:`\varepsilon = 10^{-4}`, which leaves a fraction
:math:`\varepsilon` of the tokens clean at :math:`t = 1` (their prior term is infinite and
omitted, as for the log-linear schedule). A token with a large :math:`w_v` stays clean
longer under the forward process, so a sampler (walking from 1 to 0) unmasks it early.

No inverse: there is no single time at which every token has a given :math:`\alpha`, so
first-hitting sampling does not apply. The masked process sets ``vocab_size`` to its own.

Example::

    >>> import torch, ddkit
    >>> s = ddkit.build("schedule", "learnable_polynomial", vocab_size=3)
    >>> s.alpha(torch.tensor([0.25, 0.5], dtype=torch.float64)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import Tensor, nn

import ddkit


def inverse_softplus(value: float) -> float:
    r""":math:`\rho` with :math:`\log(1 + e^\rho) = ` ``value`` (> 0)."""
    return value + math.log(-math.expm1(-value))


class LearnablePolynomialSchedule(ddkit.Schedule):
    invertible = False

    def __init__(self, vocab_size: PositiveInt | None = None, exponent_init: PositiveFloat = 1.0,
                 eps: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0):
        super().__init__()
        if vocab_size is None:
            raise ValueError("learnable_polynomial needs vocab_size (the number of clean tokens, one "
                             "exponent each); the masked process passes its own")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if not exponent_init > 0:
            raise ValueError(f"exponent_init must be > 0, got {exponent_init}")
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"eps must be in [0, 1), got {eps}")
        self.vector_size = int(vocab_size)
        self.eps = float(eps)
        self.exponent_init = float(exponent_init)
        self.raw_exponents = nn.Parameter(
            torch.full((self.vector_size,), inverse_softplus(exponent_init), dtype=torch.float64))

    @property
    def exponents(self) -> Tensor:
        r""":math:`w = \mathrm{softplus}(\rho)`, ``[V]``."""
        return nn.functional.softplus(self.raw_exponents)

    def _power(self, t: Tensor) -> Tensor:
        r""":math:`t^{w_v}`, ``[*t.shape, V]`` in the parameters' dtype."""
        t = torch.as_tensor(t).to(device=self.raw_exponents.device, dtype=self.raw_exponents.dtype)
        return torch.pow(t[..., None], self.exponents)

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - (1.0 - self.eps) * self._power(t)

    def one_minus_alpha(self, t: Tensor) -> Tensor:
        # (1 - eps) t^w exactly: 1 - alpha(t) loses every digit once t^w < 1e-16
        return (1.0 - self.eps) * self._power(t)

    def alpha_prime(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t).to(device=self.raw_exponents.device, dtype=self.raw_exponents.dtype)
        w = self.exponents
        return -(1.0 - self.eps) * w * torch.pow(t[..., None], w - 1.0)

    def metrics(self) -> dict[str, float]:
        w = self.exponents.detach()
        return {"exponent_min": float(w.min()), "exponent_mean": float(w.mean()), "exponent_max": float(w.max())}

    def extra_repr(self) -> str:
        return f"vocab_size={self.vector_size}, exponent_init={self.exponent_init}, eps={self.eps}"


@ddkit.hookimpl
def register_schedules(register):
    register("learnable_polynomial", LearnablePolynomialSchedule,
             summary="alpha(t)_v = 1 - (1 - eps) t^w_v, one learnable w_v = softplus(rho_v) per token (GenMD4)")
