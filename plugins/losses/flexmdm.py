r"""The FlexMDM loss of the ``insertion`` process: a masked-token term and a Poisson-Bregman
insertion term (Kim et al. 2025).

For padded data :math:`x_0` (``[B, N]``) one time per sequence is drawn on
:math:`[t_{min}, 1]` (``time_sampling``), :math:`x_t`, the source positions and the gap
counts :math:`g_j` are drawn from the process (:meth:`InsertionProcess.sample
<ddkit.plugins.processes.insertion.InsertionProcess.sample>`), and the two-headed denoiser
predicts the tokens at the masks and :math:`\hat g_j` per slot. With the hazards
:math:`w_{unm}(t) = -\alpha^{unm\prime}_t/(1-\alpha^{unm}_t)` and
:math:`w_{ins}(t) = -\alpha^{ins\prime}_t/(1-\alpha^{ins}_t)` (ddkit time, :math:`t = 0`
data):

.. math::  \ell(x_0, t) = (1 - t_{min}) \Big[\, w_{unm}(t) \sum_{j:\,x_t^j = m}
           -\log p_\theta\big(x_0^{(s_j)} \mid x_t\big)
           \;+\; w_{ins}(t) \sum_{j=0}^{|x_t|} D(g_j, \hat g_j) \Big],
           \qquad D(g, \hat g) = \hat g - g + g \log\frac{g}{\hat g},

where the token distribution excludes the padding token. Both terms are Poisson-Bregman
divergences between the rates of the reverse process given :math:`x_0` (and the drawn
alignment) and the model's (for the masks, :math:`\sum_v D(w\,\delta_{v, x_0}, w\,p_\theta(v))
= -w \log p_\theta(x_0)`), so the time integral is the path-space KL between the two jump
processes, averaged over the latent alignment: an **upper bound** on
:math:`-\log p_\theta(x_0)` of the sequence *with its length* (the model's jump process
starts from the empty sequence, as the forward process ends there), in nats, up to the
omitted piece :math:`[0, t_{min}]`. :math:`D \ge 0`, zero iff :math:`\hat g = g`, and the
expected divergence is smallest at :math:`\hat g = E[g \mid x_t]`.

``nats[b, n]`` is per position of :math:`x_t`: the mask term of token ``n`` plus the
insertion term of slot ``n`` (the slot after the last token ``N - 1`` counts in column
``N - 1``); rows sum to the per-sequence estimate and ``loss`` divides by ``B N``, like
FlexMDM's normaliser ``B * max_length``.

``insertion_term``: ``auto`` trains the insertion term as above for a denoiser whose gap
head is an expectation, and as the cross-entropy :math:`-\log p_\theta(g_j)` of the gap
count, weighted by :math:`w_{ins}(t)`, for a distribution head — a training objective, not
a bound (``LossOutput.bound`` is False); :meth:`evaluation` then reports the bound with
:math:`\hat g_j` the distribution's mean. ``bregman`` always uses the bound.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

import ddkit
from ddkit.loss import TimeSampling, sample_times
from ddkit.registry import Component

InsertionTerm = Literal["auto", "bregman"]


def poisson_bregman(g: torch.Tensor, g_hat: torch.Tensor) -> torch.Tensor:
    r""":math:`D(g, \hat g) = \hat g - g + g \log(g / \hat g)` in float64, with
    :math:`0 \log 0 = 0` (the Bregman divergence of :math:`x \log x`)."""
    g, g_hat = g.to(torch.float64), g_hat.to(torch.float64)
    return g_hat - g + torch.xlogy(g, g) - torch.xlogy(g, g_hat)


class FlexMDMLoss(ddkit.Loss):
    def __init__(self, process: Component("process"),
                 time_sampling: TimeSampling = "antithetic",
                 t_min: Annotated[float, Field(ge=0.0, lt=1.0, description="times drawn on [t_min, 1]")] = 1e-4,
                 insertion_term: Annotated[InsertionTerm, Field(
                     description="auto: Bregman for an expectation head, gap cross-entropy for a distribution "
                                 "head; bregman: always the bound")] = "auto"):
        super().__init__()
        if "insertion" not in getattr(process, "capabilities", frozenset()):
            raise ValueError(f"the flexmdm loss needs the insertion process (capability 'insertion'); "
                             f"{type(process).__name__} has {sorted(getattr(process, 'capabilities', ())) or 'none'}")
        self.process = process
        self.time_sampling = time_sampling
        self.t_min = float(t_min)
        self.insertion_term = insertion_term

    def evaluation(self) -> FlexMDMLoss:
        if self.insertion_term == "bregman":
            return self
        return FlexMDMLoss(self.process, self.time_sampling, self.t_min, insertion_term="bregman")

    def check_model(self, model):
        self.process.check_denoiser(model)

    def forward(self, denoiser, x0: torch.Tensor, generator: torch.Generator | None = None) -> ddkit.LossOutput:
        process = self.process
        B, N = x0.shape
        t = sample_times(B, method=self.time_sampling, t_min=self.t_min, generator=generator, device=x0.device)
        draw = process.sample(x0, t, generator=generator)
        pred = process.predict(denoiser, draw.x_t, draw.lengths, t)
        # masked tokens: cross-entropy of the clean token they came from
        masked = draw.x_t == process.mask_id
        target = x0.long().gather(1, draw.source.clamp_min(0))
        log_probs = pred.token_logits.log_softmax(-1)
        token_nats = -log_probs.gather(-1, target[..., None]).squeeze(-1).to(torch.float64)
        unmask = torch.where(masked, process.unmasking_rate(t)[:, None] * token_nats, 0.0)
        # gaps: Bregman divergence to the drawn counts (or their cross-entropy)
        slots = torch.arange(N + 1, device=x0.device) <= draw.lengths[:, None]
        bound = self.insertion_term == "bregman" or pred.gap_log_probs is None
        if bound:
            gap_nats = poisson_bregman(draw.gaps, pred.expected_gaps)
        else:
            gap_nats = -pred.gap_log_probs.gather(-1, draw.gaps[..., None]).squeeze(-1).to(torch.float64)
        insert = torch.where(slots, process.insertion_rate(t)[:, None] * gap_nats, 0.0)
        nats = unmask + insert[:, :N]
        nats[:, -1] = nats[:, -1] + insert[:, N]
        return ddkit.LossOutput(nats=(1.0 - self.t_min) * nats, t=t, bound=bound)


@ddkit.hookimpl
def register_losses(register):
    register("flexmdm", FlexMDMLoss,
             summary="FlexMDM: masked-token cross-entropy + Poisson-Bregman gap term (a bound)")
