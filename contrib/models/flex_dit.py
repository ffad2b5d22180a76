r"""A DiT with a second head for variable-length diffusion (FlexMDM): the ``flex_dit`` model
plugin, the denoiser of the ``insertion`` process.

``insertion_outputs(x_t, lengths, t)`` reads the padded sequences ``x_t`` (``[B, N]``) of
lengths ``lengths`` and returns

* ``token_logits`` ``[B, N, V]``: the clean token at each mask (the DiT's head);
* the gap head over the ``N + 1`` slots (slot :math:`j \le |x_t|` is the gap before token
  :math:`j`; slot :math:`|x_t|` the one after the last):

  - ``gap_head: expectation`` — the expected number of missing tokens,
    :math:`\hat g_j = K\,\mathrm{softplus}(W_2\,\mathrm{GELU}(W_1 h_j))` with the scale
    :math:`K` = ``max_seq_len`` (FlexMDM's ``ScalarLengthHead``), ``[B, N + 1]``; the
    output bias starts at :math:`\mathrm{softplus}^{-1}(1/K)`, so every slot first predicts
    one missing token rather than :math:`0.69 K`;
  - ``gap_head: distribution`` — logits over the counts ``0..K``, ``[B, N + 1, K + 1]``.

  The head runs in float32, also under autocast.

The network sees positions ``0..|x_t|``: the tokens, then a learned *end slot* embedding at
position :math:`|x_t|` whose state is slot :math:`|x_t|`'s; keys beyond it are masked out
of attention, so the outputs do not depend on the padding (its id or the padded width).
Time conditioning (adaLN, on :math:`t` in ddkit's convention) is on by default: the optimal
predictions of the insertion process depend on :math:`t`. Declared capabilities:
``heads = {"tokens", "gaps"}`` and ``gap_head``.

``model(x_t, t)`` is the plain denoiser contract on full-length rows (every position a
token), so the network also serves as an ordinary masked-diffusion DiT.

Example::

    >>> import torch
    >>> net = FlexDiT(vocab_size=5, width=32, depth=1, heads=2, max_seq_len=8)
    >>> logits, gaps = net.insertion_outputs(torch.tensor([[5, 1, 4, 4]]), torch.tensor([2]), torch.tensor([0.5]))
    >>> logits.shape, gaps.shape
    (torch.Size([1, 4, 5]), torch.Size([1, 5]))
"""

from __future__ import annotations

import inspect
import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

import ddkit

from .dit import DiT, check_heads, rotary_tables, timestep_embedding

GapHead = Literal["expectation", "distribution"]


class FlexDiT(DiT):
    """DiT with a token head and a gap head; see the module docstring."""

    heads = frozenset({"tokens", "gaps"})

    def __init__(self,
                 gap_head: Annotated[GapHead, Field(
                     description="expectation: expected gap counts; distribution: logits over 0..max_seq_len")
                 ] = "expectation",
                 time_conditioning: Annotated[bool, Field(description="adaLN conditioning on t")] = True,
                 **dit_params):
        super().__init__(time_conditioning=time_conditioning, **dit_params)
        self.gap_head = gap_head
        width = self.embed.embedding_dim
        self.end_slot = nn.Parameter(torch.randn(width) * 0.02)
        outputs = 1 if gap_head == "expectation" else self.max_seq_len + 1
        self.gap_mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(approximate="tanh"), nn.Linear(width, outputs))
        for layer in (self.gap_mlp[0], self.gap_mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        if gap_head == "expectation":
            nn.init.constant_(self.gap_mlp[2].bias, math.log(math.expm1(1.0 / self.max_seq_len)))
        # one more position than the longest sequence: the end slot
        rope_base = dit_params.get("rope_base", inspect.signature(DiT).parameters["rope_base"].default)
        cos, sin = rotary_tables(self.max_seq_len + 1, width // self.blocks[0].heads, rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        full = torch.full((x_t.shape[0],), x_t.shape[1], dtype=torch.long, device=x_t.device)
        return self.insertion_outputs(x_t, full, t)[0]

    def insertion_outputs(self, x_t: Tensor, lengths: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(token_logits [B, N, V], gaps)``, the gap head's output over ``N + 1`` slots."""
        if x_t.dim() != 2:
            raise ValueError(f"x_t must be [B, N], got shape {tuple(x_t.shape)}")
        B, N = x_t.shape
        if N > self.max_seq_len:
            raise ValueError(f"sequence length {N} exceeds the model's max_seq_len {self.max_seq_len}")
        lengths = torch.as_tensor(lengths, device=x_t.device).long()
        if tuple(lengths.shape) != (B,) or bool(((lengths < 0) | (lengths > N)).any()):
            raise ValueError(f"lengths must be [B] = [{B}] in 0..{N}, got {lengths.tolist()}")
        index = torch.arange(N + 1, device=x_t.device)
        inside = index < lengths[:, None]
        tokens = torch.where(inside[:, :N], x_t, 0)  # padding is never read
        h = self.embed(torch.cat([tokens, tokens[:, :1]], dim=1))
        h = torch.where((index == lengths[:, None])[..., None], self.end_slot.to(h.dtype), h)
        keys = (index <= lengths[:, None])[:, None, None, :]  # [B, 1, 1, N + 1]
        cond = None
        if self.time_conditioning:
            t = torch.as_tensor(t, device=x_t.device)
            if t.dim() == 0:
                t = t.expand(B)
            cond = self.time_mlp(timestep_embedding(t, h.shape[-1]).to(h.dtype))
        cos, sin = self.rope_cos[:N + 1], self.rope_sin[:N + 1]
        for block in self.blocks:
            h = block(h, cos, sin, cond, attn_mask=keys)
        h = self.norm(h)
        if self.final_modulation is not None:
            mod = self.final_modulation(cond)
            shift, scale = (mod[:, None, :] if mod.dim() == 2 else mod).chunk(2, dim=-1)
            h = h * (1 + scale) + shift
        logits = self.head(h[:, :N])
        with torch.autocast(device_type=h.device.type, enabled=False):
            out = self.gap_mlp(h.float())
        if self.gap_head == "expectation":
            return logits, self.max_seq_len * F.softplus(out.squeeze(-1))
        return logits, out


class FlexDiTParams(ddkit.params_model(FlexDiT)):
    # the signature's parameters, and the head split checked before the network is built

    @model_validator(mode="after")
    def _heads_divide_width(self) -> FlexDiTParams:
        check_heads(self.width, self.heads)
        return self


@ddkit.hookimpl
def register_models(register):
    register("flex_dit", FlexDiT, params=FlexDiTParams,
             summary="DiT with a token head and a gap head (expected insertions per slot) for FlexMDM")
