r"""The process protocol: a forward noising CTMC, factorised over positions.

Every position evolves independently on ``S`` states. The clean vocabulary is ``0..V-1``;
an absorbing process adds the mask with id ``V`` (``S = V + 1``). Matrices follow the
row convention:

* transition :math:`\bar Q(s, t)_{ij} = q(x_t = j \mid x_s = i)`, :math:`s \le t`;
  marginal :math:`\bar Q(t) = \bar Q(0, t)`; Chapman–Kolmogorov
  :math:`\bar Q(t) = \bar Q(s) \bar Q(s, t)`;
* rate matrix (generator) :math:`R(t)` with :math:`\partial_t \bar Q(s, t) = \bar Q(s, t) R(t)`,
  off-diagonal entries :math:`\ge 0`, rows summing to 0;
* posterior :math:`q(x_s \mid x_t, x_0) = \bar Q(s,t)_{:, x_t} \odot \bar Q(s)_{x_0, :}
  / \bar Q(t)_{x_0, x_t}`, and with a predicted clean distribution :math:`\mu`
  (mean parameterization) :math:`p(x_s \mid x_t) = \sum_{x_0} \mu(x_0)\, q(x_s \mid x_t, x_0)`.

The base class computes everything a process needs from :meth:`Process.transition_matrix`
(dense, for checking and for small state spaces); subclasses override with closed forms.
Times are tensors of shape ``[B]`` (one per sequence) or ``[B, N]`` (one per token).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .categorical import sample_categorical
from .schedule import Schedule


def per_token(t: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a time of shape ``[]``, ``[B]`` or ``[B, N]`` to ``x.shape`` in float64."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    if t.dim() == 1 and x.dim() == 2:
        t = t[:, None]
    return t.expand(x.shape)


def scaled_rates(beta: Tensor, generator: Tensor) -> Tensor:
    r""":math:`\beta(t)\,R` for rate scales ``beta`` (any shape) and a generator ``R``
    (``[S, S]``), with :math:`\infty \cdot 0 = 0`: where :math:`\alpha_t = 0` the clock
    :math:`\beta = -\alpha'/\alpha` is infinite, and entries that are zero in :math:`R`
    (transitions that cannot happen) must stay zero, not become NaN."""
    beta = torch.as_tensor(beta, dtype=torch.float64)[..., None, None]
    generator = generator.to(device=beta.device, dtype=torch.float64)
    return torch.where(generator != 0, beta * generator, 0.0)


def kl_categorical(p: Tensor, q: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(p \| q) = \sum_k p_k (\log p_k - \log q_k)` over the last axis,
    with :math:`0 \log 0 = 0`; infinite where :math:`p_k > 0 = q_k`."""
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


