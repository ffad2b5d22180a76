r"""Mean (:math:`x_0`-prediction) parameterization.

.. math::  \mu_\theta(x_t, t) = \mathrm{softmax}(f_\theta(x_t, t))

over the clean vocabulary (zero probability for the mask: network columns beyond ``V`` are
dropped). For an absorbing process, positions whose :math:`x_t` is clean *carry over*:
:math:`\mu = e_{x_t}` there, since a clean token is the data. Without time conditioning
(the default: the optimal masked-diffusion denoiser is time-independent) the denoiser is
called with :math:`t = 0` for every input, so its output depends on :math:`x_t` only and
samplers may cache it.
"""

from __future__ import annotations

import torch
from torch import Tensor

import ddkit


class MeanParameterization(ddkit.Parameterization):
    def __init__(self, time_conditioning: bool = False):
        self.time_conditioning = bool(time_conditioning)

    def mean_logits(self, denoiser: ddkit.Denoiser, x_t: Tensor, t: Tensor, process: ddkit.Process) -> Tensor:
        """The network's logits over the clean vocabulary (float32; a view when they are)."""
        return self.network_output(denoiser, x_t, t, process, what="logits", meaning="clean vocabulary").float()

    def log_mean(self, denoiser: ddkit.Denoiser, x_t: Tensor, t: Tensor, process: ddkit.Process) -> Tensor:
        V = process.vocab_size
        log_mean = torch.log_softmax(self.mean_logits(denoiser, x_t, t, process), dim=-1)
        if process.mask_id is not None:
            clean = x_t != process.mask_id
            carry = torch.full_like(log_mean, float("-inf")).scatter(
                -1, x_t.clamp_max(V - 1)[..., None], 0.0
            )
            log_mean = torch.where(clean[..., None], carry, log_mean)
        return log_mean

    def __repr__(self) -> str:
        return f"MeanParameterization(time_conditioning={self.time_conditioning})"


@ddkit.hookimpl
def register_parameterizations(register):
    register("mean", MeanParameterization,
             summary="x0-prediction: softmax over clean tokens, carry-over of clean tokens")
