r"""The mixed objective of a hollow masked-diffusion model (Zhao et al. 2024): the
continuous-time NELBO of the masked positions plus a term that trains the clean positions'
leave-one-out conditionals, in nats per token.

.. math::
    \mathcal L_{\text{masked}} &= \int_0^1 \mathbb E_{q(x_t \mid x_0)} \sum_{d:\,x_t^d = m}
        \frac{-\alpha'_t}{1-\alpha_t}\,\big(-\log p_\theta(x_0^d \mid x_t)\big)\,dt,\\
    \mathcal L_{\text{clean}} &= \int_0^1 \mathbb E_{q(x_t \mid x_0)} \sum_{d:\,x_t^d \ne m}
        \frac{-\alpha'_t}{\alpha_t}\,\big(-\log p_\theta(x_0^d \mid x_t^{-d})\big)\,dt .

Both integrands are non-negative (ddkit's sign: :math:`-\alpha'_t \ge 0`); in the reference's
sign the clean term reads :math:`\frac{\alpha'_t}{\alpha_t}\sum_{\text{clean}} \log
p_\theta(x^d \mid x_t^{-d})`, the same number. The masked term alone is the standard bound
(:mod:`ddkit.plugins.losses.continuous_elbo`, with the same draws it is the same number):
with a hollow network the output at a masked position is an ordinary denoiser output, and at
a clean position it is :math:`p_\theta(\cdot \mid x_t^{-d})`, which only the clean term reads.
The minimiser of the clean term at each :math:`t` is the true conditional
:math:`p(x_0^d \mid x_t^{-d})` the informed corrector needs.

The loss returns a :class:`HollowLossOutput`: ``nats`` is the masked term (so validation and
``ddkit evaluate`` report the standard, comparable upper bound), ``clean`` the clean term per
token, and ``loss`` — the scalar training minimises — their mean sum
:math:`\mathcal L_{\text{masked}} + \lambda\,\mathcal L_{\text{clean}}` (``clean_weight``
:math:`\lambda`, default 1; the reference averages the two terms, a factor 1/2 on both).

Both terms are also reported in the training log (:meth:`HollowELBO.metrics`:
``masked_nats`` and ``clean_nats``, means over the batches of each logging interval).

Times: one per sequence on :math:`[t_{min}, 1]` (iid or antithetic); the masked term omits
:math:`[0, t_{min}]` as the standard loss does, and the clean term mirrors that by omitting
:math:`[1 - t_{min}, 1]`, where its weight :math:`-\alpha'_t/\alpha_t` diverges as the
masked one does near :math:`t = 0`. The network must be hollow (its output at :math:`d` must
not see :math:`x_t^d`), else the clean term teaches it to copy its input; the loss needs an
absorbing process and the mean parameterization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

import ddkit
from ddkit.process import per_token

_TINY = torch.finfo(torch.float64).tiny


@dataclass
class HollowLossOutput(ddkit.LossOutput):
    """``nats``: the masked term (the standard NELBO), ``clean``: the clean-position term,
    both per token ``[B, N]``; ``loss``: the mixed objective ``mean(nats + weight * clean)``."""

    clean: Tensor = field(default=None, repr=False)
    clean_weight: float = 1.0

    @property
    def loss(self) -> Tensor:
        return (self.nats + self.clean_weight * self.clean).mean()

    @property
    def clean_nats_per_token(self) -> float:
        return float(self.clean.detach().mean())


class HollowELBO(ddkit.ContinuousTimeLoss):
    def __init__(self, clean_weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False,
                                                            description="lambda, the weight of the clean term")] = 1.0,
                 **loss_params):
        super().__init__(**loss_params)
        if "absorbing" not in self.process.capabilities:
            raise ValueError(f"hollow_elbo trains the clean positions of an absorbing (masked) process; "
                             f"{type(self.process).__name__} is not one")
        if self.parameterization.predicts != "mean":
            raise ValueError(f"hollow_elbo needs the mean parameterization; this one predicts "
                             f"{self.parameterization.predicts!r}")
        self.clean_weight = float(clean_weight)
        # sums of the two terms (nats per token) over the training batches since the training
        # log last read them (metrics()); on the device, so that no step waits for them
        self._logged: list[Tensor] = []

    def metrics(self) -> dict[str, float]:
        """The training log's view of both terms: the mean masked and clean nats per token over
        the training batches since the last call (with the schedule's metrics, if any)."""
        values = super().metrics()
        if self._logged:
            masked, clean = (float(v) for v in torch.stack(self._logged).mean(0))
            values.update(masked_nats=masked, clean_nats=clean)
            self._logged.clear()
        return values

    def terms(self, denoiser: ddkit.Denoiser, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(masked, clean)`` integrands per token at times ``t`` (one per sequence), in nats."""
        process = self.process
        log_p = torch.log_softmax(self.parameterization.mean_logits(denoiser, x_t, t, process), dim=-1)
        masked = process.continuous_elbo(x0, x_t, log_p, t)
        t_ = per_token(t, x0)
        alpha = process.schedule.alpha(t_)
        weight = torch.where(t_ <= 1.0 - self.t_min, -process.schedule.alpha_prime(t_) / alpha.clamp_min(_TINY), 0.0)
        nll = -log_p.gather(-1, x0[..., None]).squeeze(-1)
        clean = torch.where(x_t != process.mask_id, weight.to(nll.dtype) * nll, torch.zeros_like(nll))
        return masked, clean

    def forward(self, denoiser: ddkit.Denoiser, x0: Tensor, generator: torch.Generator | None = None) -> HollowLossOutput:
        t = ddkit.sample_times(x0.shape[0], method=self.time_sampling, t_min=self.t_min,
                               generator=generator, device=x0.device)
        x_t = self.process.sample_marginal(x0, t, generator=generator)
        masked, clean = self.terms(denoiser, x0, x_t, t)
        scale = 1.0 - self.t_min
        out = HollowLossOutput(nats=scale * masked, t=t, clean=scale * clean, clean_weight=self.clean_weight)
        if torch.is_grad_enabled():  # a training step (validation and evaluation run without gradients)
            self._logged.append(torch.stack([out.nats.detach().mean(), out.clean.detach().mean()]).float())
        return out


@ddkit.hookimpl
def register_losses(register):
    register("hollow_elbo", HollowELBO,
             summary="masked NELBO + clean-position leave-one-out term (hollow models); nats = the masked bound")
