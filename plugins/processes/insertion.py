r"""The insertion process of FlexMDM (Kim et al. 2025, "Any-order flexible length masked
diffusion"): variable-length sequences that grow from the empty sequence by inserting masks
and unmasking them.

This process is **not factorised over positions**, so it is not a :class:`ddkit.Process`:
the length of :math:`x_t` changes with :math:`t`. It has the capability ``"insertion"``,
which the ``flexmdm`` loss and the ``flexmdm_euler`` / ``flexmdm_tau_leaping`` samplers
require; the per-position methods of the process protocol (posteriors, rate matrices,
ELBO terms) raise an error that says so.

**Time convention.** ddkit's: :math:`t = 0` is data, :math:`t = 1` is noise, here the
*empty* sequence. FlexMDM's paper and code run time the other way (:math:`\tau = 0` empty,
:math:`\tau = 1` data) with CDFs :math:`a_{ins}(\tau)`, :math:`a_{unm}(\tau)`; the ddkit
schedules are :math:`\alpha^{ins}_t = a_{ins}(1 - t)` and :math:`\alpha^{unm}_t =
a_{unm}(1 - t)`. Both are ddkit schedules (``linear``: :math:`1 - t`, ``cosine``, ...) with
:math:`\alpha_0 = 1` and :math:`\alpha_1 = 0` exactly.

**Sequences.** Token ids ``0..V-1`` include a padding token ``pad_id`` (default ``V - 1``,
the last one) that is not part of any sequence: a sequence of length :math:`L` is a row of
``N`` ids whose first :math:`L` are not ``pad_id`` and whose others are. The mask has id
``V`` (``num_states = V + 1``), distinct from the padding.

**Forward process.** Each token :math:`i` of :math:`x_0` (length :math:`L`) independently
gets an *insertion time* :math:`T^i_{ins}` with :math:`P(T^i_{ins} > t) = \alpha^{ins}_t`
and an *unmasking time* :math:`T^i_{unm} \le T^i_{ins}` drawn from :math:`\alpha^{unm}`
truncated to :math:`[0, T^i_{ins}]`:

.. math::  \alpha^{unm}(T_{unm}) = \alpha^{unm}(T_{ins}) + v\,(1 - \alpha^{unm}(T_{ins})),
           \qquad v \sim U(0, 1).

At time :math:`t` the token is clean if :math:`t < T_{unm}`, masked if
:math:`T_{unm} \le t < T_{ins}`, and absent if :math:`t \ge T_{ins}`. :math:`x_t` is the
order-preserving compaction of the present tokens (clean or mask), padded with ``pad_id``;
``source[j]`` is the position in :math:`x_0` of the :math:`j`-th present token. The **gap
counts** :math:`g_j`, :math:`j = 0..|x_t|`, count the absent tokens before present token
:math:`j` (after the previous one); :math:`g_{|x_t|}` counts those after the last. There are
``N + 1`` slots; those beyond :math:`|x_t|` are zero and :math:`\sum_j g_j = |x_0| - |x_t|`.
With :math:`\alpha^{ins}_t = 1 - t`, :math:`|x_t| \sim \mathrm{Binomial}(|x_0|, 1 - t)`
(FlexMDM's :math:`\mathrm{Binomial}(|x_0|, \tau)`).

**Reverse rates** (generation, :math:`t` decreasing). An absent token is inserted at the
hazard :math:`w_{ins}(t) = -\alpha^{ins\prime}_t / (1 - \alpha^{ins}_t)`, as a mask; a mask
is unmasked at the hazard :math:`w_{unm}(t) = -\alpha^{unm\prime}_t / (1 - \alpha^{unm}_t)`
whatever its insertion time was (the truncation cancels). Given :math:`x_t` alone, slot
:math:`j` receives insertions at the rate :math:`w_{ins}(t)\,E[g_j \mid x_t]` and a mask
becomes :math:`v` at the rate :math:`w_{unm}(t)\,p(x_0^{(j)} = v \mid x_t)`: what a
denoiser with two heads predicts.

**The denoiser of this process** declares ``heads`` containing ``"tokens"`` and ``"gaps"``
(the ``flex_dit`` model, :class:`ddkit.testing.insertion_oracles.InsertionOracle`), optionally
``gap_head`` (``"expectation"``, the default, or ``"distribution"``), and provides
``insertion_outputs(x_t, lengths, t) -> (token_logits [B, N, V], gaps)`` with ``gaps`` the
expected gap counts ``[B, N + 1]`` or, for a distribution head, logits ``[B, N + 1, K + 1]``
over the counts ``0..K``. :meth:`InsertionProcess.predict` calls it, checks the shapes and
turns it into an :class:`InsertionPrediction`; each call is one network evaluation.

Example::

    >>> import torch, ddkit
    >>> process = ddkit.build("process", "insertion", vocab_size=4)   # pad_id = 3, mask = 4
    >>> x0 = torch.tensor([[0, 1, 2, 0, 3, 3]])
    >>> out = process.sample(x0, torch.tensor([0.5]), generator=torch.Generator().manual_seed(0))
    >>> int(out.gaps.sum() + out.lengths)   # absent + present = |x_0|
    4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

import ddkit
from ddkit.process import Process

#: names of the per-position process protocol that this process does not have
_PER_POSITION = frozenset(name for name in dir(Process) if not name.startswith("_")) - {
    "capabilities", "mask_id", "num_states", "sample_prior", "sample_marginal", "marginal_probs",
    "posterior_probs", "vocab_size", "schedule"}
#: Gauss–Legendre nodes of the clean-probability integral (exact to 1e-12 for smooth schedules)
_QUADRATURE_NODES = 256
_FATES = ("absent", "masked", "clean")


@dataclass
class InsertionSample:
    """A draw of :math:`x_t` given :math:`x_0` (``[B, N]`` each): the padded compaction
    ``x_t``, its ``lengths`` ``[B]``, ``source`` (``[B, N]``, the position in :math:`x_0` of
    each present token, ``-1`` beyond ``lengths``) and the gap counts ``gaps``
    (``[B, N + 1]``, zero beyond ``lengths``)."""

    x_t: Tensor
    lengths: Tensor
    source: Tensor
    gaps: Tensor


@dataclass
class InsertionPrediction:
    """What a two-headed denoiser predicts at :math:`x_t`: ``token_logits`` (``[B, N, V]``
    float32, the padding token at :math:`-\\infty`), ``expected_gaps`` (``[B, N + 1]``
    float64, zero beyond the length) and, for a distribution head, ``gap_log_probs``
    (``[B, N + 1, K + 1]``)."""

    token_logits: Tensor
    expected_gaps: Tensor
    gap_log_probs: Tensor | None = None


def hazard(schedule: ddkit.Schedule, t: Tensor) -> Tensor:
    r""":math:`-\alpha'_t / (1 - \alpha_t)` in float64 (infinite where :math:`\alpha_t = 1`)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return -schedule.alpha_prime(t) / (1.0 - schedule.alpha(t))


