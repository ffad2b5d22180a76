r"""The loss protocol: training objectives that return per-token nats, and time sampling.

A loss draws times, noises the data with the process, calls the denoiser through the
parameterization and returns a :class:`LossOutput` whose ``nats`` is an unbiased estimate
of the per-token contribution to the objective (for the ELBOs: the negative ELBO, an upper
bound on :math:`-\log p_\theta(x_0)`, summed over tokens). Internally everything is nats;
:class:`LossOutput` converts to bits per token (``nats / ln 2``) and perplexity
(``exp(nats per token)``).

Time sampling (:func:`sample_times`):

* ``iid``: :math:`t_b \sim U[t_{min}, 1]` independently;
* ``antithetic``: low-discrepancy :math:`u_b = (u_0 + b/B) \bmod 1` with one shared
  :math:`u_0 \sim U[0,1)`, mapped to :math:`[t_{min}, 1]`; each :math:`t_b` is still uniform
  so the estimate stays unbiased while its variance drops.

A batch that is one slice of a larger *global* batch (data-parallel training, gradient
accumulation) keeps the stratification over the global batch inside
:func:`global_batch_slice`: micro-batch :math:`j` of :math:`M`, each of :math:`B` draws,
takes :math:`u_b = (u_0 + (bM + j)/(BM)) \bmod 1`, where :math:`u_0` comes from a generator
that every slice seeds alike. The :math:`M` slices together are exactly one antithetic
draw of :math:`BM` times, and each slice is itself stratified over :math:`B` strata.

The continuous-time estimators integrate over :math:`[t_{min}, 1]` and multiply by
:math:`1 - t_{min}`; the omitted piece :math:`[0, t_{min}]` contributes about
:math:`t_{min}` times the low-noise loss and avoids the infinite weight at
:math:`\alpha = 1`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from .denoiser import Denoiser
from .params import params_model
from .registry import Component, build

TimeSampling = Literal["iid", "antithetic"]


@dataclass
class LossOutput:
    """Per-token nats of one loss evaluation. ``nats[b, n]`` sums to the per-sequence
    estimate; ``t`` holds the times (or steps) drawn; ``bound`` says whether the value is an
    upper bound on the negative log-likelihood."""

    nats: Tensor
    t: Tensor
    bound: bool = True

    @property
    def loss(self) -> Tensor:
        """Mean nats per token, the scalar to minimise."""
        return self.nats.mean()

    @property
    def nats_per_token(self) -> float:
        return float(self.nats.detach().mean())

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)


@dataclass(frozen=True)
class GlobalBatchSlice:
    """The current batch is slice ``index`` of ``count`` equal slices of one global batch;
    ``offsets`` draws the shared antithetic offset :math:`u_0` (a CPU generator seeded the
    same way for every slice)."""

    index: int
    count: int
    offsets: torch.Generator


_GLOBAL_BATCH: contextvars.ContextVar[GlobalBatchSlice | None] = contextvars.ContextVar("ddkit_global_batch",
                                                                                         default=None)


@contextlib.contextmanager
def global_batch_slice(index: int, count: int, offsets: torch.Generator) -> Iterator[GlobalBatchSlice]:
    """Antithetic draws (:func:`sample_times`, :func:`sample_steps`) inside this block are slice
    ``index`` of ``count`` of one global stratified draw (see the module docstring). ``offsets``
    must be a CPU generator in the same state for every slice (each slice seeds its own copy),
    so every slice draws the same sequence of offsets :math:`u_0`. Independent (iid) draws
    are not affected.

    Example: the two halves of a batch of 4, drawn as two slices, are the whole batch's draw::

        >>> def halves():
        ...     for j in range(2):
        ...         with global_batch_slice(j, 2, torch.Generator().manual_seed(0)):
        ...             yield sample_times(2, method="antithetic")
        >>> a, b = halves()
        >>> torch.sort(torch.cat([a, b])).values.diff().round(decimals=12).unique().tolist()
        [0.25]
    """
    if not 0 <= index < count:
        raise ValueError(f"global_batch_slice: index {index} is not in [0, {count})")
    if offsets.device.type != "cpu":
        raise ValueError(f"global_batch_slice: the offsets generator must be on the CPU, got {offsets.device}")
    token = _GLOBAL_BATCH.set(GlobalBatchSlice(index, count, offsets))
    try:
        yield _GLOBAL_BATCH.get()
    finally:
        _GLOBAL_BATCH.reset(token)


def _uniforms(batch: int, method: TimeSampling, generator: torch.Generator | None,
              device: torch.device | str | None) -> Tensor:
    if method == "iid":
        return torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
    if method == "antithetic":
        part = _GLOBAL_BATCH.get()
        index = torch.arange(batch, dtype=torch.float64, device=device)
        if part is None:
            u0 = torch.rand((), generator=generator, dtype=torch.float64, device=device)
            return torch.remainder(u0 + index / batch, 1.0)
        u0 = torch.rand((), generator=part.offsets, dtype=torch.float64).to(device)
        return torch.remainder(u0 + (index * part.count + part.index) / (batch * part.count), 1.0)
    raise ValueError(f"unknown time sampling {method!r}; use 'iid' or 'antithetic'")


def sample_times(batch: int, *, method: TimeSampling = "iid", t_min: float = 0.0,
                 generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """``batch`` times in ``[t_min, 1]`` (float64), each marginally uniform."""
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must be in [0, 1), got {t_min}")
    u = _uniforms(batch, method, generator, device)
    # 1 - u lies in (0, 1]: t = 1 is allowed (alpha_1 = 0 is harmless), t = t_min is not drawn
    return t_min + (1.0 - t_min) * (1.0 - u)


def sample_steps(batch: int, num_steps: int, *, method: TimeSampling = "iid",
                 generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """``batch`` step indices in ``1..num_steps`` (long), each marginally uniform."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    u = _uniforms(batch, method, generator, device)
    return (u * num_steps).long().clamp_max(num_steps - 1) + 1


