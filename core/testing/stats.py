r"""Distances between distributions on small spaces and the sampling bounds that make
Monte-Carlo checks sound.

Every bound here is non-asymptotic: it holds for every sample size with the stated
probability, so a test that compares an observed statistic with it fails by chance with
probability at most ``delta`` (the kit uses :data:`DEFAULT_DELTA` = 1e-6), never because a
threshold was tuned until the test passed.

* :func:`hoeffding_bound` — a frequency of ``n`` iid Bernoulli draws:
  :math:`P(|\hat p - p| \ge \varepsilon) \le 2 e^{-2 n \varepsilon^2}`.
* :func:`l1_deviation_bound` — the empirical distribution :math:`\hat p` of ``n`` iid draws
  from :math:`p` over ``m`` outcomes. Jensen gives :math:`E\|\hat p - p\|_1 \le \sum_k
  \sqrt{p_k (1 - p_k) / n}`, and :math:`\|\hat p - p\|_1` changes by at most :math:`2/n`
  when one draw changes, so McDiarmid adds :math:`\sqrt{2 \log(1/\delta) / n}`.
  Total variation is half the :math:`L_1` distance.
* :func:`kl_types_bound` — the method of types:
  :math:`P(\mathrm{KL}(\hat p \,\|\, p) \ge \varepsilon) \le (n + 1)^m e^{-n \varepsilon}`.
* :func:`two_sample_frequency_bound` — the difference of two independent frequencies from
  ``n1`` and ``n2`` draws: :math:`P(|\hat p_1 - \hat p_2| \ge \varepsilon) \le
  2 e^{-2\varepsilon^2 / (1/n_1 + 1/n_2)}` (Hoeffding on the ``n1 + n2`` independent terms).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: failure probability of every statistical check in the kit
DEFAULT_DELTA = 1e-6


def hoeffding_bound(n: int, delta: float = DEFAULT_DELTA, *, num_tests: int = 1) -> float:
    r""":math:`\varepsilon` with :math:`P(|\hat p - p| \ge \varepsilon) \le \delta` for a
    frequency over ``n`` draws, Bonferroni-corrected for ``num_tests`` simultaneous tests."""
    _check_sizes(n, delta)
    return math.sqrt(math.log(2 * num_tests / delta) / (2 * n))


def two_sample_frequency_bound(n1: int, n2: int, delta: float = DEFAULT_DELTA, *,
                               num_tests: int = 1) -> float:
    r""":math:`\varepsilon` with :math:`P(|\hat p_1 - \hat p_2| \ge \varepsilon) \le \delta`
    when both frequencies estimate the same :math:`p` from independent samples."""
    _check_sizes(min(n1, n2), delta)
    return math.sqrt(math.log(2 * num_tests / delta) * (1 / n1 + 1 / n2) / 2)


def l1_deviation_bound(probs: Tensor, n: int, delta: float = DEFAULT_DELTA) -> float:
    r"""A bound :math:`b` with :math:`P(\|\hat p - p\|_1 \ge b) \le \delta` for the empirical
    distribution of ``n`` iid draws from ``probs`` (see the module docstring)."""
    _check_sizes(n, delta)
    p = probs.to(torch.float64)
    expected = float(torch.sqrt(p * (1 - p)).sum()) / math.sqrt(n)
    return expected + math.sqrt(2 * math.log(1 / delta) / n)


def tv_bound(probs: Tensor, n: int, delta: float = DEFAULT_DELTA) -> float:
    """Total-variation version of :func:`l1_deviation_bound` (half of it)."""
    return l1_deviation_bound(probs, n, delta) / 2


def kl_types_bound(num_outcomes: int, n: int, delta: float = DEFAULT_DELTA) -> float:
    r""":math:`\varepsilon` with :math:`P(\mathrm{KL}(\hat p \| p) \ge \varepsilon) \le \delta`
    over ``num_outcomes`` outcomes and ``n`` draws: :math:`(m \log(n+1) + \log(1/\delta))/n`."""
    _check_sizes(n, delta)
    return (num_outcomes * math.log(n + 1) + math.log(1 / delta)) / n


def empirical_distribution(ids: Tensor, num_outcomes: int) -> Tensor:
    """Frequencies (float64, summing to 1) of the integer outcomes ``ids`` in ``0..m-1``."""
    if ids.numel() == 0:
        raise ValueError("need at least one draw")
    counts = torch.bincount(ids.reshape(-1).cpu(), minlength=num_outcomes)
    if counts.numel() > num_outcomes:
        raise ValueError(f"outcome ids must be below {num_outcomes}, got {int(ids.max())}")
    return counts.to(torch.float64) / ids.numel()


def total_variation(p: Tensor, q: Tensor) -> float:
    r""":math:`\mathrm{TV}(p, q) = \frac12 \sum_k |p_k - q_k|`."""
    return 0.5 * float((p.to(torch.float64) - q.to(torch.float64)).abs().sum())


def kl_divergence(p: Tensor, q: Tensor) -> float:
    r""":math:`\mathrm{KL}(p \| q) = \sum_k p_k \log(p_k / q_k)` in nats (``0 log 0 = 0``;
    infinite where :math:`p_k > 0 = q_k`)."""
    p, q = p.to(torch.float64), q.to(torch.float64)
    return float((torch.xlogy(p, p) - torch.xlogy(p, q)).sum())


def _check_sizes(n: int, delta: float) -> None:
    if n < 1:
        raise ValueError(f"need at least one draw, got n={n}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
