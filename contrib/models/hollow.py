r"""A hollow transformer (the ``hollow`` model plugin): the output at position :math:`d` is a
function of :math:`x^{-d}` (every token but the :math:`d`-th) only.

A masked-diffusion network copies a clean token to its output, so it says nothing about
whether that token is likely given the rest. The hollow network's output at a clean position
:math:`d` can estimate the leave-one-out conditional :math:`p(x^d \mid x_t^{-d})`, which the
informed corrector (:mod:`ddkit.plugins.correctors.informed`) needs; at masked positions it is
an ordinary denoiser. The architecture is the hollow transformer of Zhao et al. (2024),
"Informed correctors for discrete diffusion models":

1. the input is padded with one boundary token at each end (length :math:`N + 2`, a
   dedicated embedding) and embedded, :math:`h = E[\mathrm{pad}, x_1, \dots, x_N, \mathrm{pad}]`;
2. a **forward stream** :math:`h^f = h_{0..N-1}` (element :math:`i` holds the token before
   position :math:`i`) with causal attention: :math:`h^f_i` depends on :math:`x_{<i}` only;
3. a **backward stream** :math:`h^b = h_{2..N+1}` (element :math:`i` holds the token after
   :math:`i`) with anti-causal attention: :math:`h^b_i` depends on :math:`x_{>i}` only;
4. both streams run through the *same* blocks (shared weights);
5. every ``layers_per_mix`` stream layers, a **mixing stream** of double width takes
   :math:`h^m \mathrel{+}= [h^f; h^b]` (features concatenated) and a mixing block attends from
   query :math:`h^m_i` to the keys :math:`h^f_j` (:math:`j \le i`) and :math:`h^b_j`
   (:math:`j \ge i`), never to other mixing positions;
6. the logits are read from the last mixing stream.

No path carries :math:`x_d` to output :math:`d`. Rotary position embeddings (RoPE) use the
padded index of the token an element holds: :math:`0..N-1` for the forward stream,
:math:`2..N+1` for the backward one and :math:`1..N` for the mixing queries, so that relative
positions between queries and the keys of both streams are the true ones. (The reference JAX
implementation passes the cosine table where the sine table of the mixing keys belongs; here
both tables are the right ones.)

Blocks follow :mod:`ddkit.contrib.models.dit` (pre-norm LayerNorm, GELU MLP, optional
adaLN-zero time conditioning driven by a sinusoidal embedding of one time per sequence);
the mixing blocks have width ``2 * width`` with the same number of heads. The network follows
the denoiser contract ``model(x_t [B, N], t [B]) -> logits [B, N, V]`` and declares the
capability ``hollow = True``. One evaluation costs about twice a DiT of the same width and
depth, plus the mixing blocks.

Example::

    >>> import torch
    >>> net = HollowTransformer(vocab_size=5, width=16, depth=2, heads=2, max_seq_len=8).eval()
    >>> x = torch.randint(0, 6, (1, 8))
    >>> y = x.clone(); y[0, 3] = (x[0, 3] + 1) % 6
    >>> bool((net(x, torch.zeros(1))[0, 3] == net(y, torch.zeros(1))[0, 3]).all())
    True
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

import ddkit

from .dit import MAX_DEPTH, apply_rotary, check_heads, rotary_tables, timestep_embedding


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def _per_sequence(mod: Tensor) -> Tensor:
    return mod[:, None, :]


class MaskedAttention(nn.Module):
    """Multi-head attention from queries of width ``q_width`` to keys and values of width
    ``kv_width`` (projected to ``q_width``), RoPE on queries and keys, a boolean mask (True:
    may attend)."""

    def __init__(self, q_width: int, kv_width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(q_width, q_width, bias=False)
        self.kv = nn.Linear(kv_width, 2 * q_width, bias=False)
        self.proj = nn.Linear(q_width, q_width, bias=False)

    def forward(self, x_q: Tensor, x_kv: Tensor, rope_q: tuple[Tensor, Tensor], rope_kv: tuple[Tensor, Tensor],
                mask: Tensor) -> Tensor:
        B, Nq, W = x_q.shape
        Nk, H = x_kv.shape[1], self.heads
        q = self.q(x_q).view(B, Nq, H, W // H).transpose(1, 2)
        k, v = self.kv(x_kv).view(B, Nk, 2, H, W // H).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, *rope_q), apply_rotary(k, *rope_kv)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return F.dropout(self.proj(a.transpose(1, 2).reshape(B, Nq, W)), self.dropout, self.training)


class HollowBlock(nn.Module):
    """Pre-norm block with masked attention. A stream block (``mixing=False``) attends within
    its own stream (``x_kv`` is ``x_q``); a mixing block (``mixing=True``) has width
    ``2 * width`` and attends to the two streams (``x_kv`` of width ``width``)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, conditioned: bool, *,
                 mixing: bool):
        super().__init__()
        q_width = 2 * width if mixing else width
        self.mixing = mixing
        self.norm_q = nn.LayerNorm(q_width, elementwise_affine=not conditioned)
        self.norm_kv = nn.LayerNorm(width, elementwise_affine=not conditioned) if mixing else None
        self.attn = MaskedAttention(q_width, width, heads, dropout)
        self.norm_mlp = nn.LayerNorm(q_width, elementwise_affine=not conditioned)
        hidden = int(mlp_ratio * q_width)
        self.mlp = nn.Sequential(nn.Linear(q_width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, q_width))
        self.dropout = dropout
        # adaLN-zero: shift, scale, gate of attention and MLP (and shift, scale of the keys' norm)
        self.modulation = nn.Linear(width, 6 * q_width + (2 * width if mixing else 0)) if conditioned else None

    def forward(self, x_q: Tensor, x_kv: Tensor | None, rope_q: tuple[Tensor, Tensor],
                rope_kv: tuple[Tensor, Tensor], mask: Tensor, cond: Tensor | None) -> Tensor:
        h = x_q
        q = self.norm_q(h)
        if self.modulation is None:
            kv = q if x_kv is None else self.norm_kv(x_kv)
            h = h + self.attn(q, kv, rope_q, rope_kv, mask)
            return h + F.dropout(self.mlp(self.norm_mlp(h)), self.dropout, self.training)
        mod = _per_sequence(self.modulation(cond))
        q_width = h.shape[-1]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod[..., :6 * q_width].chunk(6, dim=-1)
        q = _modulate(q, shift1, scale1)
        if x_kv is None:
            kv = q
        else:
            kv_shift, kv_scale = mod[..., 6 * q_width:].chunk(2, dim=-1)
            kv = _modulate(self.norm_kv(x_kv), kv_shift, kv_scale)
        h = h + gate1 * self.attn(q, kv, rope_q, rope_kv, mask)
        m = F.dropout(self.mlp(_modulate(self.norm_mlp(h), shift2, scale2)), self.dropout, self.training)
        return h + gate2 * m


