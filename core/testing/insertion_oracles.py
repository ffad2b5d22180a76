r"""Variable-length data with a known law, and the exact denoiser of the insertion process.

* :class:`EndMarkovChain` — a Markov chain over ``V`` tokens with an END state, cut at
  ``max_length`` tokens. A sequence is :math:`x_1 \dots x_L` with

  .. math::  p(x_{1:L}) = \pi(x_1) \prod_{n=2}^{L} A(x_{n-1}, x_n)\;
             \begin{cases} e(x_L) & L < N \\ 1 & L = N \end{cases}

  (:math:`A` the token part of the transition matrix, :math:`e` the END column; a chain
  still running after ``N`` tokens is cut there). Padded with END (id ``V``) to ``N``
  positions this is exactly a :class:`~ddkit.testing.oracles.MarkovChain` on ``V + 1``
  states in which END is absorbing (:meth:`EndMarkovChain.padded_chain`), so the law of every
  padded sequence, the length law and the optimal denoisers of fixed-length processes
  (masked diffusion with padding, block diffusion stopping at END) are exact.
* :class:`InsertionOracle` — the exact optimal two-headed denoiser of the ``insertion``
  process for such data: at every mask the posterior of its clean token and at every slot
  the posterior mean of the gap count, by dynamic programming over the alignments of
  :math:`x_t` into :math:`x_0` (below).

**The dynamic programme.** A token of :math:`x_0` is absent from :math:`x_t` with probability
:math:`\rho = 1 - \alpha^{ins}_t`; the probabilities of being masked or clean are the same for
every token, so they cancel from the posterior of :math:`(x_0, \text{alignment})` given
:math:`x_t`, which is :math:`\propto p(x_0)\,\rho^{|x_0| - |x_t|}` over the alignments
consistent with :math:`x_t` (present tokens in order, clean ones equal). Walking over the
tokens of :math:`x_0` with the state (tokens of :math:`x_t` consumed :math:`j`, last token
:math:`v`), each token is either absent (weight :math:`\rho`, :math:`j` kept) or the next
token of :math:`x_t` (:math:`j \to j + 1`); forward and backward sums over this lattice
(:math:`O(N^2 V^2)` per sequence) give the posterior that token :math:`n` of :math:`x_0` is
absent in slot :math:`j` — summed over :math:`n`, :math:`E[g_j \mid x_t]` — and the
posterior of the token consumed as :math:`j`. The predictions depend on :math:`t` only
through :math:`\alpha^{ins}_t`.

Example::

    >>> import torch, ddkit
    >>> chain = EndMarkovChain(2, max_length=4, seed=0)
    >>> oracle = InsertionOracle(chain, ddkit.build("schedule", "linear"))
    >>> x_t = torch.tensor([[3, 2, 2, 2]])          # one mask (id V + 1 = 3), then padding (2)
    >>> logits, gaps = oracle.insertion_outputs(x_t, torch.tensor([1]), torch.tensor([0.5]))
    >>> bool(torch.isclose(gaps[0].sum() + 1, oracle.expected_length(x_t, torch.tensor([1]), torch.tensor([0.5]))[0]))
    True
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..schedule import Schedule
from .oracles import MarkovChain, _check_distribution, _random_stochastic

F64 = torch.float64


class EndMarkovChain:
    r"""A Markov chain over ``vocab_size`` tokens that stops at an END state (id
    ``vocab_size``, which also pads), cut at ``max_length`` tokens; see the module docstring.

    The random chain has a symmetric-Dirichlet initial distribution and token rows
    (``concentration``) and, per token :math:`v`, the END probability
    :math:`e_v = \bar e\,u_v` with :math:`u_v \sim U(0.5, 1.5)` and :math:`\bar e` =
    ``end_probability``; no sequence is empty."""

    def __init__(self, vocab_size: int, max_length: int, seed: int = 0, *, concentration: float = 1.0,
                 end_probability: float = 0.1):
        if vocab_size < 1 or max_length < 1:
            raise ValueError(f"vocab_size and max_length must be >= 1, got {vocab_size}, {max_length}")
        if not 0.0 < end_probability <= 2.0 / 3.0:
            raise ValueError(f"end_probability must be in (0, 2/3] (the END probabilities reach 1.5 times it), "
                             f"got {end_probability}")
        if concentration <= 0:
            raise ValueError(f"concentration must be > 0, got {concentration}")
        rng = np.random.default_rng(seed)
        initial = _random_stochastic(rng, 1, vocab_size, concentration)[0]
        rows = _random_stochastic(rng, vocab_size, vocab_size, concentration)
        end = torch.from_numpy(end_probability * rng.uniform(0.5, 1.5, vocab_size)).to(F64)
        self._set(initial, torch.cat([(1.0 - end)[:, None] * rows, end[:, None]], dim=1), max_length)
        self.seed = seed

    @classmethod
    def from_matrices(cls, initial: Tensor, transition: Tensor, max_length: int) -> EndMarkovChain:
        """A chain with the initial distribution ``[V]`` over tokens and the transition
        matrix ``[V, V + 1]`` whose last column is the END probability."""
        chain = cls.__new__(cls)
        V = torch.as_tensor(initial).shape[0]
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        chain._set(_check_distribution("initial", initial, (V,)),
                   _check_distribution("transition", transition, (V, V + 1)), max_length)
        chain.seed = None
        return chain

    def _set(self, initial: Tensor, transition: Tensor, max_length: int) -> None:
        self.initial, self.transition, self.max_length = initial, transition, int(max_length)
        V = initial.shape[0]
        padded_initial = torch.cat([initial, torch.zeros(1, dtype=F64)])
        end_row = torch.zeros(1, V + 1, dtype=F64)
        end_row[0, V] = 1.0
        self._padded = MarkovChain.from_matrices(padded_initial, torch.cat([transition, end_row]))

    def __repr__(self) -> str:
        return f"EndMarkovChain(vocab_size={self.vocab_size}, max_length={self.max_length}, seed={self.seed})"

    @property
    def vocab_size(self) -> int:
        """Tokens, END excluded."""
        return self.initial.shape[0]

    @property
    def pad_id(self) -> int:
        """END, which pads sequences to ``max_length``."""
        return self.vocab_size

    def padded_chain(self) -> MarkovChain:
        """The law of the padded sequences: a chain on ``V + 1`` states, END absorbing."""
        return self._padded

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` sequences padded with END to ``max_length``, ``[num, N]`` long."""
        return self._padded.sample(num, self.max_length, generator)

    def length_probs(self) -> Tensor:
        r""":math:`P(L = l)` for :math:`l = 0..N` (``[N + 1]``, :math:`P(L = 0) = 0`)."""
        V, N = self.vocab_size, self.max_length
        token, end = self.transition[:, :V], self.transition[:, V]
        probs = torch.zeros(N + 1, dtype=F64)
        running = self.initial  # P(X_l = v, still running after l tokens)
        for length in range(1, N):
            probs[length] = running @ end
            running = running @ token
        probs[N] = running.sum()
        return probs

    def sequence_probs(self) -> Tensor:
        """The probability of every padded sequence over ``V + 1`` symbols, ``[(V + 1)^N]``,
        in the order of :func:`ddkit.testing.oracles.sequence_ids`."""
        return self._padded.probabilities(self.max_length)

    def entropy(self) -> float:
        """Entropy of a sequence (its length included), nats."""
        return self._padded.entropy(self.max_length)


