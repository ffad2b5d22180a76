r"""Ancestral sampling: the discrete-time reverse process on a time grid.

For each step :math:`t \to s` of the grid (:func:`ddkit.time_grid`, uniform or cosine) every
free position draws :math:`x_s \sim p_\theta(x_s \mid x_t) = \sum_{x_0}\mu_\theta(x_0)\,
q(x_s \mid x_t, x_0)` from the process's posterior (:func:`ddkit.steps.posterior_step`), so
it works for every process that provides one. For an absorbing process (masked diffusion) the
step is the sampler's unmasking ``rule`` (a plugin kind, :class:`ddkit.UnmaskingRule`); the
default, ``posterior``, is exactly the posterior: a masked token stays masked w.p.
:math:`\frac{1-\alpha_s}{1-\alpha_t}` and becomes :math:`j` w.p.
:math:`\frac{\alpha_s-\alpha_t}{1-\alpha_t}\mu_\theta(x_t)_j`; clean tokens never change.

* :math:`\mu_\theta` is filtered by temperature, top-k and top-p; categories are drawn in
  float64;
* the masked posterior step runs as one fused kernel (:func:`ddkit.steps.masked_step`); only
  the unmasking rows of the denoiser output are read. ``backend`` picks the kernel
  implementation (``auto``: Numba for CPU tensors, torch on GPU); all backends give identical
  samples for one seed;
* the last step denoises to data: extra states (the mask) get probability zero there, and
  ``final_argmax`` takes the most likely token instead of sampling;
* ``cache``: with a parameterization without time conditioning the denoiser is called only
  when the tokens changed; for an absorbing process without a corrector or a remasking rule
  sampling stops once no free mask remains. Then NFE equals the number of steps in which
  some token changed.
"""

from __future__ import annotations

import ddkit
from ddkit import steps
from ddkit.sampler import Backend, GridSampler, UnmaskingRuleSpec


class AncestralSampler(GridSampler):
    def __init__(self, backend: Backend = "auto", rule: UnmaskingRuleSpec = "posterior", **grid_params):
        super().__init__(**grid_params)
        self.backend = backend
        self.rule = ddkit.build("unmasking_rule", rule)

    def start(self, state):
        super().start(state)
        if "absorbing" in state.process.capabilities:
            self.rule.start(state, state.scratch["grid"])
        elif not self.rule.is_posterior:
            raise ValueError(f"unmasking rule {type(self.rule).__name__} needs an absorbing process; "
                             f"{type(state.process).__name__} is not (use rule: posterior)")

    def finished(self, state):
        if self.rule.remasks and "absorbing" in state.process.capabilities:
            return state.step >= self.steps
        return super().finished(state)

    def step(self, state):
        t, s = self.times(state)
        last = self.last_step(state)
        argmax = last and self.final_argmax
        if "absorbing" in state.process.capabilities:
            state.x = self.rule.step(state, state.step, s, t, last=last, tokens=self.tokens, argmax=argmax,
                                     backend=self.backend)
        else:
            state.x = steps.posterior_step(state, state.calls.log_mean(state.x, t), s, t, tokens=self.tokens,
                                           last=last, argmax=argmax)
        state.t = s


@ddkit.hookimpl
def register_samplers(register):
    register("ancestral", AncestralSampler,
             summary="discrete-time reverse process on a uniform or cosine grid, cached")