class Process:
    """Base class of forward processes. See the module docstring for the conventions."""

    #: capabilities that conformance checks and samplers key on, e.g. ``"absorbing"``
    capabilities: ClassVar[frozenset[str]] = frozenset()

    #: whether the process is factorised over positions, as every sampler that does not
    #: require one of its capabilities assumes (FlexMDM's insertion process is not)
    factorised: ClassVar[bool] = True

    #: whether the process takes a vector-valued schedule (one alpha per clean token,
    #: :attr:`ddkit.Schedule.vector_size`)
    vector_schedules: ClassVar[bool] = False

    def __init__(self, vocab_size: int, schedule: Schedule):
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = int(vocab_size)
        size = getattr(schedule, "vector_size", None)
        if size is not None and not self.vector_schedules:
            raise ValueError(f"{type(self).__name__} needs a schedule with one alpha per time; "
                             f"{type(schedule).__name__} gives one per token (vector_size {size})")
        if size is not None and size != self.vocab_size:
            raise ValueError(f"the schedule has one alpha for each of {size} tokens but the process has "
                             f"vocab_size {self.vocab_size}")
        self.schedule = schedule

    #: number of states per position (``V`` plus any extra states such as the mask)
    @property
    def num_states(self) -> int:
        return self.vocab_size

    #: id of the absorbing mask state, or ``None``
    mask_id: int | None = None

    # -- dense matrices ------------------------------------------------------------------

    def transition_matrix(self, s: Tensor, t: Tensor) -> Tensor:
        r""":math:`\bar Q(s, t)`, shape ``[*s.shape, S, S]``."""
        raise NotImplementedError

    def marginal_matrix(self, t: Tensor) -> Tensor:
        r""":math:`\bar Q(t)_{ij} = q(x_t = j \mid x_0 = i)` from the data. The default
        :math:`\bar Q(0, t)` assumes no noise at :math:`t = 0`; a process whose schedule has
        :math:`\alpha_0 < 1` overrides it."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.transition_matrix(torch.zeros_like(t), t)

    def rate_matrix(self, t: Tensor) -> Tensor:
        r"""Generator :math:`R(t)`, shape ``[*t.shape, S, S]``."""
        raise NotImplementedError

    def prior_probs(self) -> Tensor:
        r"""The stationary distribution reached at :math:`t = 1`, shape ``[S]``."""
        raise NotImplementedError

    # -- per-token distributions ---------------------------------------------------------

    def sample_prior(self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
        probs = self.prior_probs().to(device=device, dtype=torch.float64)
        return sample_categorical(probs.expand(*shape, -1), generator=generator)

    def marginal_probs(self, x0: Tensor, t: Tensor) -> Tensor:
        r""":math:`q(x_t \mid x_0) = \bar Q(t)_{x_0, :}`, shape ``[B, N, S]`` (float64)."""
        q = self.marginal_matrix(per_token(t, x0))
        return torch.gather(q, -2, x0[..., None, None].expand(*x0.shape, 1, q.shape[-1])).squeeze(-2)

    def sample_marginal(self, x0: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw :math:`x_t \sim q(x_t \mid x_0)` independently per position."""
        return sample_categorical(self.marginal_probs(x0, t), generator=generator)

    def posterior_probs(self, x_t: Tensor, mean: Tensor, s: Tensor, t: Tensor) -> Tensor:
        r""":math:`p(x_s \mid x_t) = \sum_{x_0} \mu(x_0)\, q(x_s \mid x_t, x_0)`.

        ``mean`` has shape ``[B, N, V]`` (a distribution over clean tokens; one-hot gives
        the true posterior). Returns ``[B, N, S]`` in float64."""
        s_, t_ = per_token(s, x_t), per_token(t, x_t)
        V = self.vocab_size
        q_st = self.transition_matrix(s_, t_)  # [B,N,S,S]
        q_s = self.marginal_matrix(s_)[..., :V, :]  # [B,N,V,S] rows x0
        q_t = self.marginal_matrix(t_)[..., :V, :]  # [B,N,V,S]
        idx = x_t[..., None, None]
        col = torch.gather(q_st, -1, idx.expand(*x_t.shape, q_st.shape[-2], 1)).squeeze(-1)  # [B,N,S]
        q_t_xt = torch.gather(q_t, -1, idx.expand(*x_t.shape, V, 1)).squeeze(-1)  # [B,N,V]
        post = col[..., None, :] * q_s / q_t_xt[..., None].clamp_min(torch.finfo(torch.float64).tiny)
        return torch.einsum("bnv,bnvs->bns", mean.to(torch.float64), post)

    # -- ELBO terms ----------------------------------------------------------------------

    def continuous_elbo(self, x0: Tensor, x_t: Tensor, log_mean: Tensor, t: Tensor) -> Tensor:
        r"""Integrand of the continuous-time negative ELBO at time ``t``, per token, in nats:
        the NELBO is :math:`\int_0^1 \mathbb{E}_{q(x_t|x_0)}[\cdot]\,dt` summed over tokens.

        Generic form, for any CTMC (Campbell et al. 2022; Lou et al. 2024): the denoising
        score entropy (:meth:`score_entropy`) of the ratios implied by the mean
        (:meth:`score_from_mean`),

        .. math::  \sum_{y \ne x_t} R(t)_{y, x_t}\big(s_y - r_y\log s_y + r_y\log r_y - r_y\big),
                   \quad s_y = \sum_{x_0}\mu(x_0)\frac{\bar Q(t)_{x_0 y}}{\bar Q(t)_{x_0 x_t}},\quad
                   r_y = \frac{\bar Q(t)_{x_0 y}}{\bar Q(t)_{x_0 x_t}},

        the limit of :math:`\frac1h` times the discrete-time term of step :math:`(t - h, t)`
        in expectation over :math:`x_t`. Computed from the dense marginal and generator (one
        matrix per distinct time, the score form's rule on extra states applies) unless the
        process overrides the score methods or this one with closed forms. Where
        :math:`\alpha_t = 0` exactly the product :math:`R(t)_{y x} s_y` is
        :math:`\infty \cdot 0` and is taken as 0 (a single time, of measure zero)."""
        score = self.score_from_mean(x_t, log_mean.to(torch.float64).exp(), t)
        return self.score_entropy(x0, x_t, torch.log(score), t).to(log_mean.dtype)

    def discrete_elbo(self, x0: Tensor, x_t: Tensor, log_mean: Tensor, s: Tensor, t: Tensor) -> Tensor:
        r""":math:`\mathrm{KL}(q(x_s \mid x_t, x_0) \,\|\, p_\theta(x_s \mid x_t))` per token,
        in nats: the term of step :math:`(s, t)` of the discrete-time negative ELBO."""
        true = self.posterior_probs(x_t, torch.nn.functional.one_hot(x0, self.vocab_size), s, t)
        model = self.posterior_probs(x_t, log_mean.exp(), s, t)
        return kl_categorical(true, model)

    def prior_kl(self, x0: Tensor) -> Tensor:
        r""":math:`\mathrm{KL}(q(x_1 \mid x_0) \,\|\, p(x_1))` per token, in nats."""
        q1 = self.marginal_probs(x0, torch.ones((), dtype=torch.float64))
        return kl_categorical(q1, self.prior_probs().to(q1))

    # -- the reverse CTMC in the score (ratio) form ----------------------------------------
    #
    # Score (SEDD's concrete score): the ratios s(x_t, t)_j = q_t(j) / q_t(x_t) over the clean
    # tokens j, shape [B, N, V]; the entry j = x_t is 1 by definition. States beyond the clean
    # vocabulary (a mask) must be absorbing (zero row of R), so the reverse rate into them,
    # R(t)[m, x] s_m, is 0 and their ratios are never needed. The generic versions below work
    # on the dense matrices, one matrix per distinct time (O(S^2) memory per time);
    # processes override them with closed forms.

    def score_from_mean(self, x_t: Tensor, mean: Tensor, t: Tensor) -> Tensor:
        r"""The ratios implied by a clean-token distribution :math:`\mu \approx p(x_0 \mid x_t)`:

        .. math::  s_j = \frac{q_t(j)}{q_t(x_t)} = \sum_{x_0} \mu(x_0)\,
                   \frac{\bar Q(t)_{x_0, j}}{\bar Q(t)_{x_0, x_t}}

        For the true posterior this is the true ratio at every :math:`j` a reverse rate uses
        (:math:`R(t)_{j, x_t} > 0`; clean tokens that cannot produce :math:`x_t` drop out, e.g.
        at a clean :math:`x_t` of the masked process, where no rate leaves :math:`x_t`).
        ``mean`` ``[B, N, V]``; returns ``[B, N, V]`` float64."""
        V = self.vocab_size
        out = torch.empty(*x_t.shape, V, dtype=torch.float64, device=x_t.device)
        mean = mean.to(torch.float64)
        for (tt,), where in _time_groups(x_t, t):
            q = self.marginal_matrix(tt)[:V].to(x_t.device)  # [V, S], rows x0
            x = x_t[where]
            denominator = q[:, x].movedim(0, -1)  # [..., V]: q(x_t | x0)
            # x0 that cannot produce x_t (denominator 0) drop out instead of weighing 1/tiny
            weights = torch.where((mean[where] > 0) & (denominator > 0), mean[where] / denominator.clamp_min(_TINY),
                                  0.0)
            out[where] = weights @ q[:, :V]
        return out

    def reverse_rates(self, x_t: Tensor, score: Tensor, t: Tensor) -> Tensor:
        r"""Row :math:`x_t` of the reverse generator, ``[B, N, S]`` float64:

        .. math::  \hat R_t(x_t \to y) = R(t)_{y, x_t}\, s(x_t, t)_y \quad (y \ne x_t), \qquad
                   \hat R_t(x_t \to x_t) = -\sum_{y \ne x_t} \hat R_t(x_t \to y)

        (the true reverse rates when :math:`s` is the true ratio). ``score`` ``[B, N, V]``."""
        V, S = self.vocab_size, self.num_states
        out = torch.zeros(*x_t.shape, S, dtype=torch.float64, device=x_t.device)
        score = score.to(torch.float64)
        for (tt,), where in _time_groups(x_t, t):
            rates = self.rate_matrix(tt).to(x_t.device)  # [S, S]
            x = x_t[where]
            into = rates[:, x].movedim(0, -1).masked_fill(_onehot(x, S), 0.0)  # R(t)[y, x_t], y != x_t
            _check_absorbing_extra_states(into, V)
            row = torch.zeros_like(into)
            # a zero ratio or rate stays zero where the other is infinite (alpha_t = 0)
            rate, ratio = into[..., :V], score[where]
            row[..., :V] = torch.where((rate > 0) & (ratio > 0), rate * ratio, 0.0)
            out[where] = _with_diagonal(row, x)
        return out

    def score_posterior(self, x_t: Tensor, score: Tensor, s: Tensor, t: Tensor) -> Tensor:
        r"""The analytic (Tweedie) reverse step of SEDD from the ratios, ``[B, N, S]`` float64:

        .. math::  p(x_s = y \mid x_t) \propto \big[\hat s^\top \bar Q(s, t)^{-1}\big]_y^{+}\,
                   \bar Q(s, t)_{y, x_t}

        with :math:`\hat s` the ratios over all states (:math:`\hat s_{x_t} = 1`, extra states
        other than :math:`x_t` set to 0: absorbing, they cannot lead to :math:`x_t`). Exact for
        the true ratios, since :math:`q_s^\top = q_t^\top \bar Q(s,t)^{-1}`; negative entries
        of an approximate score are clipped. Needs :math:`\bar Q(s, t)` invertible (it is not
        where :math:`\alpha_t = 0`: the ratios at full noise carry no information)."""
        V, S = self.vocab_size, self.num_states
        out = torch.empty(*x_t.shape, S, dtype=torch.float64, device=x_t.device)
        full = _full_score(x_t, score, S)
        for (ss, tt), where in _time_groups(x_t, s, t):
            q = self.transition_matrix(ss, tt).to(x_t.device)  # [S, S]
            try:
                solved = torch.linalg.solve(q, full[where], left=False)  # s^T Q^{-1}
            except RuntimeError as error:  # torch.linalg.LinAlgError
                raise ValueError(
                    f"the analytic step from t = {float(tt)} to s = {float(ss)} needs an invertible "
                    f"transition matrix; Q(s, t) is singular (alpha_t = 0?). Start below the "
                    f"singular time or use a schedule with alpha_1 > 0") from error
            out[where] = solved.clamp_min(0.0) * q[:, x_t[where]].movedim(0, -1)
        return _normalise(out)

    def score_entropy(self, x0: Tensor, x_t: Tensor, log_score: Tensor, t: Tensor) -> Tensor:
        r"""Denoising score entropy (SEDD) at time ``t``, per token, in nats:

        .. math::  \sum_{y \ne x_t} R(t)_{y, x_t}\Big(s_y - r_y \log s_y + r_y \log r_y - r_y\Big),
                   \qquad r_y = \frac{\bar Q(t)_{x_0, y}}{\bar Q(t)_{x_0, x_t}}

        with :math:`s = \exp(\text{log\_score})`. It is :math:`\lim_{h \to 0} \frac1h
        \mathrm{KL}(q(x_{t-h} \mid x_t, x_0) \,\|\, p_s(x_{t-h} \mid x_t))` for the reverse
        rates :math:`R(t)_{y, x_t} s_y`, so :math:`\int_0^1 \mathbb E_{q(x_t|x_0)}[\cdot]\,dt`
        (plus the prior term) bounds :math:`-\log p(x_0)`; with
        :math:`s` = :meth:`score_from_mean` it is the continuous-time ELBO integrand."""
        V, S = self.vocab_size, self.num_states
        out = torch.empty(x_t.shape, dtype=torch.float64, device=x_t.device)
        log_score = log_score.to(torch.float64)
        for (tt,), where in _time_groups(x_t, t):
            rates = self.rate_matrix(tt).to(x_t.device)
            q = self.marginal_matrix(tt)[:V].to(x_t.device)  # [V, S]
            x, clean = x_t[where], x0[where]
            into = rates[:, x].movedim(0, -1).masked_fill(_onehot(x, S), 0.0)  # R(t)[y, x_t], y != x_t
            _check_absorbing_extra_states(into, V)
            weight = into[..., :V]
            ratio = q[clean, :V] / q[clean, x][..., None].clamp_min(_TINY)  # r_y
            out[where] = _score_entropy_terms(weight, ratio, log_score[where])
        return out


