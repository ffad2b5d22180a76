r"""The exact hollow denoiser: leave-one-out conditionals from an oracle.

For data from a known sequence distribution noised by an absorbing process,
:class:`LeaveOneOutOracle` returns at every position :math:`d` the exact conditional of the
clean token given the *other* positions,

.. math::  \log p(x_0^d = v \mid x_t^{-d}) = \text{oracle}(x_t \text{ with } d \text{ masked})_{d, v},

which is what a hollow network (``ddkit.contrib.models.hollow``) estimates: its output at
:math:`d` does not depend on :math:`x_t^d`. At a masked position it equals the ordinary oracle.
It declares ``hollow = True`` and is one denoiser call (NFE) for the samplers, though it runs
the oracle on ``N`` masked copies of each sequence.

Example::

    >>> import torch, ddkit
    >>> from ddkit.testing import MarkovChain
    >>> process = ddkit.build("process", "masked", vocab_size=3)
    >>> hollow = LeaveOneOutOracle(MarkovChain(3, seed=0), process)
    >>> x = torch.tensor([[0, 1, 2, 1]])
    >>> y = x.clone(); y[0, 2] = 0
    >>> bool(torch.equal(hollow(x, torch.zeros(1))[0, 2], hollow(y, torch.zeros(1))[0, 2]))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..process import Process
from .oracles import OracleDenoiser, SequenceDistribution


class LeaveOneOutOracle:
    """Exact leave-one-out conditionals ``[B, N, V]`` (log-probabilities, float64) of
    ``model`` under the absorbing ``process``; ``hollow = True``."""

    hollow = True

    def __init__(self, model: SequenceDistribution, process: Process, **oracle_options):
        if process.mask_id is None:
            raise ValueError(f"leave-one-out conditionals mask one position at a time: the process needs a mask "
                             f"state; {type(process).__name__} has none")
        self.oracle = OracleDenoiser(model, process, **oracle_options)
        self.mask_id = process.mask_id

    def __repr__(self) -> str:
        return f"LeaveOneOutOracle({self.oracle.model!r})"

    @torch.no_grad()
    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        if x_t.dim() != 2:
            raise ValueError(f"x_t must be [B, N], got shape {tuple(x_t.shape)}")
        B, N = x_t.shape
        copies = x_t.repeat_interleave(N, dim=0)  # [B * N, N]: copy d of sequence b has position d masked
        position = torch.arange(N, device=x_t.device).repeat(B)
        copies[torch.arange(B * N, device=x_t.device), position] = self.mask_id
        t = torch.as_tensor(t)
        times = t.repeat_interleave(N, dim=0) if t.dim() >= 1 else t
        out = self.oracle(copies, times).view(B, N, N, -1)  # [b, copy d, position, V]
        return out.diagonal(dim1=1, dim2=2).movedim(-1, 1)  # [b, d, V]: copy d at position d
