r"""A general CTMC given by a rate matrix: D3PM-style transition structures in continuous time.

A constant generator :math:`R` (``S x S``: off-diagonal entries :math:`\ge 0`, rows summing to
0, one closed communicating class) runs on the clock of a schedule. With
:math:`\beta(t) = -\alpha'_t/\alpha_t`, so that :math:`\int_s^t \beta = \log(\alpha_s/\alpha_t)`:

* rate matrix :math:`R(t) = \beta(t)\,R`;
* transition :math:`\bar Q(s, t) = \exp\big(\log\tfrac{\alpha_s}{\alpha_t}\, R\big)`, from the data
  :math:`\bar Q(t) = \exp(-\log\alpha_t\, R)`; where :math:`\alpha_t = 0` the clock has run
  forever and :math:`\bar Q = \mathbf 1 \pi^\top` with :math:`\pi` the stationary distribution
  (the prior); once :math:`\alpha_s = 0`, :math:`\bar Q(s, t) = I`;
* everything else is the generic dense computation of :class:`ddkit.Process` (posterior by
  Bayes' rule, discrete-time ELBO as a KL of posteriors), one matrix exponential per distinct
  time, and the continuous-time NELBO integrand of a CTMC (Campbell et al. 2022; denoising
  score entropy, Lou et al. 2024, with the ratios implied by the mean)

  .. math::  \sum_{y \ne x_t} R(t)_{y, x_t}\big(s_y - r_y\log s_y + r_y\log r_y - r_y\big),
             \quad s_y = \sum_{x_0}\mu(x_0)\frac{\bar Q(t)_{x_0 y}}{\bar Q(t)_{x_0 x_t}},\quad
             r_y = \frac{\bar Q(t)_{x_0 y}}{\bar Q(t)_{x_0 x_t}}.

With the ``uniform`` generator this is exactly the ``uniform`` process
(:math:`\exp(\sigma(J/V - I)) = e^{-\sigma} I + (1 - e^{-\sigma}) J/V`), with ``absorbing``
exactly the ``masked`` one. Built-in generators (``V`` clean tokens; ``m = V`` an extra
absorbing mask state where there is one):

=================  ==========================================================================
``uniform``        :math:`R = J/V - I` (D3PM uniform), :math:`\pi` uniform
``absorbing``      :math:`R_{i m} = 1`, :math:`R_{ii} = -1` for clean :math:`i`, mask row 0
                   (D3PM absorbing); :math:`\pi = e_m`
``gaussian``       :math:`R_{ij} = e^{-4 (i-j)^2 / ((V-1)^2 w)} / Z` for :math:`i \ne j`,
                   :math:`Z = \sum_{n=-(V-1)}^{V-1} e^{-4 n^2/((V-1)^2 w)}`: D3PM's discretized
                   Gaussian transition used as the jump distribution (``width`` :math:`w`);
                   symmetric, :math:`\pi` uniform; for ordinal data (pixels)
``banded``         :math:`R_{ij} = \frac{1}{2b}` for :math:`0 < |i - j| \le b` (``bandwidth``
                   :math:`b`; :math:`b = 1` is nearest-neighbour); symmetric, :math:`\pi` uniform
``mask_uniform``   mask plus uniform noise: :math:`R_{i m} = 1 - \rho`,
                   :math:`R_{ij} = \rho/V` for clean :math:`j \ne i`, mask row 0
                   (``uniform_fraction`` :math:`\rho`); :math:`\pi = e_m`
``custom``         ``rates``: a nested list of floats, ``S = V`` or ``V + 1``
=================  ==========================================================================

``rate_scale`` multiplies :math:`R` (a slowly mixing generator, e.g. ``banded`` on many
states, needs a large scale to approach :math:`\pi` before :math:`t = 1`). A user-supplied
``rates`` matrix is validated: square of size ``V`` or ``V + 1``, finite, off-diagonal
:math:`\ge 0`, rows summing to 0 (relative tolerance 1e-9), exactly one closed class (so the
prior is unique) and, with ``V + 1`` states, an absorbing extra state (zero row) — the clean
tokens are what the denoiser predicts. At most :data:`MAX_STATES` states (dense
:math:`O(S^3)` work per distinct time).

Capabilities: a generator whose clean tokens only jump to an absorbing extra state, at unit
rate, is masked diffusion (``"absorbing"``, ``mask_id = V``); the extra state of any other
generator is reported as ``absorbing_state`` but is not a mask (a clean token there may be
noise, so no carry-over).

Example (YAML: ``process: {name: matrix, generator: custom, rates: [[-1, 1], [1, -1]]}``)::

    >>> import torch, ddkit
    >>> p = ddkit.build("process", "matrix", vocab_size=2, generator="custom",
    ...                 rates=[[-1.0, 1.0], [1.0, -1.0]])
    >>> p.marginal_matrix(torch.tensor(1.0, dtype=torch.float64))
    tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]], dtype=torch.float64)
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import AfterValidator, Field, FiniteFloat, model_validator
from torch import Tensor

import ddkit
from ddkit.process import per_token, scaled_rates

_TINY = torch.finfo(torch.float64).tiny
#: largest state space of a ``matrix`` process (dense matrices, one exponential per time)
MAX_STATES = 1024
#: relative tolerance for the zero row sums of a user-supplied rate matrix
ROW_SUM_TOLERANCE = 1e-9

Generator = Literal["uniform", "absorbing", "gaussian", "banded", "mask_uniform", "custom"]
#: generator parameters and the generator each belongs to
_OPTIONS = {"width": "gaussian", "bandwidth": "banded", "uniform_fraction": "mask_uniform",
            "rates": "custom"}


# -- generators ----------------------------------------------------------------------------


def _with_diagonal(off: Tensor) -> Tensor:
    off = off.clone()
    off.fill_diagonal_(0.0)
    return off - torch.diag(off.sum(-1))


def uniform_generator(vocab_size: int) -> Tensor:
    r""":math:`J/V - I`."""
    V = vocab_size
    return torch.full((V, V), 1.0 / V, dtype=torch.float64) - torch.eye(V, dtype=torch.float64)


def absorbing_generator(vocab_size: int) -> Tensor:
    r"""Clean tokens jump to the mask ``V`` at rate 1; the mask row is 0."""
    off = torch.zeros(vocab_size + 1, vocab_size + 1, dtype=torch.float64)
    off[:vocab_size, vocab_size] = 1.0
    return _with_diagonal(off)


def gaussian_generator(vocab_size: int, width: float) -> Tensor:
    r""":math:`R_{ij} \propto e^{-4(i-j)^2/((V-1)^2 w)}` off the diagonal (D3PM's normalisation)."""
    V = vocab_size
    if V < 2:
        raise ValueError(f"the gaussian generator needs vocab_size >= 2, got {V}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    scale = 4.0 / ((V - 1) ** 2 * width)
    n = torch.arange(-(V - 1), V, dtype=torch.float64)
    normaliser = torch.exp(-scale * n**2).sum()
    i = torch.arange(V, dtype=torch.float64)
    return _with_diagonal(torch.exp(-scale * (i[:, None] - i[None, :]) ** 2) / normaliser)


def banded_generator(vocab_size: int, bandwidth: int) -> Tensor:
    r""":math:`R_{ij} = 1/(2b)` for :math:`0 < |i - j| \le b`."""
    if bandwidth < 1:
        raise ValueError(f"bandwidth must be >= 1, got {bandwidth}")
    i = torch.arange(vocab_size)
    distance = (i[:, None] - i[None, :]).abs()
    off = ((distance > 0) & (distance <= bandwidth)).to(torch.float64) / (2 * bandwidth)
    return _with_diagonal(off)


def mask_uniform_generator(vocab_size: int, uniform_fraction: float) -> Tensor:
    r"""Mask at rate :math:`1 - \rho`, a uniform clean token at rate :math:`\rho/V` each."""
    if not 0.0 <= uniform_fraction < 1.0:
        raise ValueError(f"uniform_fraction must be in [0, 1), got {uniform_fraction}")
    V = vocab_size
    off = torch.zeros(V + 1, V + 1, dtype=torch.float64)
    off[:V, :V] = uniform_fraction / V
    off[:V, V] = 1.0 - uniform_fraction
    return _with_diagonal(off)


def closed_classes(rates: Tensor) -> list[list[int]]:
    """The closed communicating classes of a generator (states from which the chain cannot
    leave), by transitive closure of the jump graph."""
    S = rates.shape[0]
    reach = ((rates > 0) | torch.eye(S, dtype=torch.bool)).to(torch.float64)
    for _ in range(max(1, math.ceil(math.log2(max(S, 2))))):
        reach = ((reach @ reach) > 0).to(torch.float64)
    reach = reach.bool()
    closed = [i for i in range(S) if bool((reach[:, i] | ~reach[i]).all())]  # j reachable => i reachable from j
    classes: list[list[int]] = []
    for i in closed:
        if not any(i in c for c in classes):
            classes.append([j for j in closed if bool(reach[i, j])])
    return classes


def validate_rates(rates, vocab_size: int) -> Tensor:
    """Check a user-supplied generator (see the module docstring); returns it as float64."""
    try:
        R = torch.as_tensor(rates, dtype=torch.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"rates must be a square nested list of numbers: {error}") from error
    if R.dim() != 2 or R.shape[0] != R.shape[1]:
        raise ValueError(f"rates must be a square matrix, got shape {tuple(R.shape)}")
    S = R.shape[0]
    if S not in (vocab_size, vocab_size + 1):
        raise ValueError(f"rates must be {vocab_size} x {vocab_size} (one state per token) or "
                         f"{vocab_size + 1} x {vocab_size + 1} (with an absorbing extra state), "
                         f"got {S} x {S}")
    if S > MAX_STATES:
        raise ValueError(f"at most {MAX_STATES} states, got {S}")
    if not bool(torch.isfinite(R).all()):
        raise ValueError("rates must be finite")
    off = R - torch.diag(torch.diagonal(R))
    if bool((off < 0).any()):
        i, j = (int(v) for v in (off < 0).nonzero()[0])
        raise ValueError(f"off-diagonal rates must be >= 0, got rates[{i}][{j}] = {float(R[i, j])}")
    scale = float(R.abs().max())
    if scale == 0:
        raise ValueError("rates must not be all zero")
    row_sums = R.sum(-1)
    if bool((row_sums.abs() > ROW_SUM_TOLERANCE * scale).any()):
        i = int(row_sums.abs().argmax())
        raise ValueError(f"every row of rates must sum to 0 (the diagonal is minus the row's "
                         f"off-diagonal sum); row {i} sums to {float(row_sums[i])}")
    if S == vocab_size + 1 and bool((R[vocab_size] != 0).any()):
        raise ValueError(f"the extra state {vocab_size} must be absorbing: its row of rates must be 0")
    classes = closed_classes(R)
    if len(classes) != 1:
        raise ValueError(f"rates must have exactly one closed class (a unique stationary "
                         f"distribution, the prior); found {len(classes)}: {classes}")
    return _with_diagonal(R)


#: Taylor degree of :func:`generator_exponential` (remainder below 0.5^19/19! ~ 2e-23)
TAYLOR_DEGREE = 18


def generator_exponential(rates: Tensor, clocks: Tensor) -> Tensor:
    r""":math:`\exp(c R)` for each clock ``c`` (``[U]``, finite, :math:`\ge 0`), ``[U, S, S]``.

    Uniformization with scaling and squaring: with :math:`q = \max_i (-R_{ii})` and
    :math:`A = R + qI \ge 0` entrywise, :math:`\exp(hR) = e^{-hq}\sum_k (hA)^k/k!` for
    :math:`h = c/2^j`, :math:`hq \le 1/2`, then squared :math:`j` times. Every term and every
    product is non-negative, so even tiny transition probabilities (many jumps away) keep
    their relative accuracy, which a general-purpose ``matrix_exp`` (absolute error ~1e-11
    here) does not give; posteriors divide by such entries."""
    S = rates.shape[0]
    q = float((-torch.diagonal(rates)).max())
    clocks = clocks.to(torch.float64)
    if q == 0 or len(clocks) == 0:
        return torch.eye(S, dtype=torch.float64).expand(len(clocks), S, S).clone()
    largest = float(clocks.max()) if len(clocks) else 0.0
    squarings = max(0, math.ceil(math.log2(max(largest * q / 0.5, 1.0))))
    h = clocks / 2**squarings  # [U]
    A = rates + q * torch.eye(S, dtype=torch.float64)
    term = torch.eye(S, dtype=torch.float64).expand(len(clocks), S, S).clone()
    total = term.clone()
    for k in range(1, TAYLOR_DEGREE + 1):
        term = (term @ A) * (h / k)[:, None, None]
        total = total + term
    result = total * torch.exp(-h * q)[:, None, None]
    for _ in range(squarings):
        result = result @ result
    return result


def stationary_distribution(rates: Tensor) -> Tensor:
    r""":math:`\pi` with :math:`\pi^\top R = 0`, :math:`\sum \pi = 1` (unique: one closed class),
    exactly 0 on the transient states (solved on the closed class only)."""
    (closed,) = closed_classes(rates)
    C = torch.tensor(closed)
    block = rates[C][:, C]
    system = torch.cat([block.T, torch.ones(1, len(C), dtype=torch.float64)])
    rhs = torch.zeros(len(C) + 1, 1, dtype=torch.float64)
    rhs[-1] = 1.0
    pi = torch.zeros(rates.shape[0], dtype=torch.float64)
    pi[C] = torch.linalg.lstsq(system, rhs).solution[:, 0].clamp_min(0.0)
    return pi / pi.sum()


def check_square(rates: list[list[float]] | None) -> list[list[float]] | None:
    """A custom ``rates`` nested list must be square."""
    if rates is not None and any(len(row) != len(rates) for row in rates):
        raise ValueError(f"rates must be square: {len(rates)} rows of lengths "
                         f"{sorted({len(row) for row in rates})}")
    return rates


def build_generator(vocab_size: int, generator: Generator, *, width: float | None = None,
                    bandwidth: int | None = None, uniform_fraction: float | None = None,
                    rates=None) -> Tensor:
    """The generator matrix for a built-in name (or a validated custom ``rates``)."""
    given = {"width": width, "bandwidth": bandwidth, "uniform_fraction": uniform_fraction, "rates": rates}
    for option, value in given.items():
        if value is not None and _OPTIONS[option] != generator:
            raise ValueError(f"{option} applies only to generator {_OPTIONS[option]!r}, not {generator!r}")
    if generator == "uniform":
        return uniform_generator(vocab_size)
    if generator == "absorbing":
        return absorbing_generator(vocab_size)
    if generator == "gaussian":
        return gaussian_generator(vocab_size, 0.1 if width is None else width)
    if generator == "banded":
        return banded_generator(vocab_size, 1 if bandwidth is None else bandwidth)
    if generator == "mask_uniform":
        return mask_uniform_generator(vocab_size, 0.5 if uniform_fraction is None else uniform_fraction)
    if generator == "custom":
        if rates is None:
            raise ValueError("generator 'custom' needs rates (a nested list of floats)")
        return validate_rates(rates, vocab_size)
    raise ValueError(f"unknown generator {generator!r}; use one of {list(Generator.__args__)}")


# -- the process ---------------------------------------------------------------------------


class MatrixProcess(ddkit.Process):
    """A CTMC with generator ``rate_scale * R`` on the clock :math:`-\\log \\alpha_t`."""

    def __init__(self, vocab_size: Annotated[int, Field(ge=1, le=MAX_STATES)], generator: Generator = "uniform",
                 schedule: ddkit.Component("schedule") = "linear", *,
                 rate_scale: Annotated[FiniteFloat, Field(gt=0.0)] = 1.0,
                 width: Annotated[FiniteFloat | None, Field(
                     gt=0.0, description="gaussian: w in exp(-4 (i-j)^2 / ((V-1)^2 w))")] = None,
                 bandwidth: Annotated[int | None, Field(
                     ge=1, description="banded: jumps of at most this many steps")] = None,
                 uniform_fraction: Annotated[float | None, Field(
                     ge=0.0, lt=1.0, description="mask_uniform: share of the uniform-noise rate")] = None,
                 rates: Annotated[list[list[FiniteFloat]] | None, Field(
                     max_length=MAX_STATES + 1,
                     description="custom: the generator as a nested list, S = V or V + 1, rows summing to 0"),
                     AfterValidator(check_square)] = None):
        super().__init__(vocab_size, ddkit.build("schedule", schedule))
        if not (math.isfinite(rate_scale) and rate_scale > 0):
            raise ValueError(f"rate_scale must be finite and > 0, got {rate_scale}")
        self.generator = generator
        self.rate_scale = float(rate_scale)
        R = build_generator(self.vocab_size, generator, width=width, bandwidth=bandwidth,
                            uniform_fraction=uniform_fraction, rates=rates)
        self.rates = rate_scale * R
        self.stationary = stationary_distribution(self.rates)
        V, S = self.vocab_size, self.rates.shape[0]
        self.absorbing_state = V if S == V + 1 else None
        if self._is_masked_diffusion():
            self.mask_id = V
            self.capabilities = frozenset({"absorbing"})
        else:
            self.capabilities = frozenset()

    def _is_masked_diffusion(self) -> bool:
        V = self.vocab_size
        if self.absorbing_state is None:
            return False
        expected = absorbing_generator(V)
        return bool(torch.allclose(self.rates, expected, rtol=0, atol=1e-12))

    @property
    def num_states(self) -> int:
        return self.rates.shape[0]

    def __repr__(self) -> str:
        return (f"MatrixProcess(vocab_size={self.vocab_size}, generator={self.generator!r}, "
                f"schedule={self.schedule!r}, rate_scale={self.rate_scale})")

    def _alpha(self, t: Tensor) -> Tensor:
        return self.schedule.alpha(torch.as_tensor(t, dtype=torch.float64))

    # -- dense ---------------------------------------------------------------------------

    def _exponentials(self, clock: Tensor) -> Tensor:
        r""":math:`\exp(c R)` for a clock ``c`` of any shape (``inf``: :math:`\mathbf 1\pi^\top`),
        one exponential per distinct value."""
        S = self.num_states
        values, inverse = torch.unique(clock.reshape(-1), return_inverse=True)
        finite = torch.isfinite(values)
        mats = torch.empty(len(values), S, S, dtype=torch.float64)
        mats[finite] = generator_exponential(self.rates, values[finite])
        mats[~finite] = self.stationary.expand(S, S)
        return mats[inverse].reshape(*clock.shape, S, S).clamp_min(0.0)

    def transition_matrix(self, s: Tensor, t: Tensor) -> Tensor:
        a_s, a_t = self._alpha(s), self._alpha(t)
        a_s, a_t = torch.broadcast_tensors(a_s, a_t)
        # log(alpha_s / alpha_t), +inf once alpha_t = 0, 0 once alpha_s = 0 (already at the prior)
        clock = torch.where(a_s > 0, torch.log(a_s) - torch.log(a_t), torch.zeros_like(a_s))
        return self._exponentials(clock.clamp_min(0.0))

    def marginal_matrix(self, t: Tensor) -> Tensor:
        return self._exponentials((-torch.log(self._alpha(t))).clamp_min(0.0))

    def rate_matrix(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        beta = -self.schedule.alpha_prime(t) / self._alpha(t).clamp_min(_TINY)
        return scaled_rates(beta, self.rates)

    def prior_probs(self) -> Tensor:
        return self.stationary.clone()

    # -- per token, one matrix per distinct time --------------------------------------------

    def marginal_probs(self, x0: Tensor, t: Tensor) -> Tensor:
        t_ = per_token(t, x0)
        values, inverse = torch.unique(t_.reshape(-1), return_inverse=True)
        rows = self.marginal_matrix(values).to(x0.device)  # [U, S, S]
        return rows[inverse.reshape(x0.shape), x0]

    def posterior_probs(self, x_t: Tensor, mean: Tensor, s: Tensor, t: Tensor) -> Tensor:
        r""":math:`\bar Q(s,t)_{y, x_t} \sum_{x_0} \frac{\mu(x_0)}{\bar Q(t)_{x_0 x_t}} \bar Q(s)_{x_0 y}`,
        computed per distinct :math:`(s, t)` (memory :math:`O(S^2)` per pair, not per token)."""
        V, S = self.vocab_size, self.num_states
        s_, t_ = per_token(s, x_t), per_token(t, x_t)
        pairs, inverse = torch.unique(torch.stack([s_.reshape(-1), t_.reshape(-1)], -1), dim=0,
                                      return_inverse=True)
        inverse = inverse.reshape(x_t.shape)
        q_st = self.transition_matrix(pairs[:, 0], pairs[:, 1]).to(x_t.device)  # [U, S, S]
        q_s = self.marginal_matrix(pairs[:, 0])[:, :V].to(x_t.device)  # [U, V, S]
        q_t = self.marginal_matrix(pairs[:, 1])[:, :V].to(x_t.device)
        mean = mean.to(torch.float64)
        out = torch.empty(*x_t.shape, S, dtype=torch.float64, device=x_t.device)
        for u in range(len(pairs)):
            where = ... if len(pairs) == 1 else inverse == u  # one time for all: no mask indexing
            x = x_t[where]
            likelihood = q_t[u][:, x].movedim(0, -1)  # [..., V]: q(x_t | x0)
            weights = torch.where(mean[where] > 0, mean[where] / likelihood.clamp_min(_TINY), 0.0)
            out[where] = q_st[u][:, x].movedim(0, -1) * (weights @ q_s[u])
        # where x_t cannot occur at t (e.g. a clean token once everything is masked) the
        # posterior is undefined; a token that cannot have arisen stays as it is
        impossible = out.sum(-1, keepdim=True) <= 0
        return torch.where(impossible, torch.nn.functional.one_hot(x_t, S).to(out), out)


class MatrixParams(ddkit.params_model(MatrixProcess)):
    # the signature's parameters; the generator they describe is checked before the process is
    # built, so that a config reports it at load time

    @model_validator(mode="after")
    def _generator(self):
        build_generator(self.vocab_size, self.generator, width=self.width, bandwidth=self.bandwidth,
                        uniform_fraction=self.uniform_fraction, rates=self.rates)
        return self


@ddkit.hookimpl
def register_processes(register):
    register("matrix", MatrixProcess, params=MatrixParams,
             summary="CTMC with a rate matrix R on the clock -log alpha_t: D3PM uniform, absorbing, "
                     "gaussian, banded, mask+uniform or custom R")
