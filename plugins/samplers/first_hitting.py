r"""First-hitting sampler: exact simulation of the reverse CTMC of the masked process.

With :math:`n` free masked positions at time :math:`t`, each position's masking time
:math:`\tau` satisfies :math:`P(\tau \le s \mid \tau \le t) = \frac{1-\alpha_s}{1-\alpha_t}`,
so the next unmasking time (the largest :math:`\tau`) solves

.. math::  1 - \alpha_s = (1 - \alpha_t)\,u^{1/n}, \qquad u \sim U(0, 1),
           \qquad s = \alpha^{-1}(\alpha_s)

with the schedule's inverse. One uniformly chosen masked position is then unmasked with
:math:`\mu_\theta(x_t, s)` (filtered by temperature, top-k, top-p; drawn in float64 by
:func:`ddkit.kernels.categorical` with the kernel ``backend``). Each
unmasked token costs exactly one denoiser call; sequences in a batch advance together and
the call count is the largest number of masked positions.
"""

from __future__ import annotations

import torch

import ddkit
import ddkit.kernels
from ddkit.sampler import Backend, TokenSampler


class FirstHittingSampler(TokenSampler):
    requires = frozenset({"absorbing"})

    def __init__(self, backend: Backend = "auto", **token_params):
        super().__init__(**token_params)
        self.backend = backend

    def start(self, state):
        schedule = state.process.schedule
        if schedule.vector_size is not None:
            raise ValueError(f"first_hitting is not defined for a vector schedule ({type(schedule).__name__}: one "
                             f"alpha_t per token type): the time of the next unmasking would depend on the token "
                             f"not yet drawn; use ancestral")
        if not schedule.invertible:
            raise ValueError(f"first_hitting needs an invertible schedule; {type(schedule).__name__} is not")

    def step(self, state):
        x, t, schedule, generator = state.x, state.t, state.process.schedule, state.generator
        batch = x.shape[0]
        masked = state.free_masked()
        remaining = masked.sum(-1)
        active = remaining > 0
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=x.device)
        alpha_s = 1.0 - (1.0 - schedule.alpha(t)) * u ** (1.0 / remaining.clamp_min(1))
        s = torch.where(active, torch.minimum(schedule.inverse(alpha_s), t), t)
        # only the masked row that unmasks is read: the carry-over of clean rows is not needed
        logits = state.calls.mean_logits(x, s)
        scores = torch.rand(x.shape, generator=generator, device=x.device).masked_fill(~masked, -1.0)
        position = scores.argmax(-1)
        u_token = torch.rand(batch, generator=generator, dtype=torch.float64, device=x.device)
        rows = torch.arange(batch, device=x.device)
        token = ddkit.kernels.categorical(logits[rows, position], u_token, temperature=self.temperature,
                                          top_k=self.top_k, top_p=self.top_p, backend=self.backend)
        x = x.clone()
        x[rows[active], position[active]] = token[active]
        state.x, state.t = x, s


@ddkit.hookimpl
def register_samplers(register):
    register("first_hitting", FirstHittingSampler,
             summary="exact CTMC simulation of masked diffusion, one token per denoiser call")
