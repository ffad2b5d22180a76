r"""ReMDM: the remasking posterior of masked diffusion (Wang et al. 2025).

One step :math:`t \to s` (:math:`\alpha_s \ge \alpha_t`) with a remasking probability
:math:`\sigma_t \in [0, \sigma_t^{\max}]`, :math:`\sigma_t^{\max} = \min\big(1,
\frac{1-\alpha_s}{\alpha_t}\big)`, and :math:`\mu_\theta` the model's clean-token distribution:

.. math::
    q_\sigma(z_s \mid z_t = x) &= (1 - \sigma_t)\,\delta_x + \sigma_t\,\delta_m
        && \text{(a clean token is masked again w.p. } \sigma_t),\\
    q_\sigma(z_s \mid z_t = m) &= \frac{\alpha_s - (1-\sigma_t)\alpha_t}{1 - \alpha_t}\,\mu_\theta
        + \frac{1 - \alpha_s - \sigma_t\alpha_t}{1 - \alpha_t}\,\delta_m .

Both coefficients lie in :math:`[0, 1]` exactly when :math:`0 \le \sigma_t \le
\sigma_t^{\max}`; :math:`\sigma_t = 0` is the plain posterior (``posterior`` rule). For a
:math:`\sigma_t` that is the same at masked and clean positions, each position's marginal
stays the masked-diffusion marginal :math:`q_s` (with the exact :math:`\mu`): the mask
probability :math:`(1-\alpha_t)\frac{1-\alpha_s-\sigma\alpha_t}{1-\alpha_t} + \alpha_t\sigma
= 1 - \alpha_s`. ``strategy`` chooses :math:`\sigma_t`:

* ``cap``: :math:`\min(\eta, \sigma_t^{\max})` (``eta`` default 0.008);
* ``rescale``: :math:`\eta\,\sigma_t^{\max}` (default 0.015);
* ``conf``: per clean position :math:`\ell`, :math:`\sigma_t^\ell = \sigma_t^{\max}\,
  \mathrm{softmax}_\ell(-\psi^\ell)`, the softmax over the free clean positions, with
  :math:`\psi^\ell` the probability the model gave the token when it was unmasked (kept in
  ``state.confidence``, float64). The weights sum to 1 over the sequence, so about
  :math:`\sigma_t^{\max}` tokens in total are remasked per step, not :math:`\sigma_t^{\max}`
  per token as with ``cap`` / ``rescale`` — gentler, and as in the reference implementation.
  Masked positions use :math:`\sigma = 0`, so this strategy does *not* keep the marginals
  exactly: it adds :math:`\alpha_t\,\mathbb{E}[\sigma^\ell]` to the mask probability;
* ``loop`` (``t_on`` 0.55, ``t_off`` 0.05, ``alpha_on`` 0.9, ``eta`` 0.02): on the same grid,
  for :math:`t > t_{on}` a plain step on the remapped schedule
  :math:`\alpha(t) = \alpha_{on}\frac{1-t}{1-t_{on}}`; for :math:`t_{off} < t \le t_{on}`
  :math:`\alpha` frozen at :math:`\alpha_{on}` with :math:`\sigma = \eta` (clean tokens remask
  w.p. :math:`\eta`, masks unmask w.p. :math:`\frac{\eta\alpha_{on}}{1-\alpha_{on}}`: the
  expected number of masks stays constant while tokens are resampled); for
  :math:`t \le t_{off}` a plain step on :math:`\alpha(t) = 1 - t\frac{1-\alpha_{on}}{t_{off}}`.
  The denoiser is called at the time where the process's own schedule has the remapped
  :math:`\alpha` (its inverse); a schedule without an inverse is refused for a
  time-conditioned parameterization, whose network would otherwise see the wrong time;
* ``fb`` (forward–backward baseline): :math:`\sigma_t = \frac{\alpha_s - \alpha_t}{\alpha_t}`
  **clamped** to :math:`\sigma_t^{\max}` (unclamped it exceeds the bound near
  :math:`t = 0` and gives a negative probability);
* ``none``: :math:`\sigma = 0`, the plain posterior.

The masked rows go through the fused masked step (:func:`ddkit.steps.masked_step`, Numba or
torch), the remasking of clean positions is one uniform per position, drawn only when some
:math:`\sigma > 0` (so ``eta: 0`` gives exactly the ``posterior`` rule's samples). The last
step goes to data: no remasking, every mask unmasks. Fixed (prompt) positions never change.
Needs a schedule with one :math:`\alpha` per sequence.

Example (YAML): ``sampler: {name: ancestral, steps: 1024, top_p: 0.9, rule: {name: remdm,
strategy: loop}}``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

import ddkit
from ddkit import steps

Eta = Annotated[float | None, Field(ge=0.0, le=1.0, allow_inf_nan=False,
                                     description="eta of the strategy (default: the paper's)")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]

#: the paper's eta of the strategies that have one
DEFAULT_ETA = {"cap": 0.008, "rescale": 0.015, "loop": 0.02}


def remasking_bound(alpha_s, alpha_t):
    r""":math:`\sigma^{\max} = \min(1, (1 - \alpha_s)/\alpha_t)` (1 where :math:`\alpha_t = 0`)."""
    return torch.where(alpha_t > 0, (1.0 - alpha_s) / alpha_t.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.ones_like(alpha_t)).clamp(max=1.0)


def remasking_probs(x, mean, alpha_s, alpha_t, sigma, mask_id):
    r"""The remasking posterior :math:`q_\sigma(z_s \mid z_t = x)` over the ``V + 1`` states,
    ``[B, N, V + 1]`` float64 (module docstring); ``alpha_s``, ``alpha_t``, ``sigma``
    broadcast against ``[B, N]``; ``mean`` ``[B, N, V]``."""
    alpha_s, alpha_t, sigma = (torch.as_tensor(a, dtype=torch.float64).expand(x.shape) for a in (alpha_s, alpha_t, sigma))
    V = mean.shape[-1]
    masked = x == mask_id
    unmask = (alpha_s - (1.0 - sigma) * alpha_t) / (1.0 - alpha_t)
    stay_masked = (1.0 - alpha_s - sigma * alpha_t) / (1.0 - alpha_t)
    on_mask = torch.cat([unmask[..., None] * mean.to(torch.float64), stay_masked[..., None]], -1)
    own = torch.nn.functional.one_hot(x.clamp_max(V - 1), V + 1).to(torch.float64)
    on_clean = (1.0 - sigma)[..., None] * own
    on_clean[..., V] = sigma
    return torch.where(masked[..., None], on_mask, on_clean)


class RemaskingRule(ddkit.UnmaskingRule):
    def __init__(self, strategy: Literal["cap", "rescale", "conf", "loop", "fb", "none"] = "rescale",
                 eta: Eta = None, t_on: Fraction = 0.55, t_off: Fraction = 0.05, alpha_on: Fraction = 0.9):
        if eta is not None and strategy not in DEFAULT_ETA:
            raise ValueError(f"eta applies to the strategies {sorted(DEFAULT_ETA)}, not {strategy!r} (got eta={eta})")
        if strategy == "loop" and not (t_off < t_on and 0 < alpha_on < 1):
            raise ValueError(f"loop needs t_off < t_on and 0 < alpha_on < 1, got t_on={t_on}, t_off={t_off}, "
                             f"alpha_on={alpha_on}")
        if strategy == "loop" and eta is not None and eta > (1.0 - alpha_on) / alpha_on:
            raise ValueError(f"loop's eta={eta} exceeds the plateau's bound (1 - alpha_on)/alpha_on = "
                             f"{(1.0 - alpha_on) / alpha_on:.6g}: masks would unmask with probability above 1")
        self.strategy = strategy
        self.eta = DEFAULT_ETA.get(strategy, 0.0) if eta is None else float(eta)
        self.remasks = strategy in ("conf", "fb") or (strategy in DEFAULT_ETA and self.eta > 0)
        self.t_on, self.t_off, self.alpha_on = float(t_on), float(t_off), float(alpha_on)

    def __repr__(self):
        return f"RemaskingRule(strategy={self.strategy!r}, eta={self.eta})"

    # -- per-run coefficients -----------------------------------------------------------

    def loop_alpha(self, t):
        """The loop's piecewise-linear schedule: 0 -> alpha_on on [t_on, 1], flat on
        [t_off, t_on], alpha_on -> 1 on [0, t_off]."""
        a_on, t_on, t_off = self.alpha_on, self.t_on, self.t_off
        return torch.where(t >= t_on, a_on * (1.0 - t) / (1.0 - t_on),
                           torch.where(t >= t_off, torch.full_like(t, a_on), 1.0 - t * (1.0 - a_on) / t_off))

    def start(self, state, grid):
        schedule = state.process.schedule
        if schedule.alpha(grid[:1]).shape != (1,):
            raise ValueError(f"the remdm rule needs a schedule with one alpha per sequence; "
                             f"{type(schedule).__name__} gives one per token")
        tiny = torch.finfo(torch.float64).tiny
        if self.strategy == "loop":
            alpha = self.loop_alpha(grid)
            plateau = (grid[:-1] > self.t_off) & (grid[:-1] <= self.t_on)
            alpha_t = torch.where(plateau, self.alpha_on, alpha[:-1])
            alpha_s = torch.where(plateau, self.alpha_on, alpha[1:])
            sigma = torch.where(plateau, self.eta, 0.0)
            model_times = grid[:-1]
            if state.calls.parameterization.time_conditioning:
                if not schedule.invertible:
                    raise ValueError(
                        f"remdm loop remaps time: a time-conditioned denoiser must be called at the time "
                        f"where {type(schedule).__name__} has the remapped alpha, but the schedule has no "
                        f"inverse; use an invertible schedule or a denoiser without time conditioning")
                model_times = schedule.inverse(alpha_t)
        else:
            alpha = schedule.alpha(grid)
            alpha_t, alpha_s = alpha[:-1], alpha[1:]
            bound = remasking_bound(alpha_s, alpha_t)
            sigma = {"cap": lambda: torch.minimum(torch.full_like(bound, self.eta), bound),
                     "rescale": lambda: self.eta * bound,
                     "conf": lambda: bound,  # times the per-position weights, at each step
                     "fb": lambda: ((alpha_s - alpha_t) / alpha_t.clamp_min(tiny)).clamp(min=0.0).minimum(bound),
                     "none": lambda: torch.zeros_like(bound)}[self.strategy]()
            model_times = grid[:-1]
        sigma[-1] = 0.0  # the last step goes to data
        # conf remasks only clean positions: masked rows keep sigma = 0 (module docstring)
        sigma_masked = torch.zeros_like(sigma) if self.strategy == "conf" else sigma
        unmask = (alpha_s - (1.0 - sigma_masked) * alpha_t) / (1.0 - alpha_t).clamp_min(tiny)
        unmask[-1] = 1.0
        state.scratch.update(remdm_sigma=sigma, remdm_remasks=(sigma > 0).tolist(), remdm_unmask=unmask,
                             remdm_times=model_times)
        if self.strategy == "conf":
            state.confidence = torch.full(state.x.shape, float("inf"), dtype=torch.float64, device=state.x.device)

    # -- one step -----------------------------------------------------------------------

    def step(self, state, i, s, t, *, last, tokens, argmax, backend):
        x, mask_id, scratch = state.x, state.process.mask_id, state.scratch
        logits = state.calls.mean_logits(x, scratch["remdm_times"][i].expand(x.shape[0]))
        remasks = scratch["remdm_remasks"][i]
        sigma = scratch["remdm_sigma"][i] if remasks else None
        if remasks and self.strategy == "conf":  # weights softmax(-psi) over the free clean positions
            clean = (x != mask_id) & ~state.fixed
            sigma = sigma * torch.softmax((-state.confidence).masked_fill(~clean, float("-inf")), -1).nan_to_num(0.0)
        # one pass: masks unmask, clean tokens of x are masked again (those just unmasked are not)
        new = steps.masked_step(state, logits, scratch["remdm_unmask"][i], tokens=tokens, argmax=argmax,
                                remask_prob=sigma, backend=backend)
        if self.strategy == "conf":
            self._record_confidence(state, x, new, logits)
        if remasks and state.confidence is not None:
            state.confidence = state.confidence.masked_fill((new == mask_id) & (x != mask_id), float("inf"))
        return new

    @staticmethod
    def _record_confidence(state, x, new, logits):
        """psi: the probability the model gave each token when it was unmasked."""
        newly = (x == state.process.mask_id) & (new != state.process.mask_id)
        if bool(newly.any()):
            rows = torch.log_softmax(logits[newly].to(torch.float64), -1)
            psi = rows.gather(-1, new[newly][:, None]).squeeze(-1).exp()
            state.confidence = state.confidence.masked_scatter(newly, psi)


@ddkit.hookimpl
def register_unmasking_rules(register):
    register("remdm", RemaskingRule,
             summary="ReMDM remasking posterior: cap, rescale, conf, loop, forward-backward")
