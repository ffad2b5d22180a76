r"""GenMD4's negative ELBO (Shi et al. 2024): masked diffusion with a learnable, token-dependent
schedule, trained with a leave-one-out REINFORCE gradient for the schedule.

For the masked process with a schedule :math:`\alpha_{t,v}` (vector-valued, e.g.
``learnable_polynomial``; a scalar one gives MD4), the bound on :math:`-\log p_\theta(x_0)`
estimated per sequence is

.. math::  \mathcal L = \underbrace{\sum_n (1-\alpha_{t_1,x_0^n})\,
           \big(-\log g(x_0^n)\big)}_{\text{reconstruction at } t_1}
           + \int_{t_1}^1 \mathbb E_{q(x_t \mid x_0)} \sum_{n:\,x_t^n = m}
           \Big[c_{x_0^n}(-\log\mu^n_{x_0^n} - 1) + \sum_v c_v\,\mu^n_v\Big]\,dt,
           \qquad c_v = \frac{-\alpha'_{t,v}}{1-\alpha_{t,v}}

(:meth:`ddkit.Process.continuous_elbo` of the masked process; with equal :math:`\alpha_{t,v}`
the bracket is MD4's :math:`-c\log\mu_{x_0}`). The reconstruction term is the exact expectation
over :math:`x_{t_1}` with a model-free guess for tokens still masked at :math:`t_1`,
:math:`g(v) \propto 1 - \alpha_{t_1,v}` (the masking probability: uniform for a scalar
schedule). ``t_min`` is :math:`t_1`; the prior term is 0 when :math:`\alpha_1 = 0`.

Estimator: one time per sequence (antithetic by default) on :math:`[t_1, 1]`, and ``samples``
independent draws :math:`x_t^{(k)} \sim q(\cdot \mid x_0)` at that same time (one batched
denoiser call), whose integrands are averaged: :math:`\bar\ell = \frac1K\sum_k \ell_k`. The
reported ``nats`` are always this NELBO estimate, reconstruction included.

Gradient of the schedule: :math:`x_t` depends on the schedule's parameters through the masking
probabilities, which the pathwise gradient of :math:`\bar\ell` misses. The leave-one-out
score-function estimator (RLOO) adds, with per-sequence losses :math:`L_k = \sum_n \ell_{k,n}`
and :math:`\log q_k = \sum_n \log q(x^{(k),n}_t \mid x^n_0)`,

.. math::  \frac1K \sum_k \operatorname{sg}\!\Big(L_k - \frac{1}{K-1}\sum_{j \ne k} L_j\Big)
           \nabla \log q_k

(for :math:`K = 2`: :math:`\frac12\operatorname{sg}(L_1 - L_2)(\nabla\log q_1 - \nabla\log
q_2)`), an unbiased estimate of :math:`\nabla\,\mathbb E_{x_t}[L]` for every baseline drawn
independently of :math:`x_t^{(k)}`. It enters ``nats`` as ``surrogate - surrogate.detach()``:
zero in value, so the reported number stays the NELBO, and its gradient is the REINFORCE
term. It is added only for a schedule with trainable parameters and only while gradients are
being recorded; such a schedule needs ``samples >= 2``.

With a fixed (scalar) schedule this is MD4's continuous NELBO with the same reconstruction
term and the same ``samples``-fold averaging: the fair MD4 baseline (part of GenMD4's gain may
be the variance reduction of two draws per time).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

import ddkit
from ddkit.loss import TimeSampling
from ddkit.process import per_token


class GenMD4ELBO(ddkit.ContinuousTimeLoss):
    def __init__(self, process: ddkit.Component("process"),
                 parameterization: ddkit.Component("parameterization") = "mean",
                 time_sampling: TimeSampling = "antithetic",
                 t_min: Annotated[float, Field(ge=0.0, lt=1.0)] = 1e-3,
                 samples: Annotated[int, Field(ge=1)] = 2):
        super().__init__(process, parameterization, time_sampling, t_min)
        if "absorbing" not in getattr(process, "capabilities", frozenset()):
            raise ValueError(f"the genmd4 loss needs the masked (absorbing) process; "
                             f"{type(process).__name__} is not")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if self.learnable and samples < 2:
            raise ValueError(f"samples = {samples}: the leave-one-out REINFORCE gradient of a learnable "
                             f"schedule ({type(process.schedule).__name__}) needs samples >= 2")
        self.samples = int(samples)

    @property
    def learnable(self) -> bool:
        """Whether the schedule has trainable parameters (then the REINFORCE term is added)."""
        parameters = getattr(self.process.schedule, "parameters", None)
        return callable(parameters) and any(p.requires_grad for p in parameters())

    def forward(self, denoiser: ddkit.Denoiser, x0: Tensor,
                generator: torch.Generator | None = None) -> ddkit.LossOutput:
        t = ddkit.sample_times(x0.shape[0], method=self.time_sampling, t_min=self.t_min,
                               generator=generator, device=x0.device)
        return self.at_times(denoiser, x0, t, generator=generator)

    def at_times(self, denoiser: ddkit.Denoiser, x0: Tensor, t: Tensor,
                 generator: torch.Generator | None = None) -> ddkit.LossOutput:
        """The estimate at given times ``t`` (``[B]``, one per sequence): ``samples`` draws of
        :math:`x_t` per sequence, the reconstruction term, and the REINFORCE term in the
        gradient only."""
        K, (B, N) = self.samples, x0.shape
        x0_k, t_k = x0.repeat(K, 1), t.repeat(K)  # draw k of sequence b at row k * B + b
        x_t = self.process.sample_marginal(x0_k, t_k, generator=generator)
        log_mean = self.parameterization.log_mean(denoiser, x_t, t_k, self.process)
        integrand = (1.0 - self.t_min) * self.process.continuous_elbo(x0_k, x_t, log_mean, t_k)
        integrand = integrand.reshape(K, B, N)
        nats = integrand.mean(0) + self.reconstruction(x0).to(integrand.dtype)
        if self.learnable and torch.is_grad_enabled():
            log_q = self.log_marginal(x0_k, x_t, t_k).reshape(K, B, N)
            losses = integrand.detach().to(torch.float64).sum(-1)  # L_k per sequence, [K, B]
            others = (losses.sum(0, keepdim=True) - losses) / (K - 1)  # the leave-one-out baselines
            surrogate = ((losses - others)[..., None] * log_q).mean(0)  # [B, N]
            nats = nats + (surrogate - surrogate.detach()).to(nats.dtype)  # zero value, REINFORCE gradient
        return ddkit.LossOutput(nats=nats, t=t)

    def reconstruction(self, x0: Tensor) -> Tensor:
        r""":math:`(1 - \alpha_{t_1, x_0})(-\log g(x_0))` per token, :math:`g(v) \propto
        1 - \alpha_{t_1, v}`; 0 when :math:`t_1 = 0`."""
        if self.t_min == 0.0:
            return torch.zeros(x0.shape, dtype=torch.float64, device=x0.device)
        t1 = torch.full((), self.t_min, dtype=torch.float64, device=x0.device)
        noised = self.process.schedule.one_minus_alpha(t1)
        if noised.dim() == 0:  # a scalar schedule: g is uniform
            return (noised * torch.log(torch.tensor(float(self.process.vocab_size), dtype=torch.float64))).expand(
                x0.shape)
        log_guess = torch.log_softmax(torch.log(noised), -1)
        return noised[x0] * -log_guess[x0]

    def log_marginal(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        r""":math:`\log q(x_t^n \mid x_0^n)` per token: :math:`\log(1 - \alpha_{t,x_0})` at a
        mask, :math:`\log \alpha_{t,x_0}` at a clean token (float64, differentiable in the
        schedule's parameters)."""
        t_ = per_token(t, x0)
        schedule, own = self.process.schedule, x0[..., None]
        noised = schedule.one_minus_alpha(t_)
        if noised.dim() == t_.dim() + 1:  # a vector schedule: the entry of x_0
            noised = noised.gather(-1, own).squeeze(-1)
        masked = x_t == self.process.mask_id
        # each branch sees a harmless value where it is not taken: no inf * 0 in the gradient
        log_masked = torch.log(torch.where(masked, noised, 1.0))
        log_clean = torch.log1p(-torch.where(masked, 0.0, noised))
        return torch.where(masked, log_masked, log_clean)

    def extra_repr(self) -> str:
        return f"samples={self.samples}, t_min={self.t_min}, time_sampling={self.time_sampling!r}"


@ddkit.hookimpl
def register_losses(register):
    register("genmd4", GenMD4ELBO,
             summary="GenMD4 NELBO: token-dependent schedule, reconstruction at t_1, K draws per time, "
                     "leave-one-out REINFORCE for the schedule (MD4 with a fixed schedule)")
