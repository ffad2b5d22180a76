r"""The block diffusion (BD3-LM) negative ELBO: autoregressive over blocks, masked diffusion
within each block.

The sequence is split into blocks :math:`x^b` of ``block_length`` :math:`L'` positions and

.. math::  -\log p_\theta(x) = -\sum_b \log p_\theta(x^b \mid x^{<b})
           \le \sum_b \int_0^1 \frac{-\alpha'_t}{1 - \alpha_t}\,
           \mathbb E_{q(x^b_t \mid x^b)}\Big[\sum_{\ell:\,x^{b,\ell}_t = m}
           -\log \mu_\theta(x^b_t, x^{<b})_{\ell,\,x^{b,\ell}}\Big]\,dt ,

each block with its **own** time :math:`t_b` (drawn iid or antithetically, stratified over
all batch × block slots, from :math:`[t_{min}, 1]`; the estimate is multiplied by
:math:`1 - t_{min}` as in ``continuous_elbo``). With :math:`L' = N` it is the masked
continuous ELBO estimator (the same draws give the same value); with :math:`L' = 1` it bounds
the autoregressive likelihood.

The denoiser sees the earlier blocks clean and the later ones masked. A model that declares
``block_causal = True`` and provides ``two_stream(x_t, x_0)`` (``block_dit``) computes every
block in one pass over :math:`x_t \oplus x_0`; any other denoiser is called once per block
on :math:`[x^{<b}, x^b_t, m, \dots]` (exact, and what the oracle tests use).

``clip: [β, ω]`` trains on the biased "clipped" objective of BD3-LM: each block's mask rate
:math:`1 - \alpha_t` is drawn from :math:`U[β, ω]` and its masked fraction :math:`k/L'` must
lie in :math:`[β, ω]` too. Instead of resampling Bernoulli masks until it does (which loops
forever when no count fits), the count is drawn from the binomial law conditioned on the
admissible counts — the law the resampling loop converges to — and an interval that admits
no count is refused. The weight stays :math:`-\alpha'_t/(1-\alpha_t)` (times 1, not
:math:`1 - t_{min}`), and the result is flagged as not a bound: evaluate with
:meth:`BlockELBO.evaluation`, which uses the full range. ``clip: [1, 1]`` (every token
masked, weight 1) is exactly the autoregressive cross-entropy; with :math:`L' = 1` it is what
:meth:`BlockELBO.evaluation` uses, since it is then the exact negative log-likelihood.

``complementary_masks`` (full range only) noises each sequence twice, block by block, with
complementary masks and importance-weights the second copy, exactly as ``continuous_elbo``'s
option of that name (with :math:`L' = N` the two give the same value for the same draws);
for training: :meth:`BlockELBO.evaluation` is the plain estimator.

``clip: search`` chooses the interval at each validation (:meth:`BlockELBO.after_validation`):
over BD3-LM's grid of candidates (:meth:`BlockELBO.candidate_intervals`) the one whose
per-block NELBO has the least variance on the validation batches
(:meth:`BlockELBO.interval_variances`); it is kept in the loss's state, so checkpoints carry
it, and training starts on the full range.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor

import ddkit
from ddkit.categorical import sample_categorical
from ddkit.loss import TimeSampling
from ddkit.plugins.processes.masked import check_complementary
from ddkit.registry import Component

ClipInterval = Annotated[tuple[float, float] | Literal["search"] | None, Field(
    description="[beta, omega]: clipped mask rates; search: the variance-minimising interval, chosen at each validation")]

#: widths and spacing of the candidate intervals of the search (BD3-LM's defaults)
SEARCH_WIDTHS = (0.5, 0.6, 0.7, 0.8, 0.9)
SEARCH_DELTA = 0.05


def admissible_counts(block_length: int, clip: tuple[float, float]) -> Tensor:
    """``[L' + 1]`` bool: the masked counts ``k`` with ``β <= k / L' <= ω``."""
    low, high = clip
    k = torch.arange(block_length + 1, dtype=torch.float64)
    eps = 1e-12  # k / L' computed in floating point: count an endpoint as inside
    return (k / block_length >= low - eps) & (k / block_length <= high + eps)


class BlockELBO(ddkit.Loss):
    def __init__(self, process: Component("process"),
                 block_length: Annotated[int, Field(ge=1, description="block size L'")] = 4,
                 parameterization: Component("parameterization") = "mean",
                 time_sampling: TimeSampling = "antithetic",
                 t_min: Annotated[float, Field(ge=0.0, lt=1.0)] = 1e-4,
                 clip: ClipInterval = None,
                 complementary_masks: Annotated[bool, Field(
                     description="noise each sequence twice with complementary masks (training)")] = False):
        super().__init__()
        if "absorbing" not in process.capabilities:
            raise ValueError(f"block_elbo needs a masked (absorbing) process; {type(process).__name__} is not")
        self.process = process
        self.block_length = int(block_length)
        self.parameterization = ddkit.build("parameterization", parameterization)
        self.time_sampling, self.t_min = time_sampling, float(t_min)
        self.search = clip == "search"
        fixed = None if clip is None or self.search else (float(clip[0]), float(clip[1]))
        if fixed is not None:
            self.check_interval(fixed)
        if (fixed is not None or self.search) and fixed != (1.0, 1.0) and not process.schedule.invertible:
            raise ValueError(f"clip draws mask rates and needs the schedule's inverse; "
                             f"{type(process.schedule).__name__} has none")
        self.complementary_masks = bool(complementary_masks)
        if self.complementary_masks and (fixed is not None or self.search):
            raise ValueError(f"complementary_masks works on the full range; clip {clip} draws its own masks")
        if self.complementary_masks:
            check_complementary(process)
        # the interval in use, saved and restored with the loss's state (the search's choice)
        self.register_buffer("clip_bounds", torch.tensor(fixed or (math.nan, math.nan), dtype=torch.float64))

    @property
    def clip(self) -> tuple[float, float] | None:
        """The clipped interval of mask rates in use, or ``None`` (the full range)."""
        low, high = (float(v) for v in self.clip_bounds)
        return None if math.isnan(low) else (low, high)

    def check_interval(self, interval: tuple[float, float]) -> None:
        low, high = interval
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"clip must satisfy 0 <= beta <= omega <= 1, got {list(interval)}")
        if not bool(admissible_counts(self.block_length, interval).any()):
            raise ValueError(f"clip {list(interval)} admits no masked count k with beta <= k/{self.block_length} "
                             f"<= omega for block_length {self.block_length}")

    @property
    def autoregressive(self) -> bool:
        """Every token masked with weight 1: the autoregressive cross-entropy."""
        return self.clip == (1.0, 1.0)

    def evaluation(self) -> BlockELBO:
        """The loss to report: the full time range (a bound), or for :math:`L' = 1` the exact
        negative log-likelihood (every token masked, weight 1)."""
        return self.clipped((1.0, 1.0) if self.block_length == 1 else None)

    def clipped(self, interval: tuple[float, float] | None) -> BlockELBO:
        """This loss with the clipped interval ``interval`` (``None``: the full range)."""
        return BlockELBO(self.process, self.block_length, self.parameterization, self.time_sampling, self.t_min,
                         clip=interval).to(self.clip_bounds.device)

    def candidate_intervals(self) -> list[tuple[float, float]]:
        """BD3-LM's search grid: the full range, and for each width ``w`` in
        :data:`SEARCH_WIDTHS` the intervals ``[i, i + w]``, ``i = 0, δ, 2δ, ... <= 1 - w``
        (36 in all); for :math:`L' = 1`, the full range and ``[1, 1]``. Intervals that admit
        no masked count for the block length are left out."""
        if self.block_length == 1:
            return [(self.t_min, 1.0), (1.0, 1.0)]
        found = [(self.t_min, 1.0)]
        for width in SEARCH_WIDTHS:
            for i in range(int(round((1.0 - width) / SEARCH_DELTA)) + 1):
                low = round(i * SEARCH_DELTA, 10)
                found.append((max(low, self.t_min), max(round(low + width, 10), self.t_min)))
        return [c for c in found if bool(admissible_counts(self.block_length, c).any())]

    @torch.no_grad()
    def interval_variances(self, denoiser: ddkit.Denoiser, batches: list[Tensor], *,
                           seed: int = 0) -> list[tuple[tuple[float, float], float]]:
        """For every candidate interval, the variance of the per-block mean NLL over the blocks
        of a batch, summed over ``batches`` (BD3-LM's "variance of the NELBO estimator"),
        with the same noise seed for every interval."""
        table = []
        for interval in self.candidate_intervals():
            loss = self.clipped(None if interval == (self.t_min, 1.0) else interval)
            generator = torch.Generator(device=batches[0].device).manual_seed(seed)
            total = 0.0
            for batch in batches:
                nats = loss(denoiser, batch, generator=generator).nats.double()
                per_block = nats.view(batch.shape[0], -1, self.block_length).mean(-1)
                total += float(per_block.var())
            table.append((interval, total))
        return table

    def after_validation(self, denoiser: ddkit.Denoiser, batches: list[Tensor], *, seed: int = 0) -> dict[str, float]:
        """With ``clip: search``: choose the interval of least variance over the validation
        batches and train on it from now on; returns it for the metrics."""
        if not self.search:
            return {}
        interval, variance = min(self.interval_variances(denoiser, batches, seed=seed), key=lambda row: row[1])
        chosen = None if interval == (self.t_min, 1.0) else interval
        self.clip_bounds.copy_(torch.tensor(chosen or (math.nan, math.nan), dtype=torch.float64))
        return {"clip_low": interval[0], "clip_high": interval[1], "clip_variance": variance}

    def forward(self, denoiser: ddkit.Denoiser, x0: Tensor, generator: torch.Generator | None = None) -> ddkit.LossOutput:
        B, N = x0.shape
        L = self.block_length
        if N % L:
            raise ValueError(f"sequence length {N} is not a multiple of block_length {L}")
        blocks = N // L
        if self.complementary_masks:
            return self._complementary(denoiser, x0, blocks, generator)
        t_blocks, x_t = self._noise(x0, blocks, generator)
        t = t_blocks.repeat_interleave(L, dim=1)
        log_mean = self.block_log_mean(denoiser, x0, x_t, t)
        if self.autoregressive:
            nats = -log_mean.gather(-1, x0[..., None]).squeeze(-1)
        else:
            nats = self.process.continuous_elbo(x0, x_t, log_mean, t)
            if self.clip is None:
                nats = (1.0 - self.t_min) * nats
        return ddkit.LossOutput(nats=nats, t=t_blocks, bound=self.clip is None or self.autoregressive)

    def _complementary(self, denoiser: ddkit.Denoiser, x0: Tensor, blocks: int,
                       generator: torch.Generator | None) -> ddkit.LossOutput:
        """Two copies with complementary masks per block (module docstring), in one call."""
        B, L = x0.shape[0], self.block_length
        t_blocks = ddkit.sample_times(B * blocks, method=self.time_sampling, t_min=self.t_min, generator=generator,
                                      device=x0.device).view(B, blocks)
        x_t, x_other, t_other, weight = self.process.sample_complementary(
            x0, t_blocks.repeat_interleave(L, dim=1), generator=generator)
        x0_both, x_both = torch.cat([x0, x0]), torch.cat([x_t, x_other])
        t = torch.cat([t_blocks.repeat_interleave(L, dim=1), t_other])
        nats = self.process.continuous_elbo(x0_both, x_both, self.block_log_mean(denoiser, x0_both, x_both, t), t)
        first, second = nats.chunk(2)
        second = second * weight.to(second.dtype)
        return ddkit.LossOutput(nats=(1.0 - self.t_min) * 0.5 * (first + second), t=t_blocks, bound=True)

    def block_log_mean(self, denoiser: ddkit.Denoiser, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        r""":math:`\log \mu_\theta` of every position given its noisy block and the clean
        earlier blocks (later blocks masked), ``[B, N, V]``."""
        if getattr(denoiser, "block_causal", False) and hasattr(denoiser, "two_stream"):
            if getattr(denoiser, "block_length", self.block_length) != self.block_length:
                raise ValueError(f"the model's block_length {denoiser.block_length} differs from the loss's "
                                 f"{self.block_length}")

            def two_stream(inputs, times):
                return denoiser.two_stream(inputs, x0)

            return self.parameterization.log_mean(two_stream, x_t, t, self.process)
        L, mask_id = self.block_length, self.process.mask_id
        parts = []
        for start in range(0, x0.shape[1], L):
            view = torch.cat([x0[:, :start], x_t[:, start:start + L],
                              torch.full_like(x0[:, start + L:], mask_id)], dim=1)
            parts.append(self.parameterization.log_mean(denoiser, view, t, self.process)[:, start:start + L])
        return torch.cat(parts, dim=1)

    def _noise(self, x0: Tensor, blocks: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Per-block times ``[B, blocks]`` and the noised tokens."""
        B, L = x0.shape[0], self.block_length
        if self.clip is None:
            t = ddkit.sample_times(B * blocks, method=self.time_sampling, t_min=self.t_min, generator=generator,
                                   device=x0.device).view(B, blocks)
            return t, self.process.sample_marginal(x0, t.repeat_interleave(L, dim=1), generator=generator)
        low, high = self.clip
        unit = ddkit.sample_times(B * blocks, method=self.time_sampling, generator=generator, device=x0.device)
        rate = low + (high - low) * unit.view(B, blocks)
        t = torch.ones_like(rate) if self.autoregressive else \
            self.process.schedule.inverse(1.0 - rate).clamp(0.0, 1.0)
        counts = self._counts(rate, generator)
        # k uniformly chosen positions of each block: those whose random key ranks below k
        keys = torch.rand(B, blocks, L, generator=generator, dtype=torch.float64, device=x0.device)
        rank = keys.argsort(-1).argsort(-1)
        masked = (rank < counts[..., None]).view(B, blocks * L)
        return t, x0.masked_fill(masked, self.process.mask_id)

    def _counts(self, rate: Tensor, generator: torch.Generator | None) -> Tensor:
        """Masked counts per block: Binomial(L', rate) conditioned on the admissible counts."""
        L = self.block_length
        k = torch.arange(L + 1, dtype=torch.float64, device=rate.device)
        log_choose = torch.lgamma(torch.tensor(L + 1.0, dtype=torch.float64)) - torch.lgamma(k + 1) - torch.lgamma(L - k + 1)
        p = rate[..., None].to(torch.float64)
        log_pmf = log_choose + torch.xlogy(k, p) + torch.xlogy(L - k, 1 - p)
        allowed = admissible_counts(L, self.clip).to(rate.device)
        weights = log_pmf.masked_fill(~allowed, float("-inf")).exp()
        # a rate at an endpoint can leave no admissible count with mass: then uniform over them
        empty = weights.sum(-1, keepdim=True) <= 0
        weights = torch.where(empty, allowed.to(torch.float64).expand_as(weights), weights)
        return sample_categorical(weights, generator=generator)


@ddkit.hookimpl
def register_losses(register):
    register("block_elbo", BlockELBO,
             summary="block diffusion (BD3-LM) NELBO: autoregressive over blocks, masked diffusion inside")

