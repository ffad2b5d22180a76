r"""Ancestral sampling: the discrete-time reverse process on a time grid.

For each step :math:`t \to s` of the grid (:func:`ddkit.time_grid`, uniform or cosine) every
free position draws :math:`x_s \sim p_\theta(x_s \mid x_t) = \sum_{x_0}\mu_\theta(x_0)\,
q(x_s \mid x_t, x_0)` from the process's posterior (:meth:`ddkit.Process.posterior_probs`), so
it works for every process that provides one. For the masked process a masked token stays
masked w.p. :math:`\frac{1-\alpha_s}{1-\alpha_t}` and becomes :math:`j` w.p.
:math:`\frac{\alpha_s-\alpha_t}{1-\alpha_t}\mu_\theta(x_t)_j`; clean tokens never change.

* :math:`\mu_\theta` is filtered by temperature, top-k and top-p; categories are drawn in
  float64 (:func:`ddkit.categorical.sample_categorical`);
* the last step denoises to data: extra states (the mask) get probability zero there, and
  ``final_argmax`` takes the most likely token instead of sampling;
* ``cache``: with a parameterization without time conditioning the denoiser is called only
  when the tokens changed; for an absorbing process it is not called once no free mask
  remains. Then NFE equals the number of steps in which some token changed.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import ddkit
from ddkit.categorical import filter_logits, sample_categorical

from ._options import TokenSamplingParams


class AncestralSampler(ddkit.Sampler):
    def __init__(self, steps: int = 128, grid: Literal["uniform", "cosine"] = "uniform",
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 cache: bool = True, final_argmax: bool = False,
                 parameterization: ddkit.Parameterization | str = "mean"):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps, self.grid = int(steps), grid
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.cache, self.final_argmax = cache, final_argmax
        self.parameterization = ddkit.build("parameterization", parameterization)

    @torch.no_grad()
    def sample(self, denoiser, process, *, num_samples=None, length=None, prompt=None,
               generator=None, device=None, record_trajectory=False) -> ddkit.SampleResult:
        self.check_process(process)
        x, fixed = self.initial_state(process, num_samples=num_samples, length=length,
                                      prompt=prompt, generator=generator, device=device)
        calls = ddkit.DenoiserCalls(denoiser, process, self.parameterization, cache=self.cache)
        grid = ddkit.time_grid(self.steps, self.grid, device=x.device)
        trajectory = [x.clone()] if record_trajectory else None
        batch, V = x.shape[0], process.vocab_size
        absorbing = process.mask_id is not None
        steps_taken = 0
        for i in range(self.steps):
            if absorbing and not bool(((x == process.mask_id) & ~fixed).any()):
                break
            t, s = grid[i].expand(batch), grid[i + 1].expand(batch)
            last = i == self.steps - 1
            logits = filter_logits(calls(x, t), temperature=self.temperature,
                                   top_k=self.top_k, top_p=self.top_p)
            probs = process.posterior_probs(x, logits.softmax(-1), s, t)
            if last:
                probs[..., V:] = 0.0  # the final state is data
            if last and self.final_argmax:
                new = probs.argmax(-1)
            else:
                new = sample_categorical(probs, generator=generator)
            x = torch.where(fixed, x, new)
            steps_taken = i + 1
            if trajectory is not None:
                trajectory.append(x.clone())
        return ddkit.SampleResult(tokens=x, nfe=calls.nfe, steps=steps_taken,
                                  trajectory=trajectory, fixed=fixed)


class AncestralParams(TokenSamplingParams):
    steps: int = Field(128, ge=1)
    grid: Literal["uniform", "cosine"] = "uniform"
    cache: bool = True
    final_argmax: bool = False


@ddkit.hookimpl
def register_samplers(register):
    register("ancestral", AncestralSampler, params=AncestralParams,
             summary="discrete-time reverse process on a uniform or cosine grid, cached")
