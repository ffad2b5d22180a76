r"""The parameterization protocol: from a denoiser's output to what the process needs.

The mean (:math:`x_0`-prediction) parameterization gives
:math:`\log \mu_\theta(x_t, t) \in \mathbb{R}^{B \times N \times V}`, the model's
distribution over the clean token at every position. Other parameterizations (e.g. score
ratios :math:`s_\theta(x_t, t)_j \approx q_t(j)/q_t(x_t)`, SEDD) provide their own quantities
(:meth:`Parameterization.log_score`) and say which one they predict in ``predicts``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .denoiser import Denoiser
from .errors import DenoiserOutputError
from .process import Process


class Parameterization:
    """Base class. ``time_conditioning = False`` promises that the denoiser is called with a
    constant time, so its output depends on ``x_t`` only; samplers may then cache it."""

    time_conditioning: bool = False

    #: what the network predicts: ``"mean"`` (a clean-token distribution) or ``"score"``
    #: (ratios); samplers that can use either pick the matching path
    predicts: str = "mean"

    def network_output(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, process: Process, *,
                       what: str, meaning: str) -> Tensor:
        """The denoiser's output over the clean vocabulary, ``[B, N, V]`` (extra columns
        dropped): called at ``t`` with time conditioning, else at ``t = 0`` for every input.
        ``what`` and ``meaning`` name the outputs in the error for a wrong shape."""
        V = process.vocab_size
        t = torch.as_tensor(t, dtype=torch.get_default_dtype(), device=x_t.device)
        if not self.time_conditioning:
            t = torch.zeros_like(t)
        out = denoiser(x_t, t)
        if out.shape[:2] != x_t.shape or out.shape[-1] < V:
            raise DenoiserOutputError(f"denoiser returned {what} of shape {tuple(out.shape)}; expected "
                             f"[{x_t.shape[0]}, {x_t.shape[1]}, {V}] ({meaning})")
        return out[..., :V]

    def log_mean(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, process: Process) -> Tensor:
        r""":math:`\log \mu_\theta(x_t, t)`, shape ``[B, N, V]``."""
        raise NotImplementedError(f"{type(self).__name__} does not provide a mean prediction")

    def mean_logits(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, process: Process) -> Tensor:
        r"""Logits of :math:`\mu_\theta(x_t, t)`, shape ``[B, N, V]``: their softmax is
        :math:`\mu_\theta` at every position whose state is not a clean token of an absorbing
        process; rows at clean positions are unspecified (the carry-over
        :math:`\mu = e_{x_t}` is left out). For samplers that read only masked rows (the
        fused masked step, first hitting): they are spared the normalisation and carry-over
        passes over ``[B, N, V]``. By default :meth:`log_mean`, which satisfies this."""
        return self.log_mean(denoiser, x_t, t, process)

    def log_score(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, process: Process) -> Tensor:
        r""":math:`\log s_\theta(x_t, t)_j \approx \log q_t(j)/q_t(x_t)` over the clean tokens,
        shape ``[B, N, V]`` (float64). By default the ratios implied by the mean,
        :math:`s_j = \sum_{x_0} \mu_\theta(x_0) \bar Q(t)_{x_0 j}/\bar Q(t)_{x_0 x_t}`
        (:meth:`ddkit.Process.score_from_mean`, at the true ``t``); for the masked process at
        :math:`x_t = m` this is :math:`\frac{\alpha_t}{1-\alpha_t}\mu_\theta(x_t)_j`."""
        mean = self.log_mean(denoiser, x_t, t, process).to(torch.float64).exp()
        return torch.log(process.score_from_mean(x_t, mean, t))
