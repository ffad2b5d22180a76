r"""A DiT-style transformer denoiser (the ``dit`` model plugin).

The network maps a noisy sequence to logits over the clean vocabulary, following the
denoiser contract ``model(x_t [B, N] long, t [B] or [B, N]) -> logits [B, N, V]``:

.. math::  h^{0} = E[x_t], \qquad
           h^{\ell+1} = h' + \mathrm{MLP}(\mathrm{LN}(h')),\quad
           h' = h^{\ell} + \mathrm{Attn}(\mathrm{LN}(h^{\ell})), \qquad
           \mathrm{logits} = W_{out}\,\mathrm{LN}(h^{L})

* the embedding :math:`E` covers all ``S = num_states`` input states (``V + 1`` for the
  masked process: the mask has its own embedding), the output covers the ``V`` clean tokens;
* attention is bidirectional (non-causal) through
  :func:`torch.nn.functional.scaled_dot_product_attention`, with rotary position embeddings
  (RoPE) on queries and keys: the pair :math:`(x_{2i}, x_{2i+1})` at position :math:`n` is
  rotated by the angle :math:`n\,\theta^{-2i/d}`;
* pre-norm blocks; optional adaLN time conditioning (off by default, since the optimal
  masked-diffusion denoiser does not depend on :math:`t`): a sinusoidal embedding of
  :math:`t` drives a per-block shift, scale and gate,
  :math:`h + g \odot f((1 + s) \odot \mathrm{LN}(h) + b)`, initialised to the identity
  (:math:`g = s = b = 0`). Times of shape ``[B, N]`` condition each token separately.

Example::

    >>> import torch
    >>> net = DiT(vocab_size=27, width=32, depth=2, heads=2, max_seq_len=16)
    >>> net(torch.randint(0, 28, (2, 16)), torch.zeros(2)).shape
    torch.Size([2, 16, 27])
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

import ddkit


def rotary_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    r"""``(cos, sin)`` of the RoPE angles :math:`n\,\theta^{-2i/d}`, each ``[length, head_dim/2]``."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    r"""Rotate consecutive pairs of the last axis of ``x`` (``[B, H, N, D]``):
    :math:`(x_1, x_2) \mapsto (x_1\cos - x_2\sin,\; x_1\sin + x_2\cos)`, computed as the
    complex product :math:`(x_1 + i x_2)\,e^{i\theta}` (in float32, no strided slicing)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2).to(x.dtype)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    r"""Sinusoidal features :math:`[\cos(1000 t\,\omega_i), \sin(1000 t\,\omega_i)]` with
    :math:`\omega_i = P^{-i/(d/2)}`; the factor 1000 spreads :math:`t \in [0, 1]` over the
    frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[..., None] * freqs
    return torch.cat([args.cos(), args.sin()], dim=-1)


class Block(nn.Module):
    """Pre-norm transformer block; adaLN-modulated when ``conditioned``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, conditioned: bool):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=not conditioned)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=not conditioned)
        hidden = int(mlp_ratio * width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.dropout = dropout
        self.modulation = nn.Linear(width, 6 * width) if conditioned else None

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor, cond: Tensor | None,
                attn_mask: Tensor | None = None) -> Tensor:
        """``attn_mask``: which keys each query may attend to (bool, broadcast to
        ``[B, heads, N, N]``; e.g. ``flex_dit`` masks its padding out), all by default."""
        B, N, W = h.shape
        if self.modulation is not None:
            mod = self.modulation(cond)
            if mod.dim() == 2:  # one time per sequence
                mod = mod[:, None, :]
            shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        x = self.norm1(h)
        if self.modulation is not None:
            x = x * (1 + scale1) + shift1
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        a = F.dropout(self.proj(a.transpose(1, 2).reshape(B, N, W)), self.dropout, self.training)
        h = h + (gate1 * a if self.modulation is not None else a)
        x = self.norm2(h)
        if self.modulation is not None:
            x = x * (1 + scale2) + shift2
        m = F.dropout(self.mlp(x), self.dropout, self.training)
        return h + (gate2 * m if self.modulation is not None else m)


#: the most blocks a network may have: far above any trained transformer's, low enough that a
#: mistyped depth fails validation at once instead of building millions of blocks first
MAX_DEPTH = 1024


