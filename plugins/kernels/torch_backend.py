r"""Torch kernels: every operation of :mod:`ddkit.kernels` on any device (CPU, CUDA, ...).

Categorical sampling works on chunks of rows, so its extra memory is bounded by the chunk
(:func:`ddkit.categorical.rows_per_chunk`), never a float64 copy of the whole ``[B, N, V]``
logits. Within a chunk it
takes the fast path of the module docstring of :mod:`ddkit.kernels`: ``torch.exp`` (one ulp),
any summation order, then certifies every decision against
:func:`ddkit.kernels.certified_margin`; rows that fail (a uniform within about
:math:`4V \cdot 2^{-52}` of a boundary, so essentially only constructed inputs) are recomputed
with :func:`ddkit.kernels.reference_categorical` on the CPU. The result equals the reference
bit for bit on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor

import ddkit
from ddkit.categorical import rows_per_chunk
from ddkit.kernels import (
    KernelBackend,
    TokenFilter,
    _row_codes,
    certified_margin,
    reference_categorical,
    reference_exp,
)

class TorchKernels(KernelBackend):
    """The torch backend: every operation, every device; ``auto`` falls back to it."""

    name = "torch"

    def auto_priority(self, op: str, device: torch.device) -> int | None:
        return 0

    def categorical(self, logits: Tensor, uniforms: Tensor, token_filter: TokenFilter) -> Tensor:
        R, V = logits.shape
        out = torch.empty(R, dtype=torch.long, device=logits.device)
        step = rows_per_chunk(R, V, logits.device, divisor=_temporaries(token_filter))
        for start in range(0, R, step):
            rows = slice(start, start + step)
            out[rows] = sample_chunk(logits[rows], uniforms[rows], token_filter)
        return out

    def masked_step(self, x: Tensor, logits: Tensor, p_unmask: Tensor, u_move: Tensor, u_token: Tensor,
                    mask_id: int, token_filter: TokenFilter, argmax: bool,
                    remask: tuple[Tensor, Tensor, Tensor] | None) -> Tensor:
        out = x.clone()
        if remask is not None:  # clean positions of x only: the unmasking ones are masked in x
            sigma, u_remask, fixed = remask
            out.masked_fill_((x != mask_id) & ~fixed & (u_remask < sigma), mask_id)
        flat, u_flat = out.view(-1), u_token.view(-1)
        selected = ((x == mask_id) & (u_move < p_unmask)).view(-1).nonzero().squeeze(1)
        V = logits.shape[1]
        step = rows_per_chunk(selected.numel(), V, logits.device, divisor=_temporaries(token_filter))
        for start in range(0, selected.numel(), step):
            index = selected[start:start + step]
            rows = logits.index_select(0, index)
            flat[index] = argmax_rows(rows) if argmax else sample_chunk(rows, u_flat[index], token_filter)
        return out

    def commit_topk(self, scores: Tensor, eligible: Tensor, k: Tensor) -> Tensor:
        # ascending sort of -score puts high scores first; NaN (ineligible) sorts last; the
        # stable sort keeps equal scores in position order
        key = (-scores).masked_fill(~eligible, float("nan"))
        order = key.argsort(dim=-1, stable=True)
        N = scores.shape[1]
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(N, device=scores.device).expand_as(order))
        return eligible & (rank < k[:, None])

    def token_probability(self, logits: Tensor, tokens: Tensor) -> Tensor:
        R, V = logits.shape
        out = torch.empty(R, dtype=torch.float64, device=logits.device)
        step = rows_per_chunk(R, V, logits.device)
        for start in range(0, R, step):
            rows = slice(start, start + step)
            z = logits[rows].to(torch.float64)
            m = z.amax(-1, keepdim=True)
            usable = _row_codes(m).squeeze(-1) == 0
            w = reference_exp(z - m.masked_fill(~usable[:, None], 0.0))
            p = w.gather(-1, tokens[rows, None]).squeeze(-1) / w.cumsum(-1)[:, -1]  # sequential, as the reference
            out[rows] = p.masked_fill(~usable, float("nan"))
        return out

    def mask_noise(self, x0: Tensor, keep: Tensor, uniforms: Tensor, mask_id: int) -> Tensor:
        return x0.masked_fill(uniforms >= keep, mask_id)

    def any_equal(self, x: Tensor, value: int) -> bool:
        return bool((x == value).any())

    def uniform_noise(self, x0: Tensor, keep: Tensor, u_keep: Tensor, u_token: Tensor, vocab_size: int) -> Tensor:
        replacement = (u_token * vocab_size).to(torch.long).clamp_max(vocab_size - 1)
        return torch.where(u_keep < keep, x0, replacement)


def _temporaries(token_filter: TokenFilter) -> int:
    """float64-sized temporaries per element of a chunk: one, or about five with top-p (sorted
    values, their order, cumulative sums, group starts)."""
    return 5 if token_filter.p < 1 else 1


def argmax_rows(rows: Tensor) -> Tensor:
    """First maximal entry of each row, or the row's error code."""
    code = _row_codes(rows.amax(-1))
    return torch.where(code != 0, code, rows.argmax(-1))


