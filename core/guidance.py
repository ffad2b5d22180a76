r"""Classifier-free guidance for masked diffusion, as a denoiser combinator.

The conditional logits :math:`\ell_c = f(x_t)` and the unconditional ones
:math:`\ell_u = f(x_t \text{ with every condition position replaced by the mask})` (the
"unsupervised" guidance of Nie et al.: a masked diffusion model has seen fully masked
prompts, so no condition dropout in training is needed) are combined per token as

.. math::  \ell = \ell_u + (w + 1)(\ell_c - \ell_u),
           \qquad \text{i.e.}\quad p \propto p_c^{\,w+1} / p_u^{\,w},

``w = 0`` being no guidance (then the denoiser is called once and its output returned as
is). This tilts each position's conditional, not the joint law: the samples do not follow
:math:`p(x \mid c)^{w+1} p(x)^{-w}` exactly. Both passes run as one batched call, and the
combinator declares ``evaluations_per_call = 2``, so :class:`ddkit.DenoiserCalls` counts both
in NFE. It works with every sampler, since it is a denoiser::

    >>> import torch, ddkit
    >>> process = ddkit.build("process", "masked", vocab_size=3)
    >>> prompt = torch.tensor([[0, -1, -1, 2]])
    >>> net = lambda x_t, t: torch.zeros(*x_t.shape, 3)
    >>> guided = ddkit.guidance.ClassifierFreeGuidance(net, 1.5, condition=prompt >= 0, mask_id=process.mask_id)
    >>> ddkit.build("sampler", "first_hitting").sample(guided, process, prompt=prompt).nfe  # 2 tokens, 2 passes each
    4
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .denoiser import Denoiser


class ClassifierFreeGuidance:
    """``denoiser`` guided with scale ``w``; ``condition`` (bool ``[B, N]`` or ``[N]``) marks
    the positions the unconditional pass masks (the prompt)."""

    def __init__(self, denoiser: Denoiser, scale: float, *, condition: Tensor, mask_id: int):
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"guidance scale must be a finite number >= 0, got {scale}")
        if condition.dtype != torch.bool or condition.dim() not in (1, 2):
            raise ValueError(f"condition must be a BoolTensor [B, N] or [N], got {condition.dtype} "
                             f"{tuple(condition.shape)}")
        self.denoiser, self.scale, self.condition, self.mask_id = denoiser, float(scale), condition, int(mask_id)
        self.evaluations_per_call = 1 if self.scale == 0 else 2

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        if self.scale == 0:
            return self.denoiser(x_t, t)
        condition = self.condition.to(x_t.device).expand_as(x_t)
        unconditional = x_t.masked_fill(condition, self.mask_id)
        t = torch.as_tensor(t, device=x_t.device)
        both = self.denoiser(torch.cat([x_t, unconditional]), torch.cat([t, t]) if t.dim() else t)
        conditional, unconditional_logits = both.chunk(2)
        return unconditional_logits + (self.scale + 1.0) * (conditional - unconditional_logits)

    def __repr__(self) -> str:
        return f"ClassifierFreeGuidance({self.denoiser!r}, scale={self.scale})"
