r"""The discrete-flow-matching corrector (Gat et al. 2024, "Discrete flow matching").

Discrete flow matching runs time the other way (:math:`\tau = 0` noise, :math:`\tau = 1`
data, :math:`\kappa_\tau` the probability of being data). Its corrector sampling follows the
velocity

.. math::  u_\tau = \hat u_\tau + c_\tau\,(\hat u_\tau - \check u_\tau),

with :math:`\hat u` the velocity that carries :math:`p_\tau` towards data and :math:`\check u`
the one that carries it back towards the source. Both generate :math:`p_\tau`, so the
difference has zero probability flux (it is *divergence-free*): added with any weight
:math:`c_\tau \ge 0` it leaves the marginals where they are. In ddkit's convention
(:math:`t = 1 - \tau` noise, :math:`\alpha_t = \kappa_{1-t}`) :math:`\hat u` is the reverse
rates :math:`\hat R_t` a predictor follows and :math:`-\check u` is the forward noising rates
:math:`R_t` (for a mixture path with source :math:`p`, :math:`-\check u(y) =
\frac{-\alpha'_t}{\alpha_t} p(y)`: with the mask as the source, clean tokens are masked at
:math:`\beta_t`). So the divergence-free term is

.. math::  c_t\,\big(R_t + \hat R_t\big)(x \to y), \qquad y \ne x,

the forward–backward rates (:mod:`ddkit.plugins.correctors.forward_backward`) scaled by
:math:`c_t`. The coefficient is the paper's corrector schedule

.. math::  c_t = \text{scale}\cdot t^{\text{exponent}}\,(1-t)^{\text{exponent}}
           \qquad (\text{defaults } 10 \text{ and } 1/4),

which is symmetric in :math:`t \leftrightarrow 1-t`, so the translation of time leaves it
unchanged (``exponent: 0`` gives a constant :math:`c = ` ``scale``).

**As a corrector.** The DFM sampler takes Euler steps of :math:`\hat u + c(\hat u - \check
u)`. Here that step is split (Lie–Trotter, first order like the Euler step itself) into the
predictor :math:`\hat u` — any predictor — and this corrector, which integrates
:math:`c_s(R_s + \hat R_s)` over the predictor's step :math:`h = t - s` (times
``step_multiplier``) at the time :math:`s` the predictor reached, in Euler sub-steps:
each free position jumps at most once per sub-step, to :math:`y` with probability
:math:`\delta\,c_s(R_s + \hat R_s)(x \to y)`. The sub-step is adaptive, as in the reference
implementations: :math:`\delta = r / \lceil r\,\Lambda_{max} \rceil` with :math:`r` the time
left and :math:`\Lambda_{max}` the largest total rate over the free positions, so that every
jump probability stays below one; each sub-step is one denoiser call, so the number of
sub-steps is reported in the NFE. (For the masked process with the linear schedule
:math:`\Lambda_{max} = c_s \max(1/s, 1/(1-s))` over positions with masks and clean tokens,
the reference's :math:`a_t/t + b_t/(1-t)` bound.) At most ``max_substeps`` sub-steps are
taken; the last one takes all the time left, with a position whose jump probability reaches
one jumping surely, to :math:`y \propto` its rates.

For a masked process with the mean parameterization the sub-steps are taken in closed form
(masks unmask w.p. :math:`\delta c_s \lambda_s` to a draw from :math:`\mu_\theta`, clean
tokens are masked w.p. :math:`\delta c_s \beta_s`; see
:func:`ddkit.plugins.correctors.forward_backward.masked_rates`). Where :math:`c_s = 0` (``scale: 0``, or :math:`s \in \{0, 1\}`) the corrector does nothing:
no denoiser call, no random draw, so a sampler with it gives exactly its predictor's samples.
Fixed (prompt) positions never change; ``backend`` picks the kernel backend of the masked
closed form (identical samples on all). YAML::

    sampler: {name: ancestral, steps: 64, corrector: {name: dfm, scale: 10}}
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

import ddkit
from ddkit.categorical import sample_categorical
from ddkit.sampler import Backend

from .forward_backward import (StepMultiplier, StepSize, corrector_rates, jump_targets, masked_corrector_step,
                               masked_rates, predictor_step)


def euler_step_probs(x: Tensor, rates: Tensor, delta: Tensor) -> Tensor:
    r"""One Euler step of the rates over ``delta`` (``[B]``), at most one jump per position:
    :math:`P(y) = \delta\,\mathrm{rate}(y)` (:math:`y \ne x`), the rest stays; where
    :math:`\delta\Lambda \ge 1` the position jumps surely, to :math:`y \propto` rates.
    ``[B, N, S]`` float64."""
    total, direction = jump_targets(rates)
    delta = delta.to(torch.float64)[:, None, None]
    p_jump = torch.where(delta > 0, (delta * total).clamp(max=1.0), 0.0)
    own = torch.nn.functional.one_hot(x, rates.shape[-1]).to(torch.float64)
    return p_jump * direction + (1.0 - p_jump) * own


def euler_step(state: ddkit.SamplerState, rates: Tensor, delta: Tensor) -> Tensor:
    """One draw (float64) per position from :func:`euler_step_probs`; fixed positions keep
    their token. Returns the new tokens."""
    x = state.x
    new = sample_categorical(euler_step_probs(x, rates, delta), generator=state.generator)
    return torch.where(state.fixed, x, new)


class DFMCorrector(ddkit.Corrector):
    def __init__(self, scale: Annotated[float, Field(ge=0.0, allow_inf_nan=False, description="c_t's factor")] = 10.0,
                 exponent: Annotated[float, Field(ge=0.0, allow_inf_nan=False,
                                                  description="c_t = scale (t (1 - t))^exponent")] = 0.25,
                 step_multiplier: StepMultiplier = 1.0, step_size: StepSize = None,
                 max_substeps: Annotated[int, Field(ge=1, description="most sub-steps (NFE) per correction")] = 64,
                 backend: Backend = "auto", **common):
        super().__init__(**common)
        self.backend = backend
        self.scale, self.exponent = float(scale), float(exponent)
        self.step_multiplier = float(step_multiplier)
        self.step_size = None if step_size is None else float(step_size)
        self.max_substeps = int(max_substeps)

    def __repr__(self):
        return (f"DFMCorrector(scale={self.scale}, exponent={self.exponent}, step_multiplier={self.step_multiplier}, "
                f"step_size={self.step_size}, max_substeps={self.max_substeps}, every={self.every})")

    def coefficient(self, t: Tensor) -> Tensor:
        r""":math:`c_t = \text{scale}\,(t(1-t))^{\text{exponent}}` (float64, 0 at t = 0 and 1
        for a positive exponent)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.scale * (t * (1.0 - t)).clamp_min(0.0) ** self.exponent

    def correct(self, state):
        c = self.coefficient(state.t)
        if not bool((c > 0).any()):
            return  # nothing to integrate: no call, no draw
        if self.step_size is not None:
            left = torch.full_like(c, self.step_size)
        else:
            left = self.step_multiplier * predictor_step(state, "dfm")
        masked = masked_rates(state)
        for taken in range(self.max_substeps):
            if masked is None:
                rates = c[:, None, None] * corrector_rates(state)
                largest = float(rates.sum(-1).amax()) if rates.numel() else 0.0
            else:  # closed form: every free mask moves at c * lambda, every free clean token at c * beta
                unmask, remask = c * masked  # [2, B]: both rates scaled at once
                free = ~state.fixed
                has_mask = ((state.x == state.process.mask_id) & free).any(-1)
                has_clean = ((state.x != state.process.mask_id) & free).any(-1)
                largest = float(torch.maximum(torch.where(has_mask, unmask, 0.0),
                                              torch.where(has_clean, remask, 0.0)).amax())
            if largest == 0.0:
                return  # nothing can move any more at this time
            last = taken == self.max_substeps - 1 or not math.isfinite(largest)
            substeps = 1 if last else math.ceil(float(left.max()) * largest)
            delta = left / max(substeps, 1)
            if masked is None:
                state.x = euler_step(state, rates, delta)
            else:
                state.x = masked_corrector_step(state, (delta * unmask).clamp(max=1.0), (delta * remask).clamp(max=1.0),
                                                backend=self.backend)
            if substeps <= 1:
                return
            left = left - delta


@ddkit.hookimpl
def register_correctors(register):
    register("dfm", DFMCorrector,
             summary="Gat et al.: divergence-free term c_t (R + R_hat), c_t = 10 (t(1-t))^(1/4), adaptive Euler sub-steps")
