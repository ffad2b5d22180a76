r"""Categorical sampling in float64, and the logit filters samplers share.

Sampling uses the inverse CDF with one uniform per row: the category is the first ``k``
with :math:`\sum_{j \le k} p_j > u \sum_j p_j`. Unlike a float32 Gumbel-max it keeps the
tail of the distribution (a category of probability 1e-9 is drawn at that rate) and needs
one uniform per row rather than a noise tensor the size of the probabilities.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sample_categorical(probs: Tensor, *, generator: torch.Generator | None = None,
                       uniforms: Tensor | None = None) -> Tensor:
    """Draw one category per row of ``probs`` (``[..., K]``, non-negative, need not sum to 1).

    ``uniforms`` (shape ``probs.shape[:-1]``, values in ``[0, 1)``) replaces the generator
    when a caller needs to control the randomness. Rows summing to zero raise."""
    cdf = probs.to(torch.float64).cumsum(-1)
    total = cdf[..., -1:]
    if bool((total <= 0).any()) or not bool(torch.isfinite(total).all()):
        raise ValueError("categorical probabilities must be finite with a positive sum in every row")
    if uniforms is None:
        uniforms = torch.rand(probs.shape[:-1], generator=generator, dtype=torch.float64,
                              device=probs.device)
    target = uniforms.to(torch.float64)[..., None] * total
    index = torch.searchsorted(cdf, target, right=True)
    return index.squeeze(-1).clamp_max(probs.shape[-1] - 1)


def filter_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> Tensor:
    r"""Apply temperature, then top-k, then nucleus (top-p) filtering; returns float64 logits.

    * temperature :math:`\tau > 0`: logits / :math:`\tau`; :math:`\tau = 0` means argmax
      (only the maximal logits stay finite);
    * top-k: keep the ``k`` largest logits per row (all entries tied with the k-th stay);
    * top-p: keep the smallest set of most likely entries whose probability reaches ``p``.
    Filtered entries become ``-inf``."""
    out = logits.to(torch.float64)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return out.masked_fill(out < out.amax(-1, keepdim=True), float("-inf"))
    if temperature != 1.0:
        out = out / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_k < out.shape[-1]:
            kth = out.topk(top_k, dim=-1).values[..., -1:]
            out = out.masked_fill(out < kth, float("-inf"))
    if top_p is not None:
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_p < 1:
            sorted_logits, order = out.sort(-1, descending=True)
            probs = sorted_logits.softmax(-1)
            before = probs.cumsum(-1) - probs  # mass strictly more likely than each entry
            drop_sorted = before >= top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            out = out.masked_fill(drop, float("-inf"))
    return out