class Loss(nn.Module):
    """Base class. ``forward(denoiser, x0, generator=None) -> LossOutput``."""

    def forward(self, denoiser: Denoiser, x0: Tensor,
                generator: torch.Generator | None = None) -> LossOutput:
        raise NotImplementedError

    def check_model(self, model: Any) -> None:
        """Raise ``ValueError`` if this loss cannot train ``model`` (an output it needs and the
        model does not declare); pipelines call it when they are built, before any training.
        Nothing by default."""

    def evaluation(self) -> Loss:
        """The loss to report on held-out data: this one, unless it trains on a biased
        objective (e.g. clipped noise levels), whose bound version it then returns."""
        return self

    def metrics(self) -> dict[str, float]:
        """Numbers for the training log besides the loss (e.g. a learnable schedule's
        parameters); empty by default."""
        return {}

    def after_validation(self, denoiser: Denoiser, batches: list[Tensor], *, seed: int = 0) -> dict[str, float]:
        """Called by training after each validation with the validation batches, for losses
        that adapt to them (e.g. choose a noise interval); returns values to log."""
        return {}


class ContinuousTimeLoss(Loss):
    r"""A continuous-time objective :math:`\int_{t_{min}}^1 \mathbb E_{q(x_t \mid x_0)}
    \ell(x_0, x_t, t)\,dt`: one time per sequence (``time_sampling`` on :math:`[t_{min}, 1]`),
    :math:`x_t \sim q(x_t \mid x_0)` from the process, and the estimate
    :math:`(1 - t_{min})\,\ell` in nats per token. Subclasses give the integrand
    :math:`\ell` (:meth:`integrand`); one with another default parameterization re-declares
    ``parameterization`` in its ``__init__`` and passes the rest on as ``**kwargs``."""

    def __init__(self, process: Component("process"),
                 parameterization: Component("parameterization") = "mean",
                 time_sampling: TimeSampling = "antithetic",
                 t_min: Annotated[float, Field(ge=0.0, lt=1.0)] = 1e-4):
        super().__init__()
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must be in [0, 1), got {t_min}")
        self.process = process
        self.parameterization = build("parameterization", parameterization)
        self.time_sampling = time_sampling
        self.t_min = float(t_min)
        try:
            schedule = process.schedule
        except AttributeError as exc:  # e.g. the insertion process, which has its own loss
            raise ValueError(f"{type(self).__name__} needs a process factorised over positions, with a schedule "
                             f"({exc})") from None
        if isinstance(schedule, nn.Module):
            self.schedule = schedule  # learnable schedule parameters reach the optimiser

    def integrand(self, denoiser: Denoiser, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Per-token nats of the integrand at times ``t`` (one per sequence)."""
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """The schedule's :meth:`ddkit.Schedule.metrics`, prefixed ``schedule_``."""
        metrics = getattr(getattr(self.process, "schedule", None), "metrics", None)
        return {f"schedule_{key}": value for key, value in metrics().items()} if callable(metrics) else {}

    def forward(self, denoiser: Denoiser, x0: Tensor,
                generator: torch.Generator | None = None) -> LossOutput:
        t = sample_times(x0.shape[0], method=self.time_sampling, t_min=self.t_min,
                         generator=generator, device=x0.device)
        x_t = self.process.sample_marginal(x0, t, generator=generator)
        return LossOutput(nats=(1.0 - self.t_min) * self.integrand(denoiser, x0, x_t, t), t=t)


#: Parameters of a :class:`ContinuousTimeLoss`, derived from its signature.
ContinuousTimeLossParams = params_model(ContinuousTimeLoss, name="ContinuousTimeLossParams")
