r"""The denoiser contract between networks and math.

A denoiser is any callable ``denoiser(x_t, t) -> logits`` with

* ``x_t``: ``LongTensor[B, N]``, states in ``0..S-1`` (the mask, if any, is ``V``);
* ``t``: ``Tensor[B]`` or ``Tensor[B, N]``, times in ``[0, 1]``;
* ``logits``: ``Tensor[B, N, V]`` over the *clean* vocabulary (a network may also return
  ``S`` columns; the mean parameterization drops the extra states).

A trained network, a plain function and an exact oracle are all denoisers.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor: ...