def step_probability(schedule: ddkit.Schedule, t: Tensor, s: Tensor) -> Tensor:
    r"""The probability that the event of ``schedule`` (an insertion, an unmasking) happens
    in :math:`[s, t)` for a token that has not had it at :math:`t`:
    :math:`(\alpha_s - \alpha_t) / (1 - \alpha_t)` (FlexMDM's Euler step
    :math:`(t - s)\,w(t)` for the linear schedule); 1 where :math:`s = 0`."""
    a_t, a_s = schedule.alpha(t.to(torch.float64)), schedule.alpha(s.to(torch.float64))
    p = (a_s - a_t) / (1.0 - a_t).clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(s <= 0, torch.ones_like(p), p.clamp(0.0, 1.0))


def sequence_lengths(x: Tensor, pad_id: int) -> Tensor:
    """``[B]`` lengths of padded sequences ``[B, N]``; padding must be a suffix."""
    present = x != pad_id
    lengths = present.sum(-1)
    inside = torch.arange(x.shape[-1], device=x.device) < lengths[..., None]
    if not bool((present == inside).all()):
        row = int((present != inside).any(-1).nonzero()[0])
        raise ValueError(f"row {row} has padding (id {pad_id}) before a token: variable-length sequences "
                         f"must be their tokens followed by padding, got {x[row].tolist()}")
    return lengths


