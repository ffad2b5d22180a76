r"""Likelihood bounds on a held-out split.

For each evaluation sequence :math:`x^{(m)}` (non-overlapping chunks of ``N`` tokens) the
loss draws ``K`` times and returns the per-token NELBO estimates; their mean

.. math::  \hat L_m = \frac{1}{K N} \sum_{k=1}^{K} \sum_{n=1}^{N} \ell_n(x^{(m)}, t_k)

is an unbiased estimate of the sequence's NELBO per token, an upper bound on
:math:`-\frac1N \log p_\theta(x^{(m)})`. The reported value is
:math:`\bar L = \frac1M\sum_m \hat L_m` in nats per token, with bits per token
:math:`\bar L/\ln 2` and the perplexity bound :math:`e^{\bar L}`.

Each batch holds ``G`` sequences, each repeated ``K`` times as ``[x_1..x_G, x_1..x_G, ...]``;
with antithetic time sampling the loss spaces the batch's times :math:`1/(GK)` apart, so the
``K`` draws of one sequence are stratified over :math:`[t_{min}, 1]`. Draws within a batch
share one random offset, so batches (not sequences) are the independent units (each batch
draws from its own generator, seeded from ``seed`` and the batch's number, so processes can
share the batches out and still give the value of one process): the standard
error is the cluster (ratio-estimator) one,

.. math::  \mathrm{SE}^2 = \frac{B}{B-1}\,\frac{\sum_b (S_b - n_b \bar L)^2}{(\sum_b n_b)^2},

with :math:`S_b` the sum of :math:`\hat L_m` over the :math:`n_b` sequences of batch
:math:`b` (with a single batch, the sequences' spread is used instead). It covers both the
time sampling noise and the variation between sequences.

In JSON (:meth:`ELBOEstimate.to_json`) a standard error that does not exist (one sequence)
and a perplexity beyond the float range are ``null``, so reports stay valid JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

import ddkit

from .distributed import EVALUATION, World, seed_for


@dataclass
class ELBOEstimate:
    """A NELBO estimate in nats per token, with its standard error; ``bound`` is ``upper``."""

    nats_per_token: float
    standard_error: float
    sequences: int
    tokens_per_sequence: int
    time_samples: int
    bound: str = "upper bound on the negative log-likelihood (NELBO)"

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    @property
    def bits_standard_error(self) -> float:
        return self.standard_error / math.log(2)

    @property
    def perplexity(self) -> float:
        r""":math:`e^{\bar L}`; ``inf`` beyond the float range (above about 709.78 nats per token)."""
        try:
            return math.exp(self.nats_per_token)
        except OverflowError:
            return math.inf

    def to_json(self) -> dict:
        """Plain JSON values: a non-finite number (no standard error, an overflowing perplexity) is ``None``."""
        values = {**asdict(self), "bits_per_token": self.bits_per_token,
                  "bits_standard_error": self.bits_standard_error, "perplexity": self.perplexity}
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}

    def __str__(self) -> str:
        return (f"{self.nats_per_token:.4f} ± {self.standard_error:.4f} nats/token = "
                f"{self.bits_per_token:.4f} ± {self.bits_standard_error:.4f} bits/token, "
                f"perplexity ≤ {self.perplexity:.3f}")


@torch.no_grad()
def estimate_elbo(denoiser: ddkit.Denoiser, loss: ddkit.Loss, sequences: Tensor, *, time_samples: int = 8,
                  batch_size: int = 64, seed: int = 0, device: torch.device | str | None = None,
                  world: World | None = None) -> ELBOEstimate:
    """NELBO per token of ``sequences`` (``[M, N]``) with ``time_samples`` draws per
    sequence; ``batch_size`` rows (sequence copies) per denoiser call; batch ``b`` draws from
    a generator seeded by ``(seed, b)``. With a ``world`` of several processes each takes every
    ``K``-th batch (every process calls this with the same arguments and gets the same
    estimate). A non-finite estimate raises :class:`ddkit.NumericalError`."""
    if sequences.dim() != 2 or sequences.shape[0] == 0:
        raise ValueError(f"need a non-empty [M, N] tensor of sequences, got shape {tuple(sequences.shape)}")
    if time_samples < 1:
        raise ValueError(f"time_samples must be >= 1, got {time_samples}")
    M, N = sequences.shape
    world = world if world is not None else World()
    group = max(1, batch_size // time_samples)
    starts = range(0, M, group)
    mine = {}
    for index in range(world.rank, len(starts), world.size):
        x = sequences[starts[index]:starts[index] + group].to(device)
        G = x.shape[0]
        generator = torch.Generator(device=x.device).manual_seed(seed_for(seed, EVALUATION, index))
        out = loss(denoiser, x.repeat(time_samples, 1), generator=generator)
        mine[index] = (out.nats.double().sum(-1).view(time_samples, G).mean(0) / N).cpu()  # [G]
    batches = {index: values for part in world.gather(mine) for index, values in part.items()}
    per_sequence = [batches[index] for index in range(len(starts))]
    batch_sums = [float(values.sum()) for values in per_sequence]
    batch_sizes = [values.numel() for values in per_sequence]
    values = torch.cat(per_sequence)
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        first = float(values[~torch.isfinite(values)][0])
        raise ddkit.NumericalError(f"the ELBO estimate is NaN or infinite for {bad} of {M} sequences (first: "
                                   f"{first}): the model's output or the loss is not finite")
    mean = float(values.mean())
    if len(batch_sums) >= 2:
        sums, sizes = torch.tensor(batch_sums, dtype=torch.float64), torch.tensor(batch_sizes, dtype=torch.float64)
        B = len(batch_sums)
        se = math.sqrt(B / (B - 1) * float(((sums - sizes * mean) ** 2).sum()) / float(sizes.sum()) ** 2)
    else:
        se = float(values.std(unbiased=True)) / math.sqrt(M) if M > 1 else float("nan")
    return ELBOEstimate(mean, se, M, N, time_samples)


@dataclass
class OrderedNLL:
    """The exact negative log-likelihood per token of the model decoded in a fixed order (one
    token per step): a likelihood of that sampler, not a bound."""

    nats_per_token: float
    standard_error: float
    sequences: int
    tokens_per_sequence: int
    order: str = "left_to_right"
    bound: str = ("exact negative log-likelihood of the model decoded left to right, one token per step "
                  "(a likelihood of that sampler, not a bound)")

    def to_json(self) -> dict:
        values = {**asdict(self), "bits_per_token": self.nats_per_token / math.log(2),
                  "bits_standard_error": self.standard_error / math.log(2)}
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}


@torch.no_grad()
def left_to_right_nll(denoiser: ddkit.Denoiser, process: ddkit.Process, parameterization: ddkit.Parameterization,
                      sequences: Tensor, *, batch_size: int = 64,
                      device: torch.device | str | None = None) -> OrderedNLL:
    r"""Per-token NLL of ``sequences`` (``[M, N]``) under the masked model decoded left to right:

    .. math::  -\frac1N \log p_\theta^{\to}(x) = -\frac1N \sum_{n=0}^{N-1}
               \log \mu_\theta\big(x_{<n} \oplus m^{N-n},\ t_n\big)_{n,\,x_n},
               \qquad \alpha_{t_n} = n / N ,

    the :math:`n`-th factor read at position :math:`n` with the tokens before it clean and the
    rest masked (:math:`t_n` matters only to a time-conditioned model). Every fixed order gives
    a normalised distribution over sequences, the one ``semi_ar`` with one-token blocks samples
    at temperature 1; the masked ELBO is the average of these NLLs over uniformly random orders
    (for a time-independent denoiser), so this is an estimate of the model's likelihood that can
    lie below the bound. ``N`` denoiser calls per batch of ``batch_size`` sequences."""
    if "absorbing" not in process.capabilities:
        raise ValueError(f"the left-to-right NLL needs a masked (absorbing) process; {type(process).__name__} is not")
    if sequences.dim() != 2 or sequences.shape[0] == 0:
        raise ValueError(f"need a non-empty [M, N] tensor of sequences, got shape {tuple(sequences.shape)}")
    M, N = sequences.shape
    schedule = process.schedule
    alphas = torch.arange(N, dtype=torch.float64) / N
    if schedule.invertible:
        times = schedule.inverse(alphas).clamp(0.0, 1.0)
    elif getattr(parameterization, "time_conditioning", False):
        raise ValueError(f"the left-to-right NLL of a time-conditioned model needs an invertible schedule; "
                         f"{type(schedule).__name__} is not")
    else:
        times = 1.0 - alphas  # not read by a model without time conditioning
    per_sequence = []
    for start in range(0, M, batch_size):
        x0 = sequences[start:start + batch_size].to(device)
        nats = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
        for n in range(N):
            view = x0.clone()
            view[:, n:] = process.mask_id
            t = times[n].to(x0.device).expand(x0.shape[0]).float()
            log_mean = parameterization.log_mean(denoiser, view, t, process)[:, n].double()
            nats -= log_mean.gather(-1, x0[:, n:n + 1]).squeeze(-1)
        per_sequence.append((nats / N).cpu())
    values = torch.cat(per_sequence)
    if not bool(torch.isfinite(values).all()):
        raise ddkit.NumericalError(f"the left-to-right NLL is NaN or infinite for "
                                   f"{int((~torch.isfinite(values)).sum())} of {M} sequences")
    se = float(values.std(unbiased=True)) / math.sqrt(M) if M > 1 else float("nan")
    return OrderedNLL(float(values.mean()), se, M, N)
