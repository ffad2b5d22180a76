r"""The sampler protocol: from a denoiser and a process to samples.

A sampler walks the reverse process from :math:`t = 1` (the prior) to :math:`t = 0`.
Shared pieces live here so every sampler behaves the same way:

* :meth:`Sampler.initial_state` draws the prior and writes the prompt: a ``prompt`` entry in
  ``0..V-1`` is *fixed* (prefix or infill) and never changes; an entry ``-1`` (or the mask id)
  is generated;
* :class:`DenoiserCalls` calls the denoiser through the parameterization, counts the
  number of function evaluations (NFE) and reuses the last output when the tokens did not
  change and the parameterization promises a time-independent denoiser;
* :func:`time_grid` gives the decreasing time grid of a discrete-time sampler;
* every sampler returns a :class:`SampleResult` that reports its NFE.

Samplers declare the process capabilities they need in ``requires`` (e.g. ``"absorbing"``);
:meth:`Sampler.check_process` turns a mismatch into a clear error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor

from .denoiser import Denoiser
from .parameterization import Parameterization
from .process import Process

FREE = -1  #: prompt value of a position to generate

Grid = Literal["uniform", "cosine"]


@dataclass
class SampleResult:
    """Samples ``tokens`` (``[B, N]``), the number of denoiser calls ``nfe``, the number of
    sampler ``steps`` taken, and the states after every step if recorded (first entry: the
    initial state)."""

    tokens: Tensor
    nfe: int
    steps: int
    trajectory: list[Tensor] | None = None
    fixed: Tensor | None = field(default=None, repr=False)


def time_grid(num_steps: int, grid: Grid = "uniform", *, dtype: torch.dtype = torch.float64,
              device: torch.device | str | None = None) -> Tensor:
    r"""Times :math:`t(T) = 1 > \dots > t(0) = 0`, returned in the order a sampler visits them
    (``num_steps + 1`` entries, decreasing).

    * ``uniform``: :math:`t(i) = i/T`;
    * ``cosine`` (MD4): :math:`t(i) = \cos(\frac{\pi}{2}(1 - i/T))`, which spends more steps
      near :math:`t = 0` (with the linear schedule it acts like the cosine schedule)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    i = torch.arange(num_steps, -1, -1, dtype=dtype, device=device) / num_steps
    if grid == "uniform":
        return i
    if grid == "cosine":
        t = torch.cos(math.pi / 2 * (1 - i))
        t[0], t[-1] = 1.0, 0.0  # exact endpoints: cos(pi/2) is 6e-17, not 0
        return t
    raise ValueError(f"unknown time grid {grid!r}; use 'uniform' or 'cosine'")


class DenoiserCalls:
    r"""Calls ``parameterization.log_mean(denoiser, x, t, process)`` (or, with
    ``output="log_score"`` or ``"mean_logits"``, that method), counting calls in ``nfe``. With
    ``cache=True`` and a parameterization without time conditioning, a call with the same
    ``x`` as the previous one returns the previous output without calling the denoiser (valid
    only because the output cannot depend on ``t``; ratios derived from a mean depend on ``t``
    through the process, so ``log_score`` is cached only for a parameterization that predicts
    the score itself)."""

    def __init__(self, denoiser: Denoiser, process: Process, parameterization: Parameterization,
                 *, cache: bool = False, output: Literal["log_mean", "mean_logits", "log_score"] = "log_mean"):
        if output not in ("log_mean", "mean_logits", "log_score"):
            raise ValueError(f"output must be 'log_mean', 'mean_logits' or 'log_score', got {output!r}")
        self.denoiser = denoiser
        self.process = process
        self.parameterization = parameterization
        self.output = output
        direct = output != "log_score" or getattr(parameterization, "predicts", "mean") == "score"
        self.cache = cache and direct and not parameterization.time_conditioning
        self.nfe = 0
        self._last_x: Tensor | None = None
        self._last_out: Tensor | None = None

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.cache and self._last_x is not None and torch.equal(self._last_x, x):
            return self._last_out
        out = getattr(self.parameterization, self.output)(self.denoiser, x, t, self.process)
        self.nfe += 1
        if self.cache:
            self._last_x, self._last_out = x.clone(), out
        return out


class Sampler:
    """Base class. Subclasses implement :meth:`sample`."""

    #: process capabilities this sampler needs
    requires: ClassVar[frozenset[str]] = frozenset()

    def sample(self, denoiser: Denoiser, process: Process, *, num_samples: int | None = None,
               length: int | None = None, prompt: Tensor | None = None,
               generator: torch.Generator | None = None,
               device: torch.device | str | None = None,
               record_trajectory: bool = False) -> SampleResult:
        """Draw ``num_samples`` sequences of ``length`` tokens, or complete ``prompt``
        (``[B, N]``; entries ``-1`` or the mask id are generated, others kept)."""
        raise NotImplementedError

    def check_process(self, process: Process) -> None:
        missing = self.requires - process.capabilities
        if missing:
            raise ValueError(
                f"sampler {type(self).__name__} needs a process with {sorted(missing)}; "
                f"{type(process).__name__} has {sorted(process.capabilities) or 'none'}"
            )

    @staticmethod
    def initial_state(process: Process, *, num_samples: int | None, length: int | None,
                      prompt: Tensor | None, generator: torch.Generator | None,
                      device: torch.device | str | None) -> tuple[Tensor, Tensor]:
        """``(x, fixed)``: a prior draw with the prompt's fixed tokens written in, and the
        boolean mask of fixed positions."""
        if prompt is None:
            if num_samples is None or length is None:
                raise ValueError("give either prompt or both num_samples and length")
            if num_samples < 1 or length < 1:
                raise ValueError(f"num_samples and length must be >= 1, got {num_samples}, {length}")
            shape = (num_samples, length)
            fixed = torch.zeros(shape, dtype=torch.bool, device=device)
            prompt = torch.full(shape, FREE, dtype=torch.long, device=device)
        else:
            if prompt.dim() != 2 or prompt.dtype != torch.long:
                raise ValueError(f"prompt must be a LongTensor [B, N], got {prompt.dtype} {tuple(prompt.shape)}")
            if num_samples is not None and num_samples != prompt.shape[0]:
                raise ValueError(f"num_samples={num_samples} disagrees with prompt batch {prompt.shape[0]}")
            if length is not None and length != prompt.shape[1]:
                raise ValueError(f"length={length} disagrees with prompt length {prompt.shape[1]}")
            free = (prompt == FREE) | (prompt == (process.mask_id if process.mask_id is not None else FREE))
            bad = ~free & ((prompt < 0) | (prompt >= process.vocab_size))
            if bool(bad.any()):
                raise ValueError(f"prompt entries must be in 0..{process.vocab_size - 1}, -1 or the mask id")
            device = prompt.device if device is None else device
            prompt = prompt.to(device)
            fixed = ~free.to(device)
        x = process.sample_prior(tuple(prompt.shape), generator=generator, device=device)
        return torch.where(fixed, prompt, x), fixed
