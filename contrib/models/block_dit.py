r"""A block-causal transformer for block diffusion (BD3-LM, Arriola et al. 2025): the
``block_dit`` model plugin.

The sequence is split into blocks of ``block_length`` :math:`L'` positions. Attention is
*block-causal*: a position of block :math:`b` attends to every position of blocks
:math:`\le b`. Three ways to call it:

* ``model(x_t, t)`` — the plain denoiser contract, one stream with the block-causal mask. At
  sampling time the input is committed blocks, the noisy current block and masked later
  blocks; the later blocks cannot influence the earlier ones;
* :meth:`BlockDiT.two_stream` ``(x_t, x_0)`` — training, one pass over the :math:`2N` tokens
  :math:`x_t \oplus x_0` with the mask

  .. math::  M = \underbrace{[b_q = b_k,\ s_q = s_k]}_{\text{block-diagonal}}
             \lor \underbrace{[b_q > b_k,\ s_q = t,\ s_k = 0]}_{\text{noisy sees earlier clean}}
             \lor \underbrace{[b_q \ge b_k,\ s_q = s_k = 0]}_{\text{clean stream: block-causal}}

  (:func:`two_stream_mask`; :math:`s` the stream, :math:`b` the block). Both halves use the
  positions :math:`0..N-1` (RoPE); the clean stream never attends to the noisy one, so its
  states are those of committed blocks at sampling time. Returns the logits of the noisy half;
* the KV cache — :meth:`BlockDiT.begin`, :meth:`BlockDiT.extend` (logits of a new block that
  attends to the cache and to itself) and :meth:`BlockDiT.commit` (append a clean block's
  keys and values): sampling one block costs :math:`L'` tokens per call instead of :math:`N`.
  With ``begin(batch, context=W)`` the cache is a sliding window: a block sees at most the
  :math:`W - L'` most recent committed positions, numbered from 0 at the window's start (the
  keys are kept before RoPE and rotated again when the window moves); sequences can then be
  longer than ``max_seq_len``. The cached states of a committed block stay those computed
  from the window it was committed in (as in BD3-LM), so only a one-layer model gives
  exactly the plain forward on the :math:`W` positions alone.

With :math:`L' = 1` this is a causal (autoregressive) transformer: position :math:`n` sees
positions :math:`\le n`, itself masked while it is predicted. Declared capabilities:
``block_causal = True`` and ``block_length``. No time conditioning (the BD3-LM setting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

import ddkit

from .dit import DiT, apply_rotary, transformer_params


def block_causal_mask(length: int, block_length: int, device: torch.device | str | None = None) -> Tensor:
    """``[N, N]`` bool, True where query ``q`` may attend to key ``k``: block(q) >= block(k)."""
    block = torch.arange(length, device=device) // block_length
    return block[:, None] >= block[None, :]


def two_stream_mask(length: int, block_length: int, device: torch.device | str | None = None) -> Tensor:
    """``[2N, 2N]`` bool mask of the training pass over ``x_t ⊕ x_0`` (module docstring):
    queries and keys ``0..N-1`` are the noisy stream, ``N..2N-1`` the clean one."""
    index = torch.arange(2 * length, device=device)
    clean = index >= length
    block = (index - clean.long() * length) // block_length
    same_stream = clean[:, None] == clean[None, :]
    diagonal = (block[:, None] == block[None, :]) & same_stream
    noisy_sees_clean = (block[:, None] > block[None, :]) & clean[None, :] & ~clean[:, None]
    clean_causal = (block[:, None] >= block[None, :]) & clean[None, :] & clean[:, None]
    return diagonal | noisy_sees_clean | clean_causal


@dataclass
class KVCache:
    """Keys and values of the committed positions, per layer (``[B, H, n, D]``, after RoPE),
    and how many positions they cover. With a ``context`` window, also the keys before RoPE
    (``raw_keys``), to rotate them again when the window moves."""

    keys: list[Tensor]
    values: list[Tensor]
    length: int = 0
    context: int | None = None
    raw_keys: list[Tensor] | None = None


class BlockDiT(DiT):
    """Block-causal transformer; see the module docstring."""

    block_causal = True

    def __init__(self, block_length: Annotated[int, Field(ge=1, description="block size L' (1: autoregressive)")] = 4,
                 **dit_params):
        if dit_params.get("time_conditioning"):
            raise ValueError("block_dit has no time conditioning (block diffusion's denoiser is time-independent)")
        super().__init__(**dit_params)
        self.block_length = int(block_length)

    # -- the three passes ----------------------------------------------------------------

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        N = self._check(x_t)
        mask = block_causal_mask(N, self.block_length, x_t.device)
        positions = torch.arange(N, device=x_t.device)
        return self.head(self.norm(self._run(self.embed(x_t), positions, mask)))

    def two_stream(self, x_t: Tensor, x0: Tensor) -> Tensor:
        """Logits ``[B, N, V]`` of the noisy stream of one pass over ``x_t ⊕ x_0``."""
        N = self._check(x_t)
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 {tuple(x0.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
        positions = torch.arange(N, device=x_t.device).repeat(2)  # both halves at 0..N-1
        mask = two_stream_mask(N, self.block_length, x_t.device)
        h = self._run(self.embed(torch.cat([x_t, x0], dim=1)), positions, mask)
        return self.head(self.norm(h[:, :N]))

    def begin(self, batch: int, context: int | None = None) -> KVCache:
        """An empty cache for ``batch`` sequences; ``context``: the window (module docstring)."""
        if context is not None and not self.block_length <= context <= self.max_seq_len:
            raise ValueError(f"context must be between block_length {self.block_length} and max_seq_len "
                             f"{self.max_seq_len}, got {context}")
        W, H = self.embed.embedding_dim, self.blocks[0].heads
        empty = self.embed.weight.new_zeros(batch, H, 0, W // H)
        layers = len(self.blocks)
        return KVCache([empty] * layers, [empty] * layers, context=context,
                       raw_keys=None if context is None else [empty] * layers)

    def extend(self, cache: KVCache, x_block: Tensor) -> Tensor:
        """Logits ``[B, L, V]`` of the positions ``cache.length ..`` holding ``x_block``
        (``[B, L]``), attending to the cache and to each other (one block)."""
        return self.head(self.norm(self._cached(cache, x_block, store=False)))

    def commit(self, cache: KVCache, x_block: Tensor) -> None:
        """Append the keys and values of a finished (clean) block to the cache."""
        self._cached(cache, x_block, store=True)

    # -- internals ----------------------------------------------------------------------

    def _check(self, x_t: Tensor) -> int:
        if x_t.dim() != 2:
            raise ValueError(f"x_t must be [B, N], got shape {tuple(x_t.shape)}")
        N = x_t.shape[1]
        if N > self.max_seq_len:
            raise ValueError(f"sequence length {N} exceeds the model's max_seq_len {self.max_seq_len}")
        return N

    def _qkv(self, block, h: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Queries and keys after RoPE, values, and the keys before RoPE."""
        B, n, W = h.shape
        q, k, v = block.qkv(block.norm1(h)).view(B, n, 3, block.heads, W // block.heads).permute(2, 0, 3, 1, 4)
        return self._rotate(q, positions), self._rotate(k, positions), v, k

    def _rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        return apply_rotary(x, self.rope_cos[positions], self.rope_sin[positions])

    def _finish(self, block, h: Tensor, a: Tensor) -> Tensor:
        B, n, W = h.shape
        h = h + F.dropout(block.proj(a.transpose(1, 2).reshape(B, n, W)), block.dropout, block.training)
        return h + F.dropout(block.mlp(block.norm2(h)), block.dropout, block.training)

    def _run(self, h: Tensor, positions: Tensor, mask: Tensor) -> Tensor:
        for block in self.blocks:
            q, k, v, _ = self._qkv(block, h, positions)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=block.dropout if self.training else 0.0)
            h = self._finish(block, h, a)
        return h

    def _cached(self, cache: KVCache, x_block: Tensor, *, store: bool) -> Tensor:
        L = x_block.shape[1]
        if cache.context is not None and cache.length + L > cache.context:
            self._slide(cache, cache.length + L - cache.context)
        start = cache.length
        if start + L > self.max_seq_len:
            raise ValueError(f"sequence length {start + L} exceeds the model's max_seq_len {self.max_seq_len}")
        positions = torch.arange(start, start + L, device=x_block.device)
        h = self.embed(x_block)
        for i, block in enumerate(self.blocks):
            q, k, v, raw = self._qkv(block, h, positions)
            keys, values = torch.cat([cache.keys[i], k], dim=2), torch.cat([cache.values[i], v], dim=2)
            if store:
                cache.keys[i], cache.values[i] = keys, values
                if cache.raw_keys is not None:
                    cache.raw_keys[i] = torch.cat([cache.raw_keys[i], raw], dim=2)
            # the block sees every cached position and all of itself: no mask
            h = self._finish(block, h, F.scaled_dot_product_attention(q, keys, values))
        if store:
            cache.length += L
        return h

    def _slide(self, cache: KVCache, drop: int) -> None:
        """Forget the ``drop`` oldest positions and number the rest from 0 again."""
        kept = cache.length - drop
        positions = torch.arange(kept, device=self.rope_cos.device)
        for i in range(len(self.blocks)):
            cache.raw_keys[i] = cache.raw_keys[i][:, :, drop:]
            cache.values[i] = cache.values[i][:, :, drop:]
            cache.keys[i] = self._rotate(cache.raw_keys[i], positions)
        cache.length = kept


@ddkit.hookimpl
def register_models(register):
    register("block_dit", BlockDiT, params=transformer_params(BlockDiT),
             summary="block-causal transformer for block diffusion (BD3-LM); block_length 1 is autoregressive")