class InsertionProcess:
    """FlexMDM's insertion-and-unmasking process; see the module docstring."""

    capabilities = frozenset({"insertion"})
    factorised = False  # samplers must require "insertion" to take it

    def __init__(self,
                 vocab_size: Annotated[int, Field(ge=2, description="token ids, the padding token included")],
                 insertion: ddkit.Component("schedule") = "linear",
                 unmasking: ddkit.Component("schedule") = "linear",
                 pad_id: Annotated[int | None, Field(
                     ge=0, description="the padding token (default: V - 1, the last id)")] = None):
        self.vocab_size = int(vocab_size)
        self.pad_id = self.vocab_size - 1 if pad_id is None else int(pad_id)
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id must be a token id in 0..{self.vocab_size - 1}, got {self.pad_id}")
        self.mask_id = self.vocab_size
        self.num_states = self.vocab_size + 1
        self.insertion = ddkit.build("schedule", insertion)
        self.unmasking = ddkit.build("schedule", unmasking)
        for name, schedule in (("insertion", self.insertion), ("unmasking", self.unmasking)):
            if getattr(schedule, "vector_size", None) is not None:
                raise ValueError(f"the {name} schedule must be scalar, got a vector-valued "
                                 f"{type(schedule).__name__}")
            a0, a1 = schedule.endpoints()
            if abs(a0 - 1.0) > 1e-12 or abs(a1) > 1e-12:
                raise ValueError(f"the {name} schedule must have alpha_0 = 1 and alpha_1 = 0 (the empty "
                                 f"sequence at t = 1, the data at t = 0), got {a0} and {a1}")
        if not self.insertion.invertible:
            raise ValueError(f"the insertion schedule must be invertible (the unmasking time is drawn "
                             f"below the insertion time); {type(self.insertion).__name__} is not")

    def __repr__(self) -> str:
        return (f"InsertionProcess(vocab_size={self.vocab_size}, pad_id={self.pad_id}, "
                f"insertion={type(self.insertion).__name__}, unmasking={type(self.unmasking).__name__})")

    def __getattr__(self, name: str) -> Any:
        if name in _PER_POSITION:
            raise AttributeError(
                f"the insertion process is not factorised over positions and has no {name}(); "
                f"use the flexmdm loss and the flexmdm_euler or flexmdm_tau_leaping sampler")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- sequences -----------------------------------------------------------------------

    def lengths(self, x: Tensor) -> Tensor:
        """``[B]`` lengths of padded sequences (:func:`sequence_lengths` with ``pad_id``)."""
        return sequence_lengths(x, self.pad_id)

    def sample_prior(self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
        """The empty sequences: ``shape`` filled with ``pad_id``."""
        return torch.full(shape, self.pad_id, dtype=torch.long, device=device)

    # -- the forward process ---------------------------------------------------------------

    def sample(self, x0: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> InsertionSample:
        """Draw :math:`x_t` from padded data ``x0`` (``[B, N]``) at times ``t`` (``[B]``)."""
        if x0.dim() != 2:
            raise ValueError(f"x0 must be [B, N], got shape {tuple(x0.shape)}")
        x0 = x0.long()
        if bool(((x0 < 0) | (x0 >= self.vocab_size)).any()):
            raise ValueError(f"x0 must hold token ids in 0..{self.vocab_size - 1}")
        B, N = x0.shape
        t = torch.as_tensor(t, dtype=torch.float64, device=x0.device).expand(B)[:, None]
        L = self.lengths(x0)
        valid = torch.arange(N, device=x0.device) < L[:, None]
        u_ins = torch.rand((B, N), generator=generator, dtype=torch.float64, device=x0.device)
        u_unm = torch.rand((B, N), generator=generator, dtype=torch.float64, device=x0.device)
        # present iff t < T_ins, i.e. alpha_ins(t) > alpha_ins(T_ins) = u_ins
        present = valid & (self.insertion.alpha(t) > u_ins)
        floor = self.unmasking.alpha(self.insertion.inverse(u_ins))  # alpha_unm(T_ins)
        clean = present & (self.unmasking.alpha(t) > floor + u_unm * (1.0 - floor))
        state = torch.where(clean, x0, torch.full_like(x0, self.mask_id))
        # order-preserving compaction: present positions first, in order (stable sort)
        order = torch.sort((~present).to(torch.int8), dim=1, stable=True).indices
        lengths = present.sum(-1)
        inside = torch.arange(N, device=x0.device) < lengths[:, None]
        x_t = torch.where(inside, state.gather(1, order), torch.full_like(x0, self.pad_id))
        source = torch.where(inside, order, torch.full_like(order, -1))
        # an absent token lies in the slot numbered by the present tokens before it
        slot = torch.cumsum(present.long(), dim=1) - present.long()
        gaps = torch.zeros(B, N + 1, dtype=torch.long, device=x0.device)
        gaps.scatter_add_(1, slot, (valid & ~present).long())
        return InsertionSample(x_t, lengths, source, gaps)

    def sample_marginal(self, x0: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """:math:`x_t` alone (:meth:`sample`)."""
        return self.sample(x0, t, generator=generator).x_t

    def fate_probs(self, t: Tensor) -> Tensor:
        r"""``[*t.shape, 3]``: the probabilities that a token of :math:`x_0` is absent, masked
        or clean at time ``t``. Absent: :math:`1 - \alpha^{ins}_t`; clean:
        :math:`\int_t^1 -\alpha^{ins\prime}_\tau\,\frac{\alpha^{unm}_t - \alpha^{unm}_\tau}
        {1 - \alpha^{unm}_\tau}\,d\tau` by Gauss–Legendre quadrature (with both schedules
        linear, :math:`1 - t + t \log t`)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        nodes, weights = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(_QUADRATURE_NODES))
        flat = t.reshape(-1, 1)
        tau = flat + (1.0 - flat) * (nodes + 1.0) / 2.0  # [T, K] nodes on [t, 1]
        density = -self.insertion.alpha_prime(tau)
        a_unm_tau = self.unmasking.alpha(tau)
        ratio = (self.unmasking.alpha(flat) - a_unm_tau) / (1.0 - a_unm_tau)
        clean = ((1.0 - flat) / 2.0 * (weights * density * ratio)).sum(-1).clamp_min(0.0)
        present = self.insertion.alpha(flat.squeeze(-1))
        clean = torch.minimum(clean, present)
        probs = torch.stack([1.0 - present, present - clean, clean], dim=-1)
        return probs.reshape(*t.shape, 3)

    def marginal_probs(self, x0: Tensor, t: Tensor) -> Tensor:
        """``[B, N, 3]``: for each token of ``x0`` the probabilities of being absent, masked
        and clean at ``t`` (``[B]``), :meth:`fate_probs`; padding is absent surely. (The
        process has no per-position marginal of :math:`x_t`: positions shift.)"""
        B, N = x0.shape
        probs = self.fate_probs(torch.as_tensor(t, dtype=torch.float64).expand(B))[:, None, :].expand(B, N, 3)
        absent = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        valid = torch.arange(N) < self.lengths(x0.cpu())[:, None]
        return torch.where(valid[..., None].to(probs.device), probs, absent.to(probs.device))

    def posterior_probs(self, x_t: Tensor, mean: Tensor, s: Tensor, t: Tensor) -> Tensor:
        raise ValueError("the insertion process is not factorised over positions and has no per-position "
                         "posterior; sample it with flexmdm_euler or flexmdm_tau_leaping")

    # -- rates and the denoiser ------------------------------------------------------------

    def insertion_rate(self, t: Tensor) -> Tensor:
        r""":math:`w_{ins}(t)`, the insertion hazard of an absent token (float64)."""
        return hazard(self.insertion, t)

    def unmasking_rate(self, t: Tensor) -> Tensor:
        r""":math:`w_{unm}(t)`, the unmasking hazard of a mask (float64)."""
        return hazard(self.unmasking, t)

    def insertion_probability(self, t: Tensor, s: Tensor) -> Tensor:
        """The probability that an absent token at ``t`` is inserted before ``s``
        (:func:`step_probability`)."""
        return step_probability(self.insertion, t, s)

    def unmasking_probability(self, t: Tensor, s: Tensor) -> Tensor:
        """The probability that a mask at ``t`` is unmasked before ``s`` (:func:`step_probability`)."""
        return step_probability(self.unmasking, t, s)

    def check_denoiser(self, denoiser: Any) -> None:
        """A clear error unless ``denoiser`` declares the heads ``tokens`` and ``gaps``."""
        heads = getattr(denoiser, "heads", None) or frozenset()
        if not {"tokens", "gaps"} <= set(heads) or not callable(getattr(denoiser, "insertion_outputs", None)):
            raise ValueError(f"the insertion process needs a denoiser with heads {{'tokens', 'gaps'}} and "
                             f"insertion_outputs() (e.g. the flex_dit model); {type(denoiser).__name__} "
                             f"declares {sorted(heads) or 'none'}")
        head = getattr(denoiser, "gap_head", "expectation")
        if head not in ("expectation", "distribution"):
            raise ValueError(f"gap_head must be 'expectation' or 'distribution', got {head!r}")

    def predict(self, denoiser: Any, x_t: Tensor, lengths: Tensor, t: Tensor) -> InsertionPrediction:
        """Call the two-headed ``denoiser`` at :math:`x_t` (module docstring) and check its
        outputs."""
        self.check_denoiser(denoiser)
        B, N = x_t.shape
        token_logits, gaps = denoiser.insertion_outputs(x_t, lengths, t)
        if tuple(token_logits.shape) != (B, N, self.vocab_size):
            raise ValueError(f"token logits must have shape [B, N, V] = {[B, N, self.vocab_size]}, "
                             f"got {list(token_logits.shape)}")
        token_logits = token_logits.float().clone()
        token_logits[..., self.pad_id] = -torch.inf  # padding is never a token of a sequence
        slots = torch.arange(N + 1, device=x_t.device) <= lengths[:, None]
        if getattr(denoiser, "gap_head", "expectation") == "expectation":
            if tuple(gaps.shape) != (B, N + 1):
                raise ValueError(f"expected gaps must have shape [B, N + 1] = {[B, N + 1]}, got {list(gaps.shape)}")
            expected = gaps.to(torch.float64)
            if bool((expected < 0).any()) or not bool(torch.isfinite(expected).all()):
                raise ddkit.NumericalError("expected gap counts must be finite and >= 0")
            return InsertionPrediction(token_logits, torch.where(slots, expected, 0.0))
        if gaps.dim() != 3 or tuple(gaps.shape[:2]) != (B, N + 1):
            raise ValueError(f"gap logits must have shape [B, N + 1, K + 1] with B, N = {B}, {N}, got "
                             f"{list(gaps.shape)}")
        if gaps.shape[-1] < N + 1:
            raise ValueError(f"a distribution gap head needs the counts 0..{N} (N + 1 classes), got {gaps.shape[-1]}")
        log_probs = gaps.float().log_softmax(-1)
        counts = torch.arange(gaps.shape[-1], dtype=torch.float64, device=gaps.device)
        expected = (log_probs.to(torch.float64).exp() * counts).sum(-1)
        return InsertionPrediction(token_logits, torch.where(slots, expected, 0.0), log_probs)


@ddkit.hookimpl
def register_processes(register):
    register("insertion", InsertionProcess,
             summary="FlexMDM: variable-length sequences grown by inserting and unmasking masks (not per-token)")