class InsertionOracle:
    r"""The exact denoiser of the ``insertion`` process for :class:`EndMarkovChain` data
    (module docstring). Token ids follow the process built with ``vocab_size = V + 1``:
    tokens ``0..V-1``, padding (END) ``V``, mask ``V + 1``. ``insertion_outputs`` returns
    float64 log-posteriors at masks (one-hot at clean tokens) and the expected gap counts;
    the insertion schedule must be the process's."""

    heads = frozenset({"tokens", "gaps"})
    gap_head = "expectation"

    def __init__(self, chain: EndMarkovChain, insertion: Schedule):
        self.chain, self.insertion = chain, insertion
        self.mask_id = chain.vocab_size + 1

    def __repr__(self) -> str:
        return f"InsertionOracle({self.chain!r})"

    def insertion_outputs(self, x_t: Tensor, lengths: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        tokens, gaps, _ = self._posterior(x_t, lengths, t)
        logits = torch.log(tokens)
        logits = torch.cat([logits, torch.full_like(logits[..., :1], -torch.inf)], dim=-1)  # padding: never
        return logits.to(x_t.device), gaps.to(x_t.device)

    def expected_length(self, x_t: Tensor, lengths: Tensor, t: Tensor) -> Tensor:
        r""":math:`E[|x_0| \mid x_t]`, ``[B]`` (a check on the gaps: their sum plus :math:`|x_t|`)."""
        return self._posterior(x_t, lengths, t)[2]

    def _posterior(self, x_t: Tensor, lengths: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        chain, V, K = self.chain, self.chain.vocab_size, self.chain.max_length
        x, m = x_t.long().cpu(), torch.as_tensor(lengths).long().cpu()
        B, N = x.shape
        if bool((m > K).any()):
            raise ValueError(f"x_t has {int(m.max())} tokens, more than the chain's max_length {K}: impossible")
        W = int(m.max()) if B else 0  # the lattice needs the tokens of the longest x_t only
        x, J = x[:, :W], W + 2  # slots 0..W and one that is never reached
        rho = (1.0 - self.insertion.alpha(torch.as_tensor(t, dtype=F64).cpu())).expand(B)
        inside = torch.arange(W) < m[:, None]
        masked = x == self.mask_id
        if bool((inside & ~masked & (x >= V)).any()):
            raise ValueError(f"x_t must hold tokens 0..{V - 1} or the mask {self.mask_id} inside its length")
        one_hot = torch.nn.functional.one_hot(x.clamp(0, V - 1), V).to(F64)
        compat = torch.zeros(B, J, V, dtype=F64)  # token j of x_t can be v (0 beyond its length)
        compat[:, :W] = torch.where(masked[..., None], 1.0, one_hot) * inside[..., None]
        token, end, pi = chain.transition[:, :V], chain.transition[:, V], chain.initial
        final = torch.nn.functional.one_hot(m, J).to(F64)[..., None]  # all of x_t consumed
        r = rho[:, None, None]

        def down(a: Tensor) -> Tensor:  # a[j - 1] at j (consuming one token)
            return torch.cat([torch.zeros_like(a[:, :1]), a[:, :-1]], dim=1)

        def up(a: Tensor) -> Tensor:  # a[j + 1] at j
            return torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)

        # forward: first[j, v] of the first token; G[n] = F_n A for n = 1..K-1
        first = torch.zeros(B, J, V, dtype=F64)
        first[:, 0] = pi * rho[:, None]
        first[:, 1] = pi * compat[:, 0]
        forward, moved = first, []
        for _ in range(1, K):
            G = forward @ token
            moved.append(G)
            forward = r * G + down(G * compat)
        # backward: after n tokens, the weight of every completion (n = K..1)
        backward = [final.expand(B, J, V)]
        for n in range(K - 1, 0, -1):
            nxt = backward[0]
            backward.insert(0, final * end + (r * nxt + compat * up(nxt)) @ token.T)
        # backward[n - 1] is B_n
        Z = (pi * (rho[:, None] * backward[0][:, 0] + compat[:, 0] * backward[0][:, 1])).sum(-1)
        if bool((Z <= 0).any()):
            b = int((Z <= 0).nonzero()[0])
            raise ValueError(f"x_t row {b} ({x[b, :int(m[b])].tolist()}) has probability 0 at t = {float(rho[b])} "
                             f"absent-probability under the chain")
        gaps = torch.zeros(B, J, dtype=F64)
        gaps[:, 0] = (pi * rho[:, None] * backward[0][:, 0]).sum(-1)
        tokens = torch.zeros(B, J, V, dtype=F64)
        tokens[:, 0] = pi * compat[:, 0] * backward[0][:, 1]
        for n, G in enumerate(moved, start=1):
            after = backward[n]  # B_{n+1}
            gaps = gaps + rho[:, None] * (G * after).sum(-1)
            tokens = tokens + G * compat * up(after)
        gaps = torch.cat([gaps[:, :W + 1] / Z[:, None], torch.zeros(B, N - W, dtype=F64)], dim=1)
        tokens = tokens[:, :W] / tokens[:, :W].sum(-1, keepdim=True).clamp_min(torch.finfo(F64).tiny)
        tokens = torch.where(inside[..., None], tokens, 1.0 / V)
        tokens = torch.cat([tokens, torch.full((B, N - W, V), 1.0 / V, dtype=F64)], dim=1)
        length = m.to(F64) + gaps.sum(-1)
        return tokens, gaps, length