_TINY = torch.finfo(torch.float64).tiny


def _time_groups(x: Tensor, *times: Tensor | float):
    r"""Yield ``((t_1, t_2, ...), where)`` for every distinct tuple of per-token times
    (each broadcast to ``x.shape`` with :func:`per_token`); ``where`` is the boolean mask of the
    positions with those times, or ``...`` (every position) when there is one tuple, which
    keeps indexing cheap. Dense generic computations then build one matrix per tuple."""
    columns = [per_token(t, x).reshape(-1) for t in times]
    if all(bool((c == c[0]).all()) for c in columns):  # one time for every token (samplers)
        yield tuple(c[0].cpu() for c in columns), ...
        return
    code = torch.zeros_like(columns[0], dtype=torch.long)
    values = []
    for c in columns:  # encode the tuple of distinct-value indices as one integer
        unique, index = torch.unique(c, return_inverse=True)
        code = code * len(unique) + index
        values.append(unique)
    codes, inverse = torch.unique(code, return_inverse=True)
    inverse = inverse.reshape(x.shape)
    for i, value in enumerate(codes.tolist()):
        digits = []
        for unique in reversed(values):
            value, digit = divmod(value, len(unique))
            digits.append(unique[digit].cpu())
        yield tuple(reversed(digits)), inverse == i


