r"""A causal (autoregressive) transformer: the ``causal_dit`` model plugin.

The logits at position :math:`n` are computed from the tokens before it only,

.. math::  \ell_n = f_\theta(\mathrm{bos}, x_0, \dots, x_{n-1})_n ,

by one causal pass over the input shifted right by one (the mask token stands for the start
of the sequence). This is block diffusion with blocks of one token (``block_length`` is 1):
the noisy block of a position is that position alone, and the prediction for it never reads
it, so the training pass of ``block_elbo`` is one pass over the :math:`N` clean tokens
(:meth:`CausalDiT.two_stream`) instead of ``block_dit``'s pass over :math:`2N`, at the cost of
a standard autoregressive model. Sampling uses the plain denoiser contract (the first masked
position's logits read the committed prefix) or the KV cache of ``block_dit``
(:meth:`CausalDiT.begin`, :meth:`CausalDiT.extend`, :meth:`CausalDiT.commit`), which keeps
the last committed token aside: it is the input of the next position.

Declared capabilities: ``block_causal = True``, ``block_length = 1``. No time conditioning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor

import ddkit

from .block_dit import BlockDiT, KVCache, block_causal_mask
from .dit import transformer_params


@dataclass
class ShiftedKVCache(KVCache):
    """:class:`KVCache` plus the input of the next position: the last committed token
    (``[B, 1]``; the start token before any commit)."""

    last: Tensor | None = None


class CausalDiT(BlockDiT):
    """Causal transformer with a right-shifted input; see the module docstring."""

    def __init__(self, block_length: Annotated[Literal[1], Field(
            description="always 1: every position is its own block")] = 1, **dit_params):
        super().__init__(block_length=block_length, **dit_params)

    @property
    def start_token(self) -> int:
        """The input id before the first token: the mask state (``num_states - 1``)."""
        return self.num_states - 1

    def shift(self, x: Tensor) -> Tensor:
        """``[bos, x_0, ..., x_{N-2}]``: the input whose output ``n`` predicts ``x_n``."""
        return torch.cat([x.new_full((x.shape[0], 1), self.start_token), x[:, :-1]], dim=1)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        N = self._check(x_t)
        positions = torch.arange(N, device=x_t.device)
        mask = block_causal_mask(N, 1, x_t.device)
        return self.head(self.norm(self._run(self.embed(self.shift(x_t)), positions, mask)))

    def two_stream(self, x_t: Tensor, x0: Tensor) -> Tensor:
        """The logits of every position given the clean tokens before it: the forward pass on
        ``x_0`` (position ``n``'s noisy block is ``x_t[n]`` alone, which its logits never read)."""
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 {tuple(x0.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
        return self.forward(x0, None)

    def begin(self, batch: int, context: int | None = None) -> ShiftedKVCache:
        if context is not None:
            raise ValueError("causal_dit has no context window (its first input in a window would be the token "
                             "before it, which the plain forward cannot see); use block_dit with block_length 1")
        cache = super().begin(batch)
        start = torch.full((batch, 1), self.start_token, dtype=torch.long, device=self.embed.weight.device)
        return ShiftedKVCache(cache.keys, cache.values, cache.length, last=start)

    def extend(self, cache: ShiftedKVCache, x_block: Tensor) -> Tensor:
        return self.head(self.norm(self._cached(cache, self._inputs(cache, x_block), store=False)))

    def commit(self, cache: ShiftedKVCache, x_block: Tensor) -> None:
        self._cached(cache, self._inputs(cache, x_block), store=True)
        cache.last = x_block[:, -1:]

    @staticmethod
    def _inputs(cache: ShiftedKVCache, x_block: Tensor) -> Tensor:
        """The shifted inputs of the positions ``cache.length ..`` that hold ``x_block``."""
        return torch.cat([cache.last, x_block[:, :-1]], dim=1)


@ddkit.hookimpl
def register_models(register):
    register("causal_dit", CausalDiT, params=transformer_params(CausalDiT),
             summary="causal transformer (autoregressive, block diffusion with block_length 1) in one N-token pass")
