r"""The forward–backward corrector (Campbell et al. 2022, "A continuous time framework for
discrete denoising models", τLDR's predictor–corrector).

At the time :math:`s` a predictor step reached, the corrector runs the CTMC whose rates are
the forward (noising) rates plus the learned reverse (denoising) rates at :math:`s`,

.. math::  R^c_s(x \to y) = R_s(x \to y) + \hat R_s(x \to y), \qquad y \ne x,

per position, with :math:`\hat R_s(x \to y) = R(s)_{y x}\, s_\theta(x, s)_y`
(:meth:`ddkit.Process.reverse_rates`; the ratios come from the score parameterization or,
for the mean one, from :meth:`ddkit.Process.score_from_mean`). With the exact reverse rates
the marginal :math:`q_s` is stationary: the reverse process carries :math:`q` back along the
path the forward one took, :math:`q_s \hat R_s = -q_s R_s`, so :math:`q_s R^c_s = 0`. Any
process with rates works; for the masked process a clean token is masked again at rate
:math:`\beta_s = -\alpha'_s/\alpha_s` and a mask becomes :math:`v` at rate
:math:`\frac{-\alpha'_s}{1-\alpha_s}\mu_\theta(v)`.

**One corrector step** over a time :math:`h` holds the rates fixed and moves every free
position at most once (the exponential form; τLDR's signed-jump-and-clamp step is meant for
ordinal pixel values and is wrong for categorical tokens):

.. math::  P(\text{jump}) = 1 - e^{-h \Lambda}, \quad \Lambda = \sum_{y \ne x} R^c_s(x \to y),
           \qquad P(y \mid \text{jump}) = R^c_s(x \to y) / \Lambda,

drawn in float64. Its error per step is :math:`O(h^2)` (positions move together with rates
computed before the step), so the kernel leaves :math:`q_s` invariant up to that order.

Parameters (defaults: τLDR's step multiplier; one step, at every time):

* ``step_multiplier`` (1.5): :math:`h` is this times the predictor's step :math:`t - s`
  (``state.previous_t - state.t``: any sampler, first hitting's per-sequence steps too);
* ``step_size``: a fixed :math:`h` instead (for samplers without a grid);
* ``num_steps`` (1): corrector steps after each predictor step, one denoiser call each;
* ``entry_time`` (1.0): correct only at :math:`s \le` ``entry_time`` (τLDR used 0.1 for
  CIFAR-10, with 10 steps and multiplier 1.5);
* ``every`` (1): after every this many predictor steps;
* ``backend`` (``auto``): kernel backend of the masked closed form (identical samples on all).

For a masked process (``absorbing``, one :math:`\alpha` per sequence) with the mean
parameterization the step is taken in closed form, without the ``[B, N, S]`` rate rows: a
mask unmasks w.p. :math:`1 - e^{-h\lambda_s}`, :math:`\lambda_s = -\alpha'_s/(1-\alpha_s)`,
to a token drawn from :math:`\mu_\theta` (the fused masked step of the kernel backends), and a
clean token is masked w.p. :math:`1 - e^{-h\beta_s}` — the same probabilities
(:func:`masked_rates`). Fixed (prompt) positions never change. YAML::

    sampler: {name: ancestral, steps: 64, corrector: {name: forward_backward, step_multiplier: 1.5}}
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

import ddkit
from ddkit import steps
from ddkit.categorical import sample_categorical
from ddkit.kernels import TokenFilter
from ddkit.sampler import Backend

_TINY = torch.finfo(torch.float64).tiny
#: the model's own distribution: no temperature, top-k or top-p
UNFILTERED = TokenFilter()

StepMultiplier = Annotated[float, Field(gt=0.0, allow_inf_nan=False,
                                        description="corrector time h as a multiple of the predictor's step t - s")]
StepSize = Annotated[float | None, Field(gt=0.0, allow_inf_nan=False,
                                         description="a fixed corrector time h (default: from the predictor's step)")]


def forward_rates(process: ddkit.Process, x: Tensor, t: Tensor) -> Tensor:
    r"""Row :math:`x` of the forward generator, :math:`R(t)_{x, y}`, ``[B, N, S]`` float64
    (``t``: ``[B]`` or ``[B, N]``), from the dense :meth:`ddkit.Process.rate_matrix`, one
    matrix per distinct time."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    unique, inverse = torch.unique(t, return_inverse=True)
    generator = process.rate_matrix(unique).to(device=x.device, dtype=torch.float64)  # [U, S, S]
    return generator[inverse[:, None] if t.dim() == 1 else inverse, x]


