r"""Known sequence distributions and their exact optimal denoisers.

Data drawn from a known distribution has an exactly computable optimal denoiser; with it a
loss or a sampler can be checked against exact answers, separating the framework's math from
model quality.

Distributions (all in nats):

* :class:`MarkovChain` — :math:`p(x_{1:N}) = \pi(x_1)\prod_{n>1} A(x_{n-1}, x_n)`;
  exact log-probability, sampling, entropy of length-``N`` sequences
  :math:`H(X_{1:N}) = H(\pi) + \sum_{n=1}^{N-1} \sum_i P(X_n = i)\, H(A_{i,:})` and entropy
  rate :math:`\sum_i \pi^\star_i H(A_{i,:})` with the stationary :math:`\pi^\star`.
* :class:`HiddenMarkovModel` — hidden chain :math:`z` with :math:`(\pi, A)`, emissions
  :math:`B(z, x)`; log-probability by the forward algorithm; entropy of length-``N``
  sequences by enumeration (an HMM's entropy has no closed form).

Both are hidden Markov models (a Markov chain is one with :math:`B = I`), so one
forward-backward pass serves both. For any process whose forward noise is a per-token channel
:math:`C_n(v) = q(x_t^n \mid x_0^n = v) = \bar Q(t)_{v, x_t^n}` (masked, uniform, any
transition matrix), the posterior marginals are

.. math::  p(x_0^n = v \mid x_t) \propto C_n(v) \sum_h
           \underbrace{p(z_n = h \mid x_t^{<n})}_{\text{forward}}\, B(h, v)\,
           \underbrace{p(x_t^{>n} \mid z_n = h)}_{\text{backward}}

with the effective emissions :math:`e_n(h) = \sum_v B(h, v)\, C_n(v)` in both recursions.
:class:`OracleDenoiser` returns their logarithms: it is a denoiser in the standard contract.

Example::

    >>> import torch, ddkit
    >>> from ddkit.testing.oracles import MarkovChain, OracleDenoiser
    >>> chain = MarkovChain(4, seed=0)
    >>> x0 = chain.sample(2, 6, generator=torch.Generator().manual_seed(0))
    >>> process = ddkit.build("process", "masked", vocab_size=4)
    >>> oracle = OracleDenoiser(chain, process)
    >>> oracle(torch.full((2, 6), 4), torch.full((2,), 0.5)).shape
    torch.Size([2, 6, 4])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..categorical import sample_categorical
from ..process import Process, per_token

#: largest number of sequences :meth:`SequenceDistribution.enumerate` agrees to list
MAX_ENUMERATION = 1 << 22


def sequence_ids(x: Tensor, vocab_size: int) -> Tensor:
    r"""Index of each sequence in the lexicographic enumeration of :math:`V^N` (first
    position most significant): :math:`\sum_n x_n V^{N-1-n}`. ``x`` has shape ``[B, N]``."""
    n = x.shape[-1]
    if vocab_size**n > 2**62:
        raise ValueError(f"{vocab_size}^{n} sequences do not fit an int64 index")
    weights = vocab_size ** torch.arange(n - 1, -1, -1, device=x.device, dtype=torch.long)
    return (x.long() * weights).sum(-1)


def all_sequences(vocab_size: int, length: int) -> Tensor:
    """Every sequence of ``length`` tokens in ``0..V-1``, ``[V^N, N]``, in the order of
    :func:`sequence_ids`."""
    count = vocab_size**length
    if count > MAX_ENUMERATION:
        raise ValueError(f"{vocab_size}^{length} = {count} sequences is too many to enumerate "
                         f"(limit {MAX_ENUMERATION})")
    ids = torch.arange(count, dtype=torch.long)
    powers = vocab_size ** torch.arange(length - 1, -1, -1, dtype=torch.long)
    return (ids[:, None] // powers) % vocab_size


def _random_stochastic(rng: np.random.Generator, rows: int, cols: int, concentration: float) -> Tensor:
    return torch.from_numpy(rng.dirichlet(np.full(cols, concentration), size=rows)).to(torch.float64)


def _check_distribution(name: str, p: Tensor, shape: tuple[int, ...]) -> Tensor:
    p = torch.as_tensor(p, dtype=torch.float64)
    if tuple(p.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(p.shape)}")
    if bool((p < 0).any()) or not bool(torch.isfinite(p).all()):
        raise ValueError(f"{name} must be finite and non-negative")
    if not torch.allclose(p.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-9):
        raise ValueError(f"the rows of {name} must sum to 1, got sums {p.sum(-1).tolist()}")
    return p / p.sum(-1, keepdim=True)


def _entropy(p: Tensor) -> Tensor:
    return -torch.xlogy(p, p).sum(-1)


class SequenceDistribution:
    r"""A distribution over token sequences that is a hidden Markov model: initial
    distribution ``initial`` (``[H]``), hidden transitions ``transition`` (``[H, H]``,
    :math:`A_{gh} = p(z_{n+1} = h \mid z_n = g)`) and emissions ``emission`` (``[H, V]``).
    Subclasses add closed forms."""

    initial: Tensor
    transition: Tensor
    emission: Tensor

    @property
    def vocab_size(self) -> int:
        return self.emission.shape[1]

    @property
    def num_hidden(self) -> int:
        return self.emission.shape[0]

    # -- sampling ------------------------------------------------------------------------

    def sample(self, num: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` exact samples of ``length`` tokens, ``LongTensor[num, length]``, drawn in
        float64 by inverse CDF (:func:`ddkit.categorical.sample_categorical`)."""
        if num < 1 or length < 1:
            raise ValueError(f"num and length must be >= 1, got {num}, {length}")
        z = sample_categorical(self.initial.expand(num, -1), generator=generator)
        hidden = [z]
        for _ in range(length - 1):
            z = sample_categorical(self.transition[z], generator=generator)
            hidden.append(z)
        z = torch.stack(hidden, -1)
        return sample_categorical(self.emission[z], generator=generator)

    # -- exact probabilities -------------------------------------------------------------

    def log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log p(x)` of each row of ``x`` (``[B, N]``), float64, by the forward
        algorithm with the identity channel."""
        x = self._check_tokens(x)
        channel = torch.nn.functional.one_hot(x, self.vocab_size).to(torch.float64)
        return forward_backward(self.initial, self.transition, self.emission, channel,
                                posterior=False).log_likelihood

    def enumerate(self, length: int) -> tuple[Tensor, Tensor]:
        """``(sequences [V^N, N], log_probs [V^N])`` in the order of :func:`sequence_ids`."""
        sequences = all_sequences(self.vocab_size, length)
        log_probs = torch.cat([self.log_prob(chunk) for chunk in sequences.split(1 << 16)])
        return sequences, log_probs

    def probabilities(self, length: int) -> Tensor:
        """The probability of every sequence, ``[V^N]``, in the order of :func:`sequence_ids`."""
        return self.enumerate(length)[1].exp()

    def entropy(self, length: int) -> float:
        r""":math:`H(X_{1:N})` in nats, by enumeration (subclasses have closed forms)."""
        log_probs = self.enumerate(length)[1]
        return float(-(log_probs.exp() * log_probs).nan_to_num(0.0).sum())

    def token_marginals(self, length: int) -> Tensor:
        r""":math:`P(X_n = v)`, ``[N, V]``."""
        p, rows = self.initial, []
        for _ in range(length):
            rows.append(p @ self.emission)
            p = p @ self.transition
        return torch.stack(rows)

    # -- helpers -------------------------------------------------------------------------

    def _check_tokens(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"sequences must be an integer tensor [B, N], got {x.dtype} {tuple(x.shape)}")
        if bool(((x < 0) | (x >= self.vocab_size)).any()):
            raise ValueError(f"tokens must be in 0..{self.vocab_size - 1}")
        return x.long().cpu()


class MarkovChain(SequenceDistribution):
    r"""A first-order Markov chain over ``vocab_size`` tokens with a random, seeded initial
    distribution and transition matrix (rows drawn from a symmetric Dirichlet with
    ``concentration``: small values give peaked, strongly dependent chains).

    .. math::  p(x_{1:N}) = \pi(x_1) \prod_{n=2}^{N} A(x_{n-1}, x_n)

    Example::

        >>> chain = MarkovChain(3, seed=1)
        >>> x = chain.sample(4, 5, torch.Generator().manual_seed(0))
        >>> chain.log_prob(x).shape, round(chain.entropy(5), 3) > 0
        (torch.Size([4]), True)
    """

    def __init__(self, vocab_size: int, seed: int = 0, *, concentration: float = 1.0):
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if concentration <= 0:
            raise ValueError(f"concentration must be > 0, got {concentration}")
        rng = np.random.default_rng(seed)
        self._set(_random_stochastic(rng, 1, vocab_size, concentration)[0],
                  _random_stochastic(rng, vocab_size, vocab_size, concentration))
        self.seed = seed

    @classmethod
    def from_matrices(cls, initial: Tensor, transition: Tensor) -> MarkovChain:
        """A chain with the given initial distribution ``[V]`` and transition matrix ``[V, V]``."""
        chain = cls.__new__(cls)
        V = torch.as_tensor(initial).shape[0]
        chain._set(_check_distribution("initial", initial, (V,)),
                   _check_distribution("transition", transition, (V, V)))
        chain.seed = None
        return chain

    def _set(self, initial: Tensor, transition: Tensor) -> None:
        self.initial, self.transition = initial, transition
        self.emission = torch.eye(initial.shape[0], dtype=torch.float64)

    def __repr__(self) -> str:
        return f"MarkovChain(vocab_size={self.vocab_size}, seed={self.seed})"

    def sample(self, num: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        if num < 1 or length < 1:
            raise ValueError(f"num and length must be >= 1, got {num}, {length}")
        x = [sample_categorical(self.initial.expand(num, -1), generator=generator)]
        for _ in range(length - 1):
            x.append(sample_categorical(self.transition[x[-1]], generator=generator))
        return torch.stack(x, -1)

    def log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log\pi(x_1) + \sum_n \log A(x_{n-1}, x_n)` (direct, no forward pass)."""
        x = self._check_tokens(x)
        out = torch.log(self.initial[x[:, 0]])
        if x.shape[1] > 1:
            out = out + torch.log(self.transition[x[:, :-1], x[:, 1:]]).sum(-1)
        return out

    def entropy(self, length: int) -> float:
        r""":math:`H(\pi) + \sum_{n=1}^{N-1} \sum_i P(X_n = i) H(A_{i,:})`, in nats."""
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        row_entropy = _entropy(self.transition)
        total, p = _entropy(self.initial), self.initial
        for _ in range(length - 1):
            total = total + p @ row_entropy
            p = p @ self.transition
        return float(total)

    def stationary_distribution(self) -> Tensor:
        r""":math:`\pi^\star` with :math:`\pi^\star A = \pi^\star`, :math:`\sum_i \pi^\star_i = 1`
        (unique for an irreducible chain, e.g. one with positive transitions)."""
        V = self.vocab_size
        system = torch.cat([self.transition.T - torch.eye(V, dtype=torch.float64),
                            torch.ones(1, V, dtype=torch.float64)])
        rhs = torch.zeros(V + 1, 1, dtype=torch.float64)
        rhs[-1] = 1.0
        pi = torch.linalg.lstsq(system, rhs).solution[:, 0]
        if float((system @ pi[:, None] - rhs).abs().max()) > 1e-8:
            raise ValueError("the chain has no unique stationary distribution")
        return pi.clamp_min(0.0) / pi.clamp_min(0.0).sum()

    def entropy_rate(self) -> float:
        r""":math:`\lim_N H(X_{1:N})/N = \sum_i \pi^\star_i H(A_{i,:})`, nats per token."""
        return float(self.stationary_distribution() @ _entropy(self.transition))


class HiddenMarkovModel(SequenceDistribution):
    r"""A hidden Markov model with ``num_hidden`` hidden states and ``vocab_size`` tokens,
    random and seeded (Dirichlet rows with ``concentration``).

    .. math::  p(x_{1:N}) = \sum_{z_{1:N}} \pi(z_1) B(z_1, x_1)
               \prod_{n=2}^{N} A(z_{n-1}, z_n) B(z_n, x_n)

    :meth:`entropy` enumerates all :math:`V^N` sequences: the entropy of an HMM has no
    closed form (and its entropy rate none either, so no ``entropy_rate`` is offered).
    """

    def __init__(self, num_hidden: int, vocab_size: int, seed: int = 0, *,
                 concentration: float = 1.0):
        if num_hidden < 1 or vocab_size < 1:
            raise ValueError(f"num_hidden and vocab_size must be >= 1, got {num_hidden}, {vocab_size}")
        if concentration <= 0:
            raise ValueError(f"concentration must be > 0, got {concentration}")
        rng = np.random.default_rng(seed)
        self.initial = _random_stochastic(rng, 1, num_hidden, concentration)[0]
        self.transition = _random_stochastic(rng, num_hidden, num_hidden, concentration)
        self.emission = _random_stochastic(rng, num_hidden, vocab_size, concentration)
        self.seed = seed

    @classmethod
    def from_matrices(cls, initial: Tensor, transition: Tensor, emission: Tensor) -> HiddenMarkovModel:
        model = cls.__new__(cls)
        H = torch.as_tensor(initial).shape[0]
        V = torch.as_tensor(emission).shape[-1]
        model.initial = _check_distribution("initial", initial, (H,))
        model.transition = _check_distribution("transition", transition, (H, H))
        model.emission = _check_distribution("emission", emission, (H, V))
        model.seed = None
        return model

    def __repr__(self) -> str:
        return (f"HiddenMarkovModel(num_hidden={self.num_hidden}, vocab_size={self.vocab_size}, "
                f"seed={self.seed})")


@dataclass
class ForwardBackward:
    r"""Result of :func:`forward_backward`: ``posterior`` ``[B, N, V]`` (``None`` when not
    asked for) and ``log_likelihood`` ``[B]`` = :math:`\log p(\text{obs})` under the channel."""

    posterior: Tensor | None
    log_likelihood: Tensor


def forward_backward(initial: Tensor, transition: Tensor, emission: Tensor, channel: Tensor,
                     *, posterior: bool = True) -> ForwardBackward:
    r"""Scaled forward-backward of a hidden Markov model observed through a per-token channel.

    ``channel[b, n, v]`` :math:`= C_n(v)`, the likelihood of the observation at position
    ``n`` given the clean token ``v``. Returns the posterior marginals
    :math:`p(x^n = v \mid \text{obs})` (rows sum to 1; a row whose observation has
    probability zero under the model is set to the channel normalised over ``v``) and
    :math:`\log p(\text{obs}) = \sum_n \log c_n` from the forward normalisers :math:`c_n`.
    """
    channel = channel.to(torch.float64)
    effective = channel @ emission.T  # e_n(h) = sum_v B(h, v) C_n(v), [B, N, H]
    batch, length, hidden = effective.shape
    predicted = torch.empty_like(effective)  # p(z_n | obs_<n)
    p = initial.expand(batch, hidden)
    log_likelihood = torch.zeros(batch, dtype=torch.float64)
    for n in range(length):
        predicted[:, n] = p
        joint = p * effective[:, n]
        norm = joint.sum(-1, keepdim=True)
        log_likelihood = log_likelihood + torch.log(norm[:, 0])
        p = (joint / norm.clamp_min(torch.finfo(torch.float64).tiny)) @ transition
    if not posterior:
        return ForwardBackward(None, log_likelihood)
    backward = torch.empty_like(effective)  # proportional to p(obs_>n | z_n)
    g = torch.ones(batch, hidden, dtype=torch.float64)
    for n in range(length - 1, -1, -1):
        backward[:, n] = g
        g = (effective[:, n] * g) @ transition.T
        g = g / g.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    post = ((predicted * backward) @ emission) * channel
    total = post.sum(-1, keepdim=True)
    impossible = total <= 0
    fallback = channel / channel.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    post = torch.where(impossible, fallback, post / total.clamp_min(torch.finfo(torch.float64).tiny))
    return ForwardBackward(post, log_likelihood)


def channel_likelihood(process: Process, x_t: Tensor, t: Tensor) -> Tensor:
    r""":math:`C[b, n, v] = q(x_t^{b,n} \mid x_0 = v) = \bar Q(t_{b,n})_{v, x_t^{b,n}}` from
    the process's dense :meth:`~ddkit.Process.marginal_matrix` (one matrix per distinct
    time), ``[B, N, V]`` float64 on the CPU; ``t`` has shape ``[]``, ``[B]`` or ``[B, N]``."""
    V = process.vocab_size
    t = torch.as_tensor(t, dtype=torch.float64).cpu()
    if t.dim() == 0:  # one matrix for every token
        clean_rows = process.marginal_matrix(t).to(torch.float64).cpu()[:V, :]  # [V, S]
        return clean_rows[:, x_t.cpu()].permute(1, 2, 0)
    times = per_token(t, x_t.cpu())
    unique, inverse = torch.unique(times, return_inverse=True)
    clean_rows = process.marginal_matrix(unique).to(torch.float64).cpu()[:, :V, :]  # [U, V, S]
    return clean_rows[inverse, :, x_t.cpu()]


class OracleDenoiser:
    r"""The exact optimal denoiser for data from ``model`` noised by ``process``:
    ``oracle(x_t, t)`` returns :math:`\log p(x_0^n = v \mid x_t)` (float64 logits
    ``[B, N, V]``, ``-inf`` where impossible) for ``x_t`` ``[B, N]`` and ``t`` ``[B]`` or
    ``[B, N]``.

    ``time_independent``: whether :math:`p(x_0 \mid x_t)` is the same at every
    :math:`t \in (0, 1)`. That holds exactly when, for every state ``k``, the channel column
    :math:`\bar Q(t)_{:, k}` keeps its direction as ``t`` changes (the masked process: a
    clean token is certain, a mask says nothing). ``None`` (default) decides by comparing the
    normalised columns at ``t`` = 0.25, 0.5 and 0.75. A time-independent oracle ignores the
    ``t`` it is given (so it works behind a parameterization without time conditioning,
    which passes ``t = 0``) and evaluates the channel at ``reference_time``; a
    time-dependent one needs the true ``t`` and raises if ``x_t`` is impossible at it.
    """

    def __init__(self, model: SequenceDistribution, process: Process, *,
                 time_independent: bool | None = None, reference_time: float = 0.5):
        if model.vocab_size != process.vocab_size:
            raise ValueError(f"the data has {model.vocab_size} tokens but the process "
                             f"{process.vocab_size}")
        if not 0.0 < reference_time < 1.0:
            raise ValueError(f"reference_time must be in (0, 1), got {reference_time}")
        self.model, self.process = model, process
        self.reference_time = float(reference_time)
        self.time_independent = (_channel_is_time_independent(process)
                                 if time_independent is None else bool(time_independent))

    def __repr__(self) -> str:
        return f"OracleDenoiser({self.model!r}, time_independent={self.time_independent})"

    def posterior(self, x_t: Tensor, t: Tensor) -> ForwardBackward:
        """Posterior marginals ``[B, N, V]`` and :math:`\\log p(x_t)` ``[B]``."""
        if x_t.dim() != 2:
            raise ValueError(f"x_t must be [B, N], got shape {tuple(x_t.shape)}")
        S = self.process.num_states
        if bool(((x_t < 0) | (x_t >= S)).any()):
            raise ValueError(f"x_t entries must be states in 0..{S - 1}")
        t = torch.as_tensor(t)
        if self.time_independent:
            t = torch.tensor(self.reference_time, dtype=torch.float64)
        channel = channel_likelihood(self.process, x_t, t)
        dead = channel.sum(-1) <= 0
        if bool(dead.any()):
            b, n = (int(i) for i in dead.nonzero()[0])
            when = per_token(t, x_t.cpu())[b, n]
            raise ValueError(
                f"x_t[{b}, {n}] = {int(x_t[b, n])} is impossible under the process at "
                f"t = {float(when)}; a time-dependent oracle needs the true t (use a "
                f"parameterization with time_conditioning=True)")
        return forward_backward(self.model.initial, self.model.transition, self.model.emission,
                                channel)

    @torch.no_grad()
    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        return torch.log(self.posterior(x_t, t).posterior).to(x_t.device)


def _channel_is_time_independent(process: Process) -> bool:
    V = process.vocab_size
    times = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    columns = process.marginal_matrix(times).to(torch.float64)[:, :V, :]  # [3, V, S]
    totals = columns.sum(1, keepdim=True)
    directions = torch.where(totals > 0, columns / totals.clamp_min(1e-300), torch.zeros_like(columns))
    return bool(torch.allclose(directions[0], directions[1], atol=1e-9)
                and torch.allclose(directions[0], directions[2], atol=1e-9))


__all__ = [
    "ForwardBackward",
    "HiddenMarkovModel",
    "MarkovChain",
    "OracleDenoiser",
    "SequenceDistribution",
    "all_sequences",
    "channel_likelihood",
    "forward_backward",
    "sequence_ids",
]