def _onehot(x: Tensor, size: int) -> Tensor:
    return torch.nn.functional.one_hot(x, size).bool()


def _check_absorbing_extra_states(into: Tensor, vocab_size: int) -> None:
    if into.shape[-1] > vocab_size and bool((into[..., vocab_size:] > 0).any()):
        raise ValueError("the score form needs every state beyond the vocabulary to be absorbing: "
                         "the rate R(t)[extra, x] from an extra state into another state must be 0")


def _with_diagonal(row: Tensor, x: Tensor) -> Tensor:
    """Set entry ``x`` of each generator row to minus the sum of the others."""
    row = row.masked_fill(_onehot(x, row.shape[-1]), 0.0)
    return row.scatter(-1, x[..., None], -row.sum(-1, keepdim=True))


def _full_score(x_t: Tensor, score: Tensor, num_states: int) -> Tensor:
    r"""Ratios over all states: the clean ones from ``score``, :math:`\hat s_{x_t} = 1`,
    other extra states 0."""
    full = torch.zeros(*x_t.shape, num_states, dtype=torch.float64, device=x_t.device)
    full[..., : score.shape[-1]] = score.to(torch.float64)
    return full.scatter(-1, x_t[..., None], 1.0)


def _normalise(probs: Tensor) -> Tensor:
    total = probs.sum(-1, keepdim=True)
    return torch.where(total > 0, probs / total.clamp_min(_TINY), probs)


def _score_entropy_terms(weight: Tensor, ratio: Tensor, log_score: Tensor) -> Tensor:
    r""":math:`\sum_y w_y (s_y - r_y \log s_y + r_y \log r_y - r_y)` over the last axis, with
    :math:`0 \log 0 = 0`, terms of weight 0 dropped (even where :math:`s_y` is 0 or infinite)."""
    score = log_score.exp()
    cross = torch.where(ratio > 0, ratio * log_score, 0.0)
    terms = score - cross + torch.xlogy(ratio, ratio) - ratio
    return torch.where(weight > 0, weight * terms, 0.0).sum(-1)