def corrector_rates(state: ddkit.SamplerState) -> Tensor:
    r""":math:`R_s(x \to y) + \hat R_s(x \to y)` at ``state.t`` for every position, ``[B, N, S]``
    float64, zero at :math:`y = x` and at fixed positions. One denoiser call (NFE)."""
    x, t, process = state.x, state.t, state.process
    ratios = state.calls.log_score(x, t).to(torch.float64).exp()
    rates = process.reverse_rates(x, ratios, t) + forward_rates(process, x, t)
    own = torch.nn.functional.one_hot(x, rates.shape[-1]).bool()
    return rates.masked_fill(own | state.fixed[..., None], 0.0)


def jump_targets(rates: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(total, direction)``: :math:`\Lambda = \sum_y` rates (``[B, N, 1]``) and the jump
    target distribution :math:`\propto` rates (``[B, N, S]``; uniform over the infinite rates
    if there are any, zero where :math:`\Lambda = 0`)."""
    total = rates.sum(-1, keepdim=True)
    infinite = torch.isinf(rates)
    largest = rates.amax(-1, keepdim=True)
    scaled = rates / torch.where(torch.isfinite(largest) & (largest > 0), largest, 1.0)
    direction = torch.where(infinite.any(-1, keepdim=True), infinite.to(rates.dtype), scaled)
    return total, direction / direction.sum(-1, keepdim=True).clamp_min(_TINY)


def exponential_step_probs(x: Tensor, rates: Tensor, h: Tensor) -> Tensor:
    r"""Where each position goes in one step of the rates held fixed over the time ``h``
    (``[B]``): :math:`P(y) = (1 - e^{-h\Lambda})\,\mathrm{rate}(y)/\Lambda` for
    :math:`y \ne x`, the rest stays. ``[B, N, S]`` float64."""
    total, direction = jump_targets(rates)
    h = h.to(torch.float64)[:, None, None]
    # 1 where the total rate is infinite; 0 where h = 0 (not the NaN of 0 * inf)
    p_jump = torch.where(h > 0, -torch.expm1(-h * total), 0.0)
    own = torch.nn.functional.one_hot(x, rates.shape[-1]).to(torch.float64)
    return p_jump * direction + (1.0 - p_jump) * own


def exponential_step(state: ddkit.SamplerState, rates: Tensor, h: Tensor) -> Tensor:
    """One draw (float64) per position from :func:`exponential_step_probs`; fixed positions
    keep their token. Returns the new tokens."""
    x = state.x
    new = sample_categorical(exponential_step_probs(x, rates, h), generator=state.generator)
    return torch.where(state.fixed, x, new)


def masked_rates(state: ddkit.SamplerState) -> Tensor | None:
    r"""For a masked process with one :math:`\alpha` per sequence and the mean
    parameterization, the corrector's total rates per sequence, ``[2, B]`` float64 (unpack as
    ``lam, beta = masked_rates(state)``): at a mask :math:`\lambda_s = -\alpha'_s/(1-\alpha_s)`
    (the reverse rates sum to it, targets :math:`\propto \mu_\theta`), at a clean token
    :math:`\beta_s = -\alpha'_s/\alpha_s` (the forward rate to the mask; no reverse rate leaves
    a clean token). ``None`` for any other process or parameterization (then
    :func:`corrector_rates` gives the rows)."""
    process, t = state.process, state.t
    if "absorbing" not in process.capabilities or state.calls.parameterization.predicts != "mean":
        return None
    alpha = process.schedule.alpha(t)
    if alpha.shape != t.shape:  # one alpha per token value (e.g. GenMD4): no closed form here
        return None
    # both rates in one division (a per-step cost: a handful of operations on [B])
    denominators = torch.stack([1.0 - alpha, alpha]).to(torch.float64).clamp_min_(_TINY)
    return process.schedule.alpha_prime(t).to(torch.float64).neg() / denominators


def masked_corrector_step(state: ddkit.SamplerState, p_unmask: Tensor, p_remask: Tensor, *,
                          backend: str = "auto") -> Tensor:
    """One corrector step of a masked process from the jump probabilities per sequence
    (``[B]``): free masks unmask w.p. ``p_unmask`` to a token drawn from the model's mean (one
    call), free clean tokens are masked w.p. ``p_remask``: both in one pass of the fused
    masked step (:func:`ddkit.steps.masked_step` with the kernel ``backend``). Returns the new
    tokens."""
    logits = state.calls.mean_logits(state.x, state.t)
    return steps.masked_step(state, logits, p_unmask, tokens=UNFILTERED, remask_prob=p_remask, backend=backend)


def predictor_step(state: ddkit.SamplerState, corrector: str) -> Tensor:
    """The step ``t - s`` the predictor just took, ``[B]`` float64 (``state.previous_t - state.t``)."""
    if state.previous_t is None:
        raise ValueError(f"the {corrector} corrector scales its time by the predictor's step t - s, and no step "
                         f"was taken yet; give the corrector a step_size to use it outside a sampler's walk")
    return (state.previous_t - state.t).to(torch.float64)


class ForwardBackwardCorrector(ddkit.Corrector):
    def __init__(self, step_multiplier: StepMultiplier = 1.5, step_size: StepSize = None,
                 num_steps: Annotated[int, Field(ge=1, description="corrector steps per predictor step")] = 1,
                 entry_time: Annotated[float, Field(ge=0.0, le=1.0, description="correct only at s <= this")] = 1.0,
                 backend: Backend = "auto", **common):
        super().__init__(**common)
        self.backend = backend
        self.step_multiplier = float(step_multiplier)
        self.step_size = None if step_size is None else float(step_size)
        self.num_steps = int(num_steps)
        self.entry_time = float(entry_time)

    def __repr__(self):
        return (f"ForwardBackwardCorrector(step_multiplier={self.step_multiplier}, step_size={self.step_size}, "
                f"num_steps={self.num_steps}, entry_time={self.entry_time}, every={self.every})")

    def step_length(self, state: ddkit.SamplerState) -> Tensor:
        """The corrector time :math:`h` of one step, ``[B]``."""
        if self.step_size is not None:
            return torch.full((state.x.shape[0],), self.step_size, dtype=torch.float64, device=state.x.device)
        return self.step_multiplier * predictor_step(state, "forward_backward")

    def correct(self, state):
        h = self.step_length(state)
        if self.entry_time < 1.0:  # every time is <= 1: no test needed at the default
            active = state.t <= self.entry_time
            if not bool(active.any()):
                return
            h = torch.where(active, h, 0.0)
        masked = masked_rates(state)
        if masked is None:
            for _ in range(self.num_steps):
                state.x = exponential_step(state, corrector_rates(state), h)
            return
        p_unmask, p_remask = torch.expm1(-h * masked).neg_()  # one pass for both
        for _ in range(self.num_steps):
            state.x = masked_corrector_step(state, p_unmask, p_remask, backend=self.backend)


@ddkit.hookimpl
def register_correctors(register):
    register("forward_backward", ForwardBackwardCorrector,
             summary="Campbell et al.: forward + reverse rates at s, at most one jump per position, P = 1 - exp(-h sum)")
