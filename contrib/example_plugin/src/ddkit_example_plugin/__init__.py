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

import torch
from pydantic import BaseModel, ConfigDict, Field

import ddkit
from ddkit.categorical import sample_categorical


class ExponentialSchedule(ddkit.Schedule):
    invertible = True

    def __init__(self, rate: float = 3.0):
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


class ExponentialParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = Field(3.0, gt=0.0)


class AnyOrderSampler(ddkit.Sampler):
    requires = frozenset({"absorbing"})

    def __init__(self, tokens_per_step: int = 1):
        self.tokens_per_step = int(tokens_per_step)
        self.parameterization = ddkit.build("parameterization", "mean")

    @torch.no_grad()
    def sample(self, denoiser, process, *, num_samples=None, length=None, prompt=None,
               generator=None, device=None, record_trajectory=False):
        self.check_process(process)
        x, fixed = self.initial_state(process, num_samples=num_samples, length=length,
                                      prompt=prompt, generator=generator, device=device)
        calls = ddkit.DenoiserCalls(denoiser, process, self.parameterization)
        trajectory = [x.clone()] if record_trajectory else None
        steps = 0
        while True:
            masked = (x == process.mask_id) & ~fixed
            if not bool(masked.any()):
                break
            # the fraction still masked plays the role of t for a time-conditioned denoiser
            t = masked.sum(-1).to(torch.float64) / x.shape[1]
            tokens = sample_categorical(calls(x, t).exp(), generator=generator)
            scores = torch.rand(x.shape, generator=generator, device=x.device).masked_fill(~masked, -1.0)
            k = min(self.tokens_per_step, x.shape[1])
            chosen = torch.zeros_like(masked).scatter(-1, scores.topk(k, dim=-1).indices, True) & masked
            x = torch.where(chosen, tokens, x)
            steps += 1
            if trajectory is not None:
                trajectory.append(x.clone())
        return ddkit.SampleResult(tokens=x, nfe=calls.nfe, steps=steps, trajectory=trajectory,
                                  fixed=fixed)


class AnyOrderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens_per_step: int = Field(1, ge=1)


@ddkit.hookimpl
def register_schedules(register):
    register("exponential", ExponentialSchedule, params=ExponentialParams,
             summary="alpha(t) = (exp(-r t) - exp(-r)) / (1 - exp(-r))")


@ddkit.hookimpl
def register_samplers(register):
    register("any_order", AnyOrderSampler, params=AnyOrderParams,
             summary="unmask k random masked positions per denoiser call")
