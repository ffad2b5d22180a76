r"""The process protocol: a forward noising CTMC, factorised over positions.

Every position evolves independently on ``S`` states. The clean vocabulary is ``0..V-1``;
an absorbing process adds the mask with id ``V`` (``S = V + 1``). Matrices follow the
row convention of the lecture:

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


def kl_categorical(p: Tensor, q: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(p \| q) = \sum_k p_k (\log p_k - \log q_k)` over the last axis,
    with :math:`0 \log 0 = 0`; infinite where :math:`p_k > 0 = q_k`."""
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


class Process:
    """Base class of forward processes. See the module docstring for the conventions."""

    #: capabilities that conformance checks and samplers key on, e.g. ``"absorbing"``
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, vocab_size: int, schedule: Schedule):
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = int(vocab_size)
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
        the NELBO is :math:`\int_0^1 \mathbb{E}_{q(x_t|x_0)}[\cdot]\,dt` summed over tokens."""
        raise NotImplementedError(f"{type(self).__name__} has no continuous-time ELBO")

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
