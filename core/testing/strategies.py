r"""Hypothesis strategies for discrete diffusion (needs the ``hypothesis`` package).

Every strategy draws plain values or tensors that hypothesis can shrink and print, so a
failing example replays: a random generator is drawn as its seed
(:func:`torch_generators` gives a :class:`SeededGenerator` whose repr is that seed).

=========================  =================================================================
:func:`vocab_sizes`        vocabulary sizes ``V``
:func:`times`              times in :math:`[0, 1]` (endpoints optional)
:func:`time_pairs`         ``(s, t)`` with :math:`s \le t`
:func:`time_grids`         decreasing float64 grids :math:`1 = t_T > \dots > t_0 = 0`
:func:`token_batches`      LongTensor ``[B, N]`` of tokens, optionally with mask ids
:func:`prompts`            sampler prompts: tokens or ``-1`` (free)
:func:`probability_vectors`  float64 distributions
:func:`transition_matrices`  row-stochastic float64 matrices
:func:`rate_matrices`      generators: off-diagonal :math:`\ge 0`, rows summing to 0
:func:`schedules`          schedules built from the registry by name
:func:`processes`          processes built from the registry
:func:`torch_generators`   seeded ``torch.Generator`` s
=========================  =================================================================

Profiles: :func:`register_profiles` registers ``ddkit-dev`` (30 examples), ``ddkit-ci``
(30 examples, no deadline, derandomized: shared CI machines have noisy timings) and
``ddkit-nightly`` (1000 examples, no deadline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from torch import Tensor

from ..registry import build, get_registry

_F64 = torch.float64


class SeededGenerator(torch.Generator):
    """A CPU ``torch.Generator`` seeded at construction whose repr shows the seed, so that
    hypothesis prints a failing example in a form that replays."""

    def __new__(cls, seed: int):
        self = super().__new__(cls, "cpu")
        self.seed_value = int(seed)
        self.manual_seed(int(seed))
        return self

    def __init__(self, seed: int):  # the work is done in __new__ (torch.Generator's signature)
        pass

    def __repr__(self) -> str:
        return f"SeededGenerator({self.seed_value})"


def _maybe(value: int | st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    return value if isinstance(value, st.SearchStrategy) else st.just(int(value))


def vocab_sizes(min_value: int = 1, max_value: int = 16) -> st.SearchStrategy[int]:
    """Vocabulary sizes ``V`` in ``[min_value, max_value]``."""
    if min_value < 1:
        raise ValueError(f"min_value must be >= 1, got {min_value}")
    return st.integers(min_value, max_value)


def times(*, min_value: float = 0.0, max_value: float = 1.0, exclude_min: bool = False,
          exclude_max: bool = False) -> st.SearchStrategy[float]:
    """Times in ``[min_value, max_value]`` (finite floats; endpoints excluded on request)."""
    return st.floats(min_value, max_value, exclude_min=exclude_min, exclude_max=exclude_max,
                     allow_nan=False, allow_infinity=False)


def time_pairs(**kwargs: Any) -> st.SearchStrategy[tuple[float, float]]:
    """``(s, t)`` with ``s <= t``, both drawn by :func:`times` with ``kwargs``."""
    return st.tuples(times(**kwargs), times(**kwargs)).map(lambda p: (min(p), max(p)))


@st.composite
def time_grids(draw, *, min_steps: int = 1, max_steps: int = 32) -> Tensor:
    """Strictly decreasing float64 grids from 1 to 0 with ``steps + 1`` entries (the order a
    sampler visits them, like :func:`ddkit.time_grid`)."""
    steps = draw(st.integers(min_steps, max_steps))
    inner = draw(st.lists(times(exclude_min=True, exclude_max=True), min_size=steps - 1,
                          max_size=steps - 1, unique=True))
    return torch.tensor([1.0, *sorted(inner, reverse=True), 0.0], dtype=_F64)


@st.composite
def token_batches(draw, vocab_size: int | st.SearchStrategy[int], *, mask_id: int | None = None,
                  batch_size: int | st.SearchStrategy[int] = st.integers(1, 4),
                  length: int | st.SearchStrategy[int] = st.integers(1, 8)) -> Tensor:
    """LongTensor ``[B, N]`` of tokens ``0..V-1``; with ``mask_id`` entries may also be the
    mask (all-masked and mask-free batches included)."""
    V, B, N = draw(_maybe(vocab_size)), draw(_maybe(batch_size)), draw(_maybe(length))
    entry = st.integers(0, V - 1)
    if mask_id is not None:
        entry = st.one_of(st.just(int(mask_id)), entry)
    values = draw(st.lists(entry, min_size=B * N, max_size=B * N))
    return torch.tensor(values, dtype=torch.long).reshape(B, N)


def prompts(vocab_size: int | st.SearchStrategy[int], **kwargs: Any) -> st.SearchStrategy[Tensor]:
    """Sampler prompts ``[B, N]``: fixed tokens in ``0..V-1`` or ``-1`` (generate)."""
    return token_batches(vocab_size, mask_id=-1, **kwargs)


@st.composite
def probability_vectors(draw, size: int | st.SearchStrategy[int], *,
                        allow_zeros: bool = True) -> Tensor:
    """float64 probability vectors of ``size`` entries (some exactly 0 if ``allow_zeros``)."""
    n = draw(_maybe(size))
    low = 0.0 if allow_zeros else 1e-3
    weights = draw(st.lists(st.floats(low, 1.0), min_size=n, max_size=n)
                   .filter(lambda w: sum(w) > 1e-6))
    p = torch.tensor(weights, dtype=_F64)
    return p / p.sum()


@st.composite
def transition_matrices(draw, num_states: int | st.SearchStrategy[int], *,
                        allow_zeros: bool = True) -> Tensor:
    """Row-stochastic float64 matrices ``[S, S]``."""
    S = draw(_maybe(num_states))
    return torch.stack([draw(probability_vectors(S, allow_zeros=allow_zeros)) for _ in range(S)])


@st.composite
def rate_matrices(draw, num_states: int | st.SearchStrategy[int], *,
                  max_rate: float = 10.0) -> Tensor:
    r"""CTMC generators ``[S, S]`` (float64): off-diagonal rates in ``[0, max_rate]`` (exact
    zeros included), diagonal :math:`R_{ii} = -\sum_{j \ne i} R_{ij}` so rows sum to 0."""
    S = draw(_maybe(num_states))
    rate = st.one_of(st.just(0.0), st.floats(0.0, max_rate))
    off = torch.tensor(draw(st.lists(rate, min_size=S * S, max_size=S * S)), dtype=_F64).reshape(S, S)
    off.fill_diagonal_(0.0)
    return off - torch.diag(off.sum(-1))


def torch_generators() -> st.SearchStrategy[SeededGenerator]:
    """CPU generators drawn as their seed (shrinks to small seeds, prints as
    ``SeededGenerator(seed)``)."""
    return st.integers(0, 2**32 - 1).map(SeededGenerator)


def _buildable(kind: str, names: Sequence[str] | None) -> list[str]:
    registry = get_registry()
    if names is not None:
        return list(names)
    usable = []
    for name in registry.names(kind):
        try:
            record, _ = registry.validate(kind, name)  # buildable with default parameters?
        except Exception:  # noqa: BLE001 - a component that needs parameters is left out
            continue
        if "vocab_size" in record.params.model_fields:  # sized by a process (a vector schedule)
            continue
        usable.append(name)
    return usable


def schedules(names: Sequence[str] | None = None, *,
              params: Mapping[str, st.SearchStrategy[dict]] | None = None) -> st.SearchStrategy:
    """Schedules built by name from the registry: ``names`` (default: every installed
    schedule that builds with default parameters), each with parameters drawn from
    ``params[name]`` (a strategy of keyword dicts) or its defaults.

    Example: ``schedules(["polynomial"], params={"polynomial":
    st.fixed_dictionaries({"exponent": st.floats(0.5, 4)})})``."""
    chosen = _buildable("schedule", names)
    if not chosen:
        raise ValueError("no schedule to draw: none is installed or buildable with defaults")
    params = dict(params or {})

    def one(name: str) -> st.SearchStrategy:
        return params.get(name, st.just({})).map(lambda kw: build("schedule", name, **kw))

    return st.sampled_from(chosen).flatmap(one)


def processes(names: Sequence[str] = ("masked",), *,
              vocab_size: int | st.SearchStrategy[int] = vocab_sizes(1, 8),
              schedule: st.SearchStrategy | None = None) -> st.SearchStrategy:
    """Processes built by name from the registry with a drawn vocabulary size and schedule."""
    schedule = schedule if schedule is not None else schedules()
    return st.builds(lambda name, V, sched: build("process", name, vocab_size=V, schedule=sched),
                     st.sampled_from(list(names)), _maybe(vocab_size), schedule)


def register_profiles() -> None:
    """Register the ``ddkit-dev``, ``ddkit-ci`` and ``ddkit-nightly`` hypothesis profiles."""
    settings.register_profile("ddkit-dev", max_examples=30, deadline=None)
    settings.register_profile("ddkit-ci", max_examples=30, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("ddkit-nightly", max_examples=1000, deadline=None)


__all__ = [
    "SeededGenerator",
    "prompts",
    "probability_vectors",
    "processes",
    "rate_matrices",
    "register_profiles",
    "schedules",
    "time_grids",
    "time_pairs",
    "times",
    "token_batches",
    "torch_generators",
    "transition_matrices",
    "vocab_sizes",
]