class DiT(nn.Module):
    """Bidirectional transformer denoiser; see the module docstring for the equations."""

    #: every block is called through its own ``forward``, so FSDP may shard each block on its own
    #: (:func:`ddkit.contrib.distributed.shard_units`)
    fsdp_blocks = True

    def __init__(self,
                 vocab_size: Annotated[int, Field(ge=1, description="clean vocabulary V (filled in from the data)")],
                 width: Annotated[int, Field(ge=2, description="model dimension")] = 256,
                 depth: Annotated[int, Field(ge=1, le=MAX_DEPTH, description="number of transformer blocks")] = 4,
                 heads: Annotated[int, Field(ge=1, description="attention heads (width/heads must be even)")] = 4,
                 mlp_ratio: Annotated[float, Field(gt=0)] = 4.0,
                 dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
                 max_seq_len: Annotated[int, Field(ge=1, description="longest sequence (RoPE table size)")] = 1024,
                 time_conditioning: Annotated[bool, Field(description="adaLN conditioning on t")] = False,
                 num_states: Annotated[int | None, Field(
                     ge=1, description="input states S (default V + 1: the mask)")] = None,
                 rope_base: Annotated[float, Field(gt=1.0)] = 10000.0):
        super().__init__()
        check_heads(width, heads)
        self.vocab_size = int(vocab_size)
        self.num_states = int(num_states) if num_states is not None else self.vocab_size + 1
        self.max_seq_len = int(max_seq_len)
        self.time_conditioning = bool(time_conditioning)
        self.embed = nn.Embedding(self.num_states, width)
        if self.time_conditioning:
            self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout, self.time_conditioning)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=not self.time_conditioning)
        self.final_modulation = nn.Linear(width, 2 * width) if self.time_conditioning else None
        self.head = nn.Linear(width, self.vocab_size)
        cos, sin = rotary_tables(self.max_seq_len, width // heads, rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed.weight, std=0.02)
        for block in self.blocks:  # residual branches start small (GPT-2 scaling)
            nn.init.normal_(block.proj.weight, std=0.02 / math.sqrt(2 * len(self.blocks)))
            nn.init.normal_(block.mlp[2].weight, std=0.02 / math.sqrt(2 * len(self.blocks)))
            if block.modulation is not None:  # adaLN-zero: identity at initialisation
                nn.init.zeros_(block.modulation.weight)
                nn.init.zeros_(block.modulation.bias)
        if self.final_modulation is not None:
            nn.init.zeros_(self.final_modulation.weight)
            nn.init.zeros_(self.final_modulation.bias)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        if x_t.dim() != 2:
            raise ValueError(f"x_t must be [B, N], got shape {tuple(x_t.shape)}")
        N = x_t.shape[1]
        if N > self.max_seq_len:
            raise ValueError(f"sequence length {N} exceeds the model's max_seq_len {self.max_seq_len}")
        h = self.embed(x_t)
        cond = None
        if self.time_conditioning:
            t = torch.as_tensor(t, device=x_t.device)
            if t.dim() == 0:
                t = t.expand(x_t.shape[0])
            cond = self.time_mlp(timestep_embedding(t, h.shape[-1]).to(h.dtype))
        cos, sin = self.rope_cos[:N], self.rope_sin[:N]
        for block in self.blocks:
            h = block(h, cos, sin, cond)
        h = self.norm(h)
        if self.final_modulation is not None:
            mod = self.final_modulation(cond)
            shift, scale = (mod[:, None, :] if mod.dim() == 2 else mod).chunk(2, dim=-1)
            h = h * (1 + scale) + shift
        return self.head(h)


def check_heads(width: int, heads: int) -> None:
    if width % heads or (width // heads) % 2:
        raise ValueError(f"width {width} must split into {heads} heads of even size "
                         f"(width % heads == 0 and width/heads even)")


def transformer_params(factory: type[DiT]) -> type:
    """The params model of a DiT-like network: its signature's parameters, and the head split
    checked before the network is built."""

    def heads_divide_width(params):
        check_heads(params.width, params.heads)
        return params

    return type(f"{factory.__name__}Params", (ddkit.params_model(factory),),
                {"__module__": factory.__module__,
                 "_heads_divide_width": model_validator(mode="after")(heads_divide_width)})


DiTParams = transformer_params(DiT)


@ddkit.hookimpl
def register_models(register):
    register("dit", DiT, params=DiTParams,
             summary="DiT-style bidirectional transformer, RoPE, optional adaLN time conditioning")
