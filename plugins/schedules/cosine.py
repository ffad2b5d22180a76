r"""Cosine schedule of MD4.

.. math::  \alpha_t = 1 - \sin(\tfrac{\pi}{2} t) = 1 - \cos(\tfrac{\pi}{2}(1 - t)), \qquad
           \alpha'_t = -\tfrac{\pi}{2}\cos(\tfrac{\pi}{2} t), \qquad
           t(\alpha) = \tfrac{2}{\pi}\arcsin(1 - \alpha)

Endpoints :math:`\alpha_0 = 1, \alpha_1 = 0` exactly (no shift). Few tokens are unmasked
early in sampling and more later, the shape MD4 found best for parallel sampling.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import ddkit


class CosineSchedule(ddkit.Schedule):
    invertible = True

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - torch.sin(math.pi / 2 * t)

    def alpha_prime(self, t: Tensor) -> Tensor:
        return -math.pi / 2 * torch.cos(math.pi / 2 * t)

    def inverse(self, alpha: Tensor) -> Tensor:
        return 2.0 / math.pi * torch.asin((1.0 - alpha).clamp(0.0, 1.0))


@ddkit.hookimpl
def register_schedules(register):
    register("cosine", CosineSchedule, summary="alpha(t) = 1 - sin(pi t / 2) (MD4 cosine)")
