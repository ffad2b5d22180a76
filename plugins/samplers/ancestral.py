r"""Ancestral sampling: the discrete-time reverse process on a time grid.

For each step :math:`t \to s` of the grid (:func:`ddkit.time_grid`, uniform or cosine) every
free position draws :math:`x_s \sim p_\theta(x_s \mid x_t) = \sum_{x_0}\mu_\theta(x_0)\,
q(x_s \mid x_t, x_0)` from the process's posterior (:meth:`ddkit.Process.posterior_probs`), so
it works for every process that provides one. For the masked process a masked token stays
masked w.p. :math:`\frac{1-\alpha_s}{1-\alpha_t}` and becomes :math:`j` w.p.
:math:`\frac{\alpha_s-\alpha_t}{1-\alpha_t}\mu_\theta(x_t)_j`; clean tokens never change.

* :math:`\mu_\theta` is filtered by temperature, top-k and top-p; categories are drawn in
  float64 (:func:`ddkit.categorical.sample_categorical`);
* for an absorbing process (masked diffusion) the step runs as one fused kernel,
  :func:`ddkit.kernels.masked_step`: each free masked position unmasks iff
  :math:`u < \frac{\alpha_s - \alpha_t}{1 - \alpha_t}` and then draws its token from the
  filtered :math:`\mu_\theta` with a second uniform; only the unmasking rows of the denoiser
  output are read. ``backend`` picks the kernel implementation (``auto``: Numba for CPU
  tensors, torch on GPU); all backends give identical samples for one seed;
* the last step denoises to data: extra states (the mask) get probability zero there, and
  ``final_argmax`` takes the most likely token instead of sampling;
* ``cache``: with a parameterization without time conditioning the denoiser is called only
  when the tokens changed; for an absorbing process it is not called once no free mask
  remains. Then NFE equals the number of steps in which some token changed.
"""

from __future__ import annotations

from typing import Literal

import torch

import ddkit
import ddkit.kernels
from ddkit.categorical import filter_logits, sample_categorical

from ._options import GridParams, KernelSamplingParams


class AncestralSampler(ddkit.Sampler):
    def __init__(self, steps: int = 128, grid: Literal["uniform", "cosine"] = "uniform",
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 cache: bool = True, final_argmax: bool = False,
                 parameterization: ddkit.Parameterization | str = "mean", backend: str = "auto"):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps, self.grid = int(steps), grid
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.cache, self.final_argmax = cache, final_argmax
        self.parameterization = ddkit.build("parameterization", parameterization)
        self.backend = ddkit.kernels.check_backend_name(backend)

    @torch.no_grad()
    def sample(self, denoiser, process, *, num_samples=None, length=None, prompt=None,
               generator=None, device=None, record_trajectory=False) -> ddkit.SampleResult:
        self.check_process(process)
        x, fixed = self.initial_state(process, num_samples=num_samples, length=length,
                                      prompt=prompt, generator=generator, device=device)
        grid = ddkit.time_grid(self.steps, self.grid, device=x.device)
        trajectory = [x.clone()] if record_trajectory else None
        batch = x.shape[0]
        absorbing = process.mask_id is not None
        # the fused kernel needs the masked posterior with one alpha per sequence; it reads
        # only masked rows, so it takes the mean's logits without the carry-over
        fused = absorbing and "absorbing" in process.capabilities and \
            process.schedule.alpha(grid[:1]).shape == (1,)
        calls = ddkit.DenoiserCalls(denoiser, process, self.parameterization, cache=self.cache,
                                    output="mean_logits" if fused else "log_mean")
        if fused:
            p_unmask = self.unmask_probabilities(process.schedule, grid)
        steps_taken = 0
        for i in range(self.steps):
            # fixed (prompt) positions hold clean tokens, so only free positions can be masked
            if absorbing and not bool((x == process.mask_id).any()):
                break
            t, s = grid[i].expand(batch), grid[i + 1].expand(batch)
            last = i == self.steps - 1
            if fused:
                x = self._masked_step(calls(x, t), x, process, p_unmask[i], last, generator)
            else:
                x = self._posterior_step(calls(x, t), x, fixed, process, s, t, last, generator)
            steps_taken = i + 1
            if trajectory is not None:
                trajectory.append(x.clone())
        return ddkit.SampleResult(tokens=x, nfe=calls.nfe, steps=steps_taken,
                                  trajectory=trajectory, fixed=fixed)

    def _posterior_step(self, log_mean, x, fixed, process, s, t, last, generator):
        """Any process: sample the posterior over all states (float64, ``[B, N, S]``)."""
        logits = filter_logits(log_mean, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        probs = process.posterior_probs(x, logits.softmax(-1), s, t)
        if last:
            probs[..., process.vocab_size:] = 0.0  # the final state is data
        if last and self.final_argmax:
            new = probs.argmax(-1)
        else:
            new = sample_categorical(probs, generator=generator)
        return torch.where(fixed, x, new)

    @staticmethod
    def unmask_probabilities(schedule: ddkit.Schedule, grid: torch.Tensor) -> torch.Tensor:
        r"""Per step :math:`t_i \to t_{i+1}` of ``grid``, the masked posterior's probability
        that a masked token unmasks, :math:`(\alpha_s - \alpha_t)/(1 - \alpha_t)`; 1 on the
        last step, whose state is data."""
        alpha = schedule.alpha(grid)
        alpha_t, alpha_s = alpha[:-1], alpha[1:]
        p = (alpha_s - alpha_t) / (1.0 - alpha_t).clamp_min(torch.finfo(torch.float64).tiny)
        p[-1] = 1.0
        return p

    def _masked_step(self, logits, x, process, p_unmask, last, generator):
        """Masked posterior step: each masked token unmasks w.p. ``p_unmask`` and draws its
        token from the filtered mean (``logits``: :meth:`ddkit.Parameterization.mean_logits`).
        Only masked positions change, so fixed positions stay as they are."""
        u_move = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device)
        u_token = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device)
        return ddkit.kernels.masked_step(
            x, logits, p_unmask, u_move, u_token, mask_id=process.mask_id, temperature=self.temperature,
            top_k=self.top_k, top_p=self.top_p, argmax=last and self.final_argmax, backend=self.backend)


class AncestralParams(GridParams, KernelSamplingParams):
    pass


@ddkit.hookimpl
def register_samplers(register):
    register("ancestral", AncestralSampler, params=AncestralParams,
             summary="discrete-time reverse process on a uniform or cosine grid, cached")
