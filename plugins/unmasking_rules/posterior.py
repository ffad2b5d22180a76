r"""The ``posterior`` unmasking rule: masked diffusion's exact reverse step.

Each free masked position unmasks w.p. :math:`\frac{\alpha_s-\alpha_t}{1-\alpha_t}` (1 on the
last step) and draws its token from the filtered mean :math:`\mu_\theta(x_t)`; clean tokens
never change (no remasking). With a scalar schedule the step runs as one fused kernel
(:func:`ddkit.steps.masked_step`) that reads only the logits of unmasking rows; a
vector-valued schedule (one :math:`\alpha` per token) goes through the general posterior
(:func:`ddkit.steps.posterior_step`).
"""

from __future__ import annotations

import ddkit
from ddkit import steps


class PosteriorRule(ddkit.UnmaskingRule):
    is_posterior = True

    def start(self, state, grid):
        schedule = state.process.schedule
        if schedule.alpha(grid[:1]).shape == (1,):
            p_unmask = steps.unmask_probabilities(schedule, grid)
            # one [B, 1] row per step, in the kernel's layout (no per-step conversion)
            state.scratch["p_unmask"] = p_unmask[:, None, None].expand(-1, state.x.shape[0], 1).contiguous()

    def step(self, state, i, s, t, *, last, tokens, argmax, backend):
        p_unmask = state.scratch.get("p_unmask")
        if p_unmask is None:
            return steps.posterior_step(state, state.calls.log_mean(state.x, t), s, t, tokens=tokens,
                                        last=last, argmax=argmax)
        return steps.masked_step(state, state.calls.mean_logits(state.x, t), p_unmask[i], tokens=tokens,
                                 argmax=argmax, backend=backend)


@ddkit.hookimpl
def register_unmasking_rules(register):
    register("posterior", PosteriorRule,
             summary="the masked posterior: unmask w.p. (alpha_s - alpha_t)/(1 - alpha_t), never remask")
