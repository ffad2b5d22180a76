r"""The denoiser contract between networks and math.

A denoiser is any callable ``denoiser(x_t, t) -> logits`` with

* ``x_t``: ``LongTensor[B, N]``, states in ``0..S-1`` (the mask, if any, is ``V``);
* ``t``: ``Tensor[B]`` or ``Tensor[B, N]``, times in ``[0, 1]``;
* ``logits``: ``Tensor[B, N, V]`` over the *clean* vocabulary (a network may also return
  ``S`` columns; the mean parameterization drops the extra states).

A trained network, a plain function and an exact oracle are all denoisers.

Optional attributes that samplers and :class:`ddkit.DenoiserCalls` read (declared
capabilities, the way samplers read ``process.capabilities``):

* ``evaluations_per_call`` (int, default 1): network evaluations one call costs; NFE counts
  them (e.g. classifier-free guidance makes two, :mod:`ddkit.guidance`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor: ...