class HollowTransformer(nn.Module):
    """Hollow transformer denoiser; see the module docstring for the architecture."""

    #: declared capability: the output at position d does not depend on x^d
    hollow = True

    def __init__(self,
                 vocab_size: Annotated[int, Field(ge=1, description="clean vocabulary V (filled in from the data)")],
                 width: Annotated[int, Field(ge=2, description="width of the two streams (mixing: twice)")] = 128,
                 depth: Annotated[int, Field(
                     ge=1, le=MAX_DEPTH, description="number of (weight-shared) stream blocks")] = 4,
                 heads: Annotated[int, Field(ge=1, description="attention heads (width/heads must be even)")] = 4,
                 layers_per_mix: Annotated[int | None, Field(
                     ge=1, description="a mixing block after every this many stream blocks (default: depth, "
                                       "one at the end); must divide depth")] = None,
                 mlp_ratio: Annotated[float, Field(gt=0)] = 4.0,
                 dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
                 max_seq_len: Annotated[int, Field(ge=1, description="longest sequence (RoPE table size)")] = 1024,
                 time_conditioning: Annotated[bool, Field(description="adaLN-zero conditioning on t")] = False,
                 num_states: Annotated[int | None, Field(
                     ge=1, description="input states S (default V + 1: the mask)")] = None,
                 rope_base: Annotated[float, Field(gt=1.0)] = 10000.0):
        super().__init__()
        layers_per_mix = depth if layers_per_mix is None else int(layers_per_mix)
        check_hollow_shape(width, heads, depth, layers_per_mix)
        self.vocab_size = int(vocab_size)
        self.num_states = int(num_states) if num_states is not None else self.vocab_size + 1
        self.boundary = self.num_states  # the padding token's embedding id
        self.max_seq_len = int(max_seq_len)
        self.layers_per_mix = layers_per_mix
        self.time_conditioning = bool(time_conditioning)
        self.embed = nn.Embedding(self.num_states + 1, width)
        if self.time_conditioning:
            self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        conditioned = self.time_conditioning
        self.blocks = nn.ModuleList(HollowBlock(width, heads, mlp_ratio, dropout, conditioned, mixing=False)
                                    for _ in range(depth))
        self.mixers = nn.ModuleList(HollowBlock(width, heads, mlp_ratio, dropout, conditioned, mixing=True)
                                    for _ in range(depth // layers_per_mix))
        self.norm = nn.LayerNorm(2 * width, elementwise_affine=not conditioned)
        self.final_modulation = nn.Linear(width, 4 * width) if conditioned else None
        self.head = nn.Linear(2 * width, self.vocab_size)
        padded = self.max_seq_len + 2
        for name, head_dim in (("stream", width // heads), ("mix", 2 * width // heads)):
            cos, sin = rotary_tables(padded, head_dim, rope_base)
            self.register_buffer(f"rope_{name}_cos", cos, persistent=False)
            self.register_buffer(f"rope_{name}_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed.weight, std=0.02)
        residual_std = 0.02 / math.sqrt(2 * (len(self.blocks) + len(self.mixers)))
        for block in (*self.blocks, *self.mixers):  # residual branches start small (GPT-2 scaling)
            nn.init.normal_(block.attn.proj.weight, std=residual_std)
            nn.init.normal_(block.mlp[2].weight, std=residual_std)
            if block.modulation is not None:  # adaLN-zero: identity at initialisation
                nn.init.zeros_(block.modulation.weight)
                nn.init.zeros_(block.modulation.bias)
        if self.final_modulation is not None:
            nn.init.zeros_(self.final_modulation.weight)
            nn.init.zeros_(self.final_modulation.bias)

    def _time_condition(self, t: Tensor, x_t: Tensor) -> Tensor | None:
        if not self.time_conditioning:
            return None
        t = torch.as_tensor(t, device=x_t.device)
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        elif t.dim() == 2:  # [B, N]: the hollow model takes one time per sequence
            if not bool((t == t[:, :1]).all()):
                raise ValueError("the hollow model takes one time per sequence; got per-token times that differ "
                                 "within a sequence")
            t = t[:, 0]
        return self.time_mlp(timestep_embedding(t, self.embed.embedding_dim).to(self.embed.weight.dtype))

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        if x_t.dim() != 2:
            raise ValueError(f"x_t must be [B, N], got shape {tuple(x_t.shape)}")
        B, N = x_t.shape
        if N > self.max_seq_len:
            raise ValueError(f"sequence length {N} exceeds the model's max_seq_len {self.max_seq_len}")
        cond = self._time_condition(t, x_t)
        pad = torch.full((B, 1), self.boundary, dtype=x_t.dtype, device=x_t.device)
        h = self.embed(torch.cat([pad, x_t, pad], dim=1))  # [B, N + 2, W]
        # the two streams run as one batch through the shared blocks: [forward; backward]
        streams = torch.cat([h[:, :-2], h[:, 2:]], dim=0)
        device = x_t.device
        i = torch.arange(N, device=device)
        causal, anticausal = i[None, :] <= i[:, None], i[None, :] >= i[:, None]  # [query, key]
        stream_mask = torch.cat([causal.expand(B, 1, N, N), anticausal.expand(B, 1, N, N)])
        cos, sin = self.rope_stream_cos, self.rope_stream_sin
        stream_rope = tuple(torch.cat([table[:N].expand(B, 1, N, -1), table[2:N + 2].expand(B, 1, N, -1)])
                            for table in (cos, sin))
        stream_cond = None if cond is None else torch.cat([cond, cond])
        cos_m, sin_m = self.rope_mix_cos, self.rope_mix_sin
        mix_rope_q = (cos_m[1:N + 1], sin_m[1:N + 1])
        mix_rope_kv = (torch.cat([cos_m[:N], cos_m[2:N + 2]]), torch.cat([sin_m[:N], sin_m[2:N + 2]]))
        mix_mask = torch.cat([causal, anticausal], dim=1)  # [N, 2N]: f_j for j <= i, b_j for j >= i
        mixed = torch.zeros(B, N, 2 * h.shape[-1], dtype=h.dtype, device=device)
        mixers = iter(self.mixers)
        for layer, block in enumerate(self.blocks):
            streams = block(streams, None, stream_rope, stream_rope, stream_mask, stream_cond)
            if (layer + 1) % self.layers_per_mix == 0:
                forward, backward = streams[:B], streams[B:]
                mixed = mixed + torch.cat([forward, backward], dim=-1)
                keys = torch.cat([forward, backward], dim=1)  # [B, 2N, W]
                mixed = next(mixers)(mixed, keys, mix_rope_q, mix_rope_kv, mix_mask, cond)
        out = self.norm(mixed)
        if self.final_modulation is not None:
            shift, scale = _per_sequence(self.final_modulation(cond)).chunk(2, dim=-1)
            out = _modulate(out, shift, scale)
        return self.head(out)


def check_hollow_shape(width: int, heads: int, depth: int, layers_per_mix: int) -> None:
    check_heads(width, heads)
    if depth % layers_per_mix:
        raise ValueError(f"layers_per_mix {layers_per_mix} must divide depth {depth} (the output is read "
                         f"from the last mixing block, which must come after the last stream block)")


class HollowTransformerParams(ddkit.params_model(HollowTransformer)):
    # the signature's parameters, and the shape checks before the network is built

    @model_validator(mode="after")
    def _shape(self) -> HollowTransformerParams:
        check_hollow_shape(self.width, self.heads, self.depth,
                           self.depth if self.layers_per_mix is None else self.layers_per_mix)
        return self


@ddkit.hookimpl
def register_models(register):
    register("hollow", HollowTransformer, params=HollowTransformerParams,
             summary="hollow transformer: output at d depends on x^-d only (informed correctors), hollow = True")
