r"""Categorical sampling in float64, and the logit filters samplers share.

Sampling uses the inverse CDF with one uniform per row: the category is the first ``k``
with :math:`\sum_{j \le k} p_j > u \sum_j p_j`. Unlike a float32 Gumbel-max it keeps the
tail of the distribution (a category of probability 1e-9 is drawn at that rate) and needs
one uniform per row rather than a noise tensor the size of the probabilities; rows are
processed in chunks (:func:`rows_per_chunk`), so the float64 working copy is bounded too.
Samplers draw tokens from logits through :func:`ddkit.kernels.categorical`, which applies the
same filters without materialising them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import NumericalError


#: float64 elements per chunk on CPU / CUDA: at least ..., at most ...; in between an eighth
#: of the input
CHUNK_ELEMENTS = {"cpu": (1 << 16, 1 << 20), "cuda": (1 << 20, 1 << 24)}


def rows_per_chunk(num_rows: int, row_length: int, device: torch.device, *, divisor: int = 1) -> int:
    """Rows of one chunk of a row-wise float64 computation: an eighth of the input, clamped to
    :data:`CHUNK_ELEMENTS` for the device and divided by ``divisor`` (the number of float64
    temporaries per element beyond the first), and at least one row."""
    low, high = CHUNK_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    elements = min(max(num_rows * row_length // 8, low), high) // divisor
    return max(1, elements // row_length)


def sample_categorical(probs: Tensor, *, generator: torch.Generator | None = None,
                       uniforms: Tensor | None = None) -> Tensor:
    """Draw one category per row of ``probs`` (``[..., K]``, non-negative, need not sum to 1).

    ``uniforms`` (shape ``probs.shape[:-1]``, values in ``[0, 1)``) replaces the generator
    when a caller needs to control the randomness. A row summing to zero or to a non-finite
    value raises :class:`ddkit.NumericalError`. If ``u`` is within an ulp of 1 the last
    category whose cumulative sum increases is returned (never a zero-probability one)."""
    if uniforms is None:
        uniforms = torch.rand(probs.shape[:-1], generator=generator, dtype=torch.float64,
                              device=probs.device)
    K = probs.shape[-1]
    flat = probs.reshape(-1, K)
    u = uniforms.to(device=probs.device, dtype=torch.float64).reshape(-1)
    out = torch.empty(flat.shape[0], dtype=torch.long, device=probs.device)
    step = rows_per_chunk(flat.shape[0], K, probs.device)
    for start in range(0, flat.shape[0], step):
        rows = slice(start, start + step)
        cdf = flat[rows].to(torch.float64).cumsum(-1)
        total = cdf[:, -1:]
        if bool((total <= 0).any()) or not bool(torch.isfinite(total).all()):
            raise NumericalError("categorical probabilities must be finite with a positive sum in every row")
        index = torch.searchsorted(cdf, u[rows, None] * total, right=True).squeeze(-1)
        overflow = index >= K
        if bool(overflow.any()):
            increases = cdf[overflow] > torch.nn.functional.pad(cdf[overflow, :-1], (1, 0))
            index[overflow] = (K - 1) - increases.flip(-1).to(torch.int8).argmax(-1)
        out[rows] = index
    return out.reshape(probs.shape[:-1])


def group_before(values: Tensor, cumulative: Tensor) -> Tensor:
    """For rows sorted in decreasing order with their inclusive cumulative sums: the sum over
    all strictly larger entries, read at the start of each run of equal values (ties share
    one value)."""
    V = values.shape[-1]
    positions = torch.arange(V, device=values.device).expand_as(values)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[..., 1:] = values[..., 1:] != values[..., :-1]
    start = positions.masked_fill(~starts, 0).cummax(-1).values
    before = cumulative.gather(-1, (start - 1).clamp_min(0))
    return before.masked_fill(start == 0, 0.0)


def filter_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> Tensor:
    r"""Apply temperature, then top-k, then nucleus (top-p) filtering; returns float64 logits.

    * temperature :math:`\tau > 0`: logits / :math:`\tau`; :math:`\tau = 0` means argmax
      (only the maximal logits stay finite);
    * top-k: keep the ``k`` largest logits per row (all entries tied with the k-th stay);
    * top-p: keep the smallest set of most likely values whose probability reaches ``p``:
      an entry stays iff the mass of strictly more likely entries is below ``p`` (all entries
      tied with a kept one stay).
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
            before = group_before(sorted_logits, sorted_logits.softmax(-1).cumsum(-1))
            drop_sorted = before >= top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            out = out.masked_fill(drop, float("-inf"))
    return out