def sample_chunk(rows: Tensor, uniforms: Tensor, token_filter: TokenFilter) -> Tensor:
    """The certified fast path on one chunk ``rows [R, V]`` (module docstring)."""
    V = rows.shape[1]
    tau = token_filter.temperature
    z = rows.to(torch.float64, copy=True)
    if tau not in (0.0, 1.0):
        z.div_(tau)
    m = z.amax(-1, keepdim=True)
    code = _row_codes(m).squeeze(-1)
    m.masked_fill_(code[:, None] != 0, 0.0)
    doubtful = torch.zeros_like(code, dtype=torch.bool)
    if tau == 0:
        w = (z == m).to(torch.float64)  # exact: weights 1, sums are small integers
        del z
    else:
        k = token_filter.k_for(V)
        if k:
            z.masked_fill_(z < z.topk(k, dim=-1).values[:, -1:], float("-inf"))
        nucleus = token_filter.p < 1
        if nucleus:
            values, order = z.sort(-1, descending=True)
            start = _group_starts(values)
        w = z.sub_(m).exp_()
        if nucleus:
            total = w.sum(-1, keepdim=True)
            cumulative = values.sub_(m).exp_().cumsum_(-1)
            before = cumulative.gather(-1, (start - 1).clamp_min(0)).masked_fill_(start == 0, 0.0)
            del cumulative, start
            limit = token_filter.p * total
            doubtful |= ((before - limit).abs() <= certified_margin(V, total)).any(-1)
            drop = torch.zeros_like(w, dtype=torch.bool).scatter_(-1, order, before >= limit)
            del before, order, values
            w.masked_fill_(drop, 0.0)
            del drop
    cdf = w.cumsum_(-1)
    total = cdf[:, -1:]
    target = uniforms[:, None] * total
    index = torch.searchsorted(cdf, target, right=True)
    if tau != 0:
        margin = certified_margin(V, total)
        above = cdf.gather(-1, index.clamp_max(V - 1))
        below = cdf.gather(-1, (index - 1).clamp_min(0)).masked_fill_(index == 0, 0.0)
        doubtful |= ((target - below <= margin) | (above - target <= margin)).squeeze(-1)
    index = index.squeeze(-1)
    doubtful |= index >= V
    doubtful &= code == 0
    if bool(doubtful.any()):
        redo = doubtful.nonzero().squeeze(1)
        index[redo] = reference_categorical(rows[redo], uniforms[redo], token_filter)
    return torch.where(code != 0, code, index)


def _group_starts(values: Tensor) -> Tensor:
    """For rows sorted in decreasing order: the position where each entry's run of equal
    values starts."""
    starts = torch.ones_like(values, dtype=torch.bool)
    torch.ne(values[:, 1:], values[:, :-1], out=starts[:, 1:])
    positions = torch.arange(values.shape[1], device=values.device).expand_as(values)
    return positions.masked_fill(~starts, 0).cummax(-1).values


@ddkit.hookimpl
def register_kernels(register):
    register("torch", TorchKernels, summary="torch kernels for every device; certified float64 inverse CDF")
