r"""Confidence decoding for masked diffusion: MaskGIT, LLaDA low-confidence remasking and
Fast-dLLM threshold decoding, as unmasking rules of ``ancestral``.

Each step :math:`i` of the sampler's ``steps`` draws a token at every free masked position
from the filtered mean (float64, :func:`ddkit.kernels.categorical`: temperature, top-k and
top-p apply), scores it with a confidence computed from the token's probability at
temperature 1 (float64, :func:`ddkit.kernels.token_probability`: no float64 copy of the
logits), and commits a number of the most confident (:func:`ddkit.kernels.commit_topk`);
the others stay masked. The last step
commits every remaining position. Committed tokens never change (none of these remask
clean tokens; MaskGIT's "re-masking" means "not committed this step"), and fixed positions
never change.

* ``maskgit`` (Chang et al. 2022): confidence :math:`\log\mu(\hat x) + \tau_0 (1 - r) g`,
  :math:`g` standard Gumbel noise annealed with :math:`r = (i+1)/T` (``choice_temperature``
  :math:`\tau_0`, default 4.5); after the step :math:`\lfloor n_0 \cos(\frac{\pi}{2} r)\rfloor`
  positions stay masked (at least one and at most all but one of those still masked;
  ``schedule: linear`` uses :math:`1 - r`), :math:`n_0` the free masks at the start;
* ``low_confidence`` (LLaDA): commit :math:`\lfloor M/T\rfloor + [i < M \bmod T]` per step
  (the linear schedule's expected count, made deterministic; :math:`M` the free masks at the
  start), the most confident by :math:`\mu(\hat x)` at temperature 1 (``remasking:
  low_confidence``) or uniformly at random (``remasking: random``);
* ``threshold`` (Fast-dLLM): commit every position whose :math:`\mu(\hat x)` reaches
  ``threshold`` (default 0.9), and always the most confident one; with enough ``steps``
  (e.g. the number of positions) it stops when nothing is masked, so its NFE depends on the
  data.

These decoders do not sample the model's distribution (they favour confident tokens);
measure them, as the oracle report does. A time-conditioned denoiser is called at the time
where the schedule's clean fraction equals the sequence's current fraction of committed free
positions (its inverse; a schedule without one is refused for such a denoiser).

Example (YAML): ``sampler: {name: ancestral, steps: 64, rule: {name: threshold,
threshold: 0.9}}``.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field

import ddkit
from ddkit import kernels


class ConfidenceRule(ddkit.UnmaskingRule):
    """Draw at every free mask, score, commit the most confident (module docstring).
    Subclasses give :meth:`confidence` and :meth:`commit_count`."""

    def start(self, state, grid):
        if state.calls.parameterization.time_conditioning and not state.process.schedule.invertible:
            raise ValueError(f"{type(self).__name__} calls a time-conditioned denoiser at the time matching the "
                             f"committed fraction, which needs an invertible schedule; "
                             f"{type(state.process.schedule).__name__} is not")
        free = ~state.fixed
        state.scratch.update(initial_masks=state.free_masked().sum(-1), free_positions=free.sum(-1),
                             rule_steps=len(grid) - 1)

    def model_time(self, state, t):
        if not state.calls.parameterization.time_conditioning:
            return t
        clean = (state.scratch["free_positions"] - state.free_masked().sum(-1)).to(torch.float64)
        return state.process.schedule.inverse(clean / state.scratch["free_positions"].clamp_min(1))

    def step(self, state, i, s, t, *, last, tokens, argmax, backend):
        x, generator = state.x, state.generator
        eligible = state.free_masked()
        logits = state.calls.mean_logits(x, self.model_time(state, t))
        rows = logits[eligible]
        u = torch.rand(rows.shape[0], generator=generator, dtype=torch.float64, device=x.device)
        drawn = rows.argmax(-1) if argmax else kernels.categorical(
            rows, u, temperature=tokens.temperature, top_k=tokens.top_k, top_p=tokens.top_p, backend=backend)
        p = kernels.token_probability(rows, drawn, backend=backend)
        score = torch.full(x.shape, float("-inf"), dtype=torch.float64, device=x.device)
        score = score.masked_scatter(eligible, self.confidence(state, i, p))
        candidate = x.masked_scatter(eligible, drawn)
        if last:
            commit = eligible
        else:
            commit = self.commit(state, i, score, eligible, backend)
        return torch.where(commit, candidate, x)

    def confidence(self, state, i, p):
        """Confidence of each drawn token from its probability ``p`` at temperature 1 (rows of
        the free masked positions), float64."""
        raise NotImplementedError

    def commit(self, state, i, score, eligible, backend):
        return kernels.commit_topk(score, eligible, self.commit_count(state, i, eligible), backend=backend)

    def commit_count(self, state, i, eligible):
        """Positions to commit per sequence this step, ``[B]``."""
        raise NotImplementedError


class MaskGITRule(ConfidenceRule):
    def __init__(self, choice_temperature: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 4.5,
                 schedule: Literal["cosine", "linear"] = "cosine"):
        self.choice_temperature = float(choice_temperature)
        self.schedule = schedule

    def confidence(self, state, i, p):
        r = (i + 1) / state.scratch["rule_steps"]
        if self.choice_temperature == 0:
            return p.log()
        u = torch.rand(p.shape, generator=state.generator, dtype=torch.float64, device=p.device)
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))
        return p.log() + self.choice_temperature * (1.0 - r) * gumbel

    def commit_count(self, state, i, eligible):
        r = (i + 1) / state.scratch["rule_steps"]
        ratio = math.cos(math.pi / 2 * r) if self.schedule == "cosine" else 1.0 - r
        unknown = eligible.sum(-1)
        keep = torch.floor(state.scratch["initial_masks"].to(torch.float64) * ratio).long()
        keep = torch.maximum(torch.ones_like(keep), torch.minimum(unknown - 1, keep))
        return (unknown - keep).clamp_min(0)


class LowConfidenceRule(ConfidenceRule):
    def __init__(self, remasking: Literal["low_confidence", "random"] = "low_confidence"):
        self.remasking = remasking

    def confidence(self, state, i, p):
        if self.remasking == "random":
            return torch.rand(p.shape, generator=state.generator, dtype=torch.float64, device=p.device)
        return p

    def commit_count(self, state, i, eligible):
        total, steps = state.scratch["initial_masks"], state.scratch["rule_steps"]
        return total // steps + (i < total % steps).long()


class ThresholdRule(ConfidenceRule):
    def __init__(self, threshold: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 0.9):
        self.threshold = float(threshold)

    def confidence(self, state, i, p):
        return p

    def commit(self, state, i, score, eligible, backend):
        best = kernels.commit_topk(score, eligible, 1, backend=backend)
        return best | (eligible & (score >= self.threshold))


@ddkit.hookimpl
def register_unmasking_rules(register):
    register("maskgit", MaskGITRule, summary="MaskGIT: commit the most confident (annealed Gumbel), cosine count")
    register("low_confidence", LowConfidenceRule,
             summary="LLaDA: commit a fixed number per step, the most confident (or random)")
    register("threshold", ThresholdRule,
             summary="Fast-dLLM: commit every token whose probability reaches the threshold (at least one)")
