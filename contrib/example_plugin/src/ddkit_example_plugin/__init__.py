r"""An example third-party ddkit plugin: one schedule and one sampler.

* schedule ``exponential``: :math:`\alpha_t = \frac{e^{-\lambda t} - e^{-\lambda}}{1 - e^{-\lambda}}`,
  :math:`\alpha'_t = \frac{-\lambda e^{-\lambda t}}{1 - e^{-\lambda}}`,
  :math:`t(\alpha) = -\frac{1}{\lambda}\log(\alpha(1 - e^{-\lambda}) + e^{-\lambda})`;
  endpoints :math:`\alpha_0 = 1`, :math:`\alpha_1 = 0` exactly.
* sampler ``any_order``: unmasks ``tokens_per_step`` uniformly chosen masked positions per
  denoiser call, each drawn from :math:`\mu_\theta(x_t)` (an any-order autoregressive
  sampler for absorbing processes).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field

import ddkit
from ddkit.categorical import filter_logits, sample_categorical


class ExponentialSchedule(ddkit.Schedule):
    invertible = True

    def __init__(self, rate: Annotated[float, Field(gt=0.0)] = 3.0):
        super().__init__()
        self.rate = float(rate)
        self._floor = math.exp(-self.rate)

    def alpha(self, t):
        return (torch.exp(-self.rate * t) - self._floor) / (1.0 - self._floor)

    def alpha_prime(self, t):
        return -self.rate * torch.exp(-self.rate * t) / (1.0 - self._floor)

    def inverse(self, alpha):
        inner = alpha.clamp(0.0, 1.0) * (1.0 - self._floor) + self._floor
        return (-torch.log(inner) / self.rate).clamp(0.0, 1.0)


class AnyOrderSampler(ddkit.TokenSampler):
    """Any-order autoregression: each step unmasks ``tokens_per_step`` uniformly chosen free
    masked positions, drawn from the filtered mean at the fraction still masked as time."""

    requires = frozenset({"absorbing"})

    def __init__(self, tokens_per_step: Annotated[int, Field(ge=1)] = 1, **token_params):
        super().__init__(**token_params)  # temperature, top_k, top_p, parameterization
        self.tokens_per_step = tokens_per_step

    def step(self, state):
        x, masked = state.x, state.free_masked()
        state.t = masked.sum(-1).to(torch.float64) / x.shape[1]
        logits = filter_logits(state.calls.log_mean(x, state.t), temperature=self.temperature,
                               top_k=self.top_k, top_p=self.top_p)
        tokens = sample_categorical(logits.softmax(-1), generator=state.generator)
        scores = torch.rand(x.shape, generator=state.generator, device=x.device).masked_fill(~masked, -1.0)
        chosen = scores.topk(min(self.tokens_per_step, x.shape[1]), dim=-1).indices
        commit = torch.zeros_like(masked).scatter(-1, chosen, True) & masked
        state.x = torch.where(commit, tokens, x)


@ddkit.hookimpl
def register_schedules(register):
    register("exponential", ExponentialSchedule,
             summary="alpha(t) = (exp(-r t) - exp(-r)) / (1 - exp(-r))")


@ddkit.hookimpl
def register_samplers(register):
    register("any_order", AnyOrderSampler,
             summary="unmask k random masked positions per denoiser call")
