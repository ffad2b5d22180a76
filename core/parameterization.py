r"""The parameterization protocol: from a denoiser's output to what the process needs.

The mean (:math:`x_0`-prediction) parameterization gives
:math:`\log \mu_\theta(x_t, t) \in \mathbb{R}^{B \times N \times V}`, the model's
distribution over the clean token at every position. Other parameterizations (e.g. score
ratios :math:`s_\theta(x_t, t)_j \approx q_t(j)/q_t(x_t)`) provide their own quantities and
declare which processes they serve.
"""

from __future__ import annotations

from torch import Tensor

from .denoiser import Denoiser
from .process import Process


class Parameterization:
    """Base class. ``time_conditioning = False`` promises that the denoiser is called with a
    constant time, so its output depends on ``x_t`` only; samplers may then cache it."""

    time_conditioning: bool = False

    def log_mean(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, process: Process) -> Tensor:
        r""":math:`\log \mu_\theta(x_t, t)`, shape ``[B, N, V]``."""
        raise NotImplementedError(f"{type(self).__name__} does not provide a mean prediction")
