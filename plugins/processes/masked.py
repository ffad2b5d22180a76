r"""Masked (absorbing) diffusion: MD4 / MDLM.

States ``0..V-1`` are clean tokens and ``V`` is the mask (``S = V + 1``). With the schedule
:math:`\alpha_t`:

* marginal :math:`q(x_t \mid x_0) = \mathrm{Cat}(\alpha_t x_0 + (1-\alpha_t) e_m)`;
* transition :math:`\bar Q(s,t) = \frac{\alpha_t}{\alpha_s} I + (1 - \frac{\alpha_t}{\alpha_s})
  \mathbf 1 e_m^\top` and marginal :math:`\bar Q(t) = \alpha_t I + (1-\alpha_t)\mathbf 1 e_m^\top`
  (from the data; equal to :math:`\bar Q(0, t)` only when :math:`\alpha_0 = 1`);
* rate matrix :math:`R(t) = \beta(t)(\mathbf 1 e_m^\top - I)` restricted to clean rows, with
  :math:`\beta(t) = -\alpha'_t/\alpha_t` (the mask row is zero);
* posterior for :math:`x_t = m`: stay masked w.p. :math:`\frac{1-\alpha_s}{1-\alpha_t}`, become
  :math:`j` w.p. :math:`\frac{\alpha_s-\alpha_t}{1-\alpha_t}\mu_j`; a clean token never changes;
* continuous-time NELBO integrand per token
  :math:`\frac{-\alpha'_t}{1-\alpha_t}\,\delta_{x_t,m}\,(-\log\mu_\theta(x_t)_{x_0})`;
* discrete-time term of step :math:`(s,t)`:
  :math:`\frac{\alpha_s-\alpha_t}{1-\alpha_t}\,\delta_{x_t,m}\,(-\log\mu_\theta(x_t)_{x_0})`.
"""

from __future__ import annotations

import torch
from pydantic import PositiveInt
from torch import Tensor

import ddkit
import ddkit.kernels
from ddkit.process import per_token, scaled_rates

_TINY = torch.finfo(torch.float64).tiny


class MaskedProcess(ddkit.Process):
    """Absorbing-state process with mask id ``V``."""

    capabilities = frozenset({"absorbing"})

    def __init__(self, vocab_size: PositiveInt, schedule: ddkit.Component("schedule") = "linear"):
        super().__init__(vocab_size, ddkit.build("schedule", schedule))
        self.mask_id = self.vocab_size

    @property
    def num_states(self) -> int:
        return self.vocab_size + 1

    def _alpha(self, t: Tensor) -> Tensor:
        return self.schedule.alpha(torch.as_tensor(t, dtype=torch.float64))

    # -- dense ---------------------------------------------------------------------------

    def _keep_matrix(self, keep: Tensor) -> Tensor:
        r""":math:`k I + (1 - k)\mathbf 1 e_m^\top` for a keep probability ``k`` of any shape."""
        keep = keep[..., None, None]
        S, m = self.num_states, self.mask_id
        eye = torch.eye(S, dtype=torch.float64, device=keep.device)
        to_mask = torch.zeros(S, S, dtype=torch.float64, device=keep.device)
        to_mask[:, m] = 1.0
        q = keep * eye + (1.0 - keep) * to_mask
        q[..., m, :] = eye[m]
        return q

    def transition_matrix(self, s: Tensor, t: Tensor) -> Tensor:
        a_s, a_t = self._alpha(s), self._alpha(t)
        # if alpha_s = 0 every token is already masked at s and the clean rows are unreachable
        return self._keep_matrix(torch.where(a_s > 0, a_t / a_s.clamp_min(_TINY), torch.ones_like(a_t)))

    def marginal_matrix(self, t: Tensor) -> Tensor:
        # from the data, not from time 0: differs from transition_matrix(0, t) when alpha_0 < 1
        return self._keep_matrix(self._alpha(t))

    def rate_matrix(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        beta = -self.schedule.alpha_prime(t) / self._alpha(t).clamp_min(_TINY)
        S, m = self.num_states, self.mask_id
        base = -torch.eye(S, dtype=torch.float64, device=beta.device)
        base[:, m] += 1.0
        return scaled_rates(beta, base)

    def prior_probs(self) -> Tensor:
        probs = torch.zeros(self.num_states, dtype=torch.float64)
        probs[self.mask_id] = 1.0
        return probs

    # -- closed forms --------------------------------------------------------------------

    def sample_prior(self, shape, *, generator=None, device=None) -> Tensor:
        return torch.full(shape, self.mask_id, dtype=torch.long, device=device)

    def marginal_probs(self, x0: Tensor, t: Tensor) -> Tensor:
        a = self._alpha(per_token(t, x0))
        probs = torch.nn.functional.one_hot(x0, self.num_states).to(torch.float64) * a[..., None]
        probs[..., self.mask_id] += 1.0 - a
        return probs

    def sample_marginal(self, x0: Tensor, t: Tensor, *, generator=None) -> Tensor:
        r""":math:`x_t = x_0` if :math:`u < \alpha_t`, else the mask."""
        a = self._alpha(per_token(t, x0))
        u = torch.rand(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)
        return ddkit.kernels.mask_noise(x0, a, u, mask_id=self.mask_id)

    def posterior_probs(self, x_t: Tensor, mean: Tensor, s: Tensor, t: Tensor) -> Tensor:
        a_s, a_t = self._alpha(per_token(s, x_t)), self._alpha(per_token(t, x_t))
        denom = (1.0 - a_t).clamp_min(_TINY)
        unmask = ((a_s - a_t) / denom)[..., None]
        stay = ((1.0 - a_s) / denom)
        masked = x_t == self.mask_id
        probs = torch.zeros(*x_t.shape, self.num_states, dtype=torch.float64, device=x_t.device)
        probs[..., : self.vocab_size] = unmask * mean.to(torch.float64)
        probs[..., self.mask_id] = stay
        clean = torch.nn.functional.one_hot(x_t, self.num_states).to(torch.float64)
        return torch.where(masked[..., None], probs, clean)

    def _masked_nll(self, x0: Tensor, x_t: Tensor, log_mean: Tensor) -> Tensor:
        masked = x_t == self.mask_id
        nll = -torch.gather(log_mean, -1, x0[..., None]).squeeze(-1)
        # unmasked positions contribute nothing, even where log_mean is -inf (carry-over)
        return torch.where(masked, nll, torch.zeros_like(nll))

    def continuous_elbo(self, x0: Tensor, x_t: Tensor, log_mean: Tensor, t: Tensor) -> Tensor:
        t_ = per_token(t, x0)
        weight = -self.schedule.alpha_prime(t_) / (1.0 - self._alpha(t_)).clamp_min(_TINY)
        return weight.to(log_mean.dtype) * self._masked_nll(x0, x_t, log_mean)

    def discrete_elbo(self, x0: Tensor, x_t: Tensor, log_mean: Tensor, s: Tensor, t: Tensor) -> Tensor:
        a_s, a_t = self._alpha(per_token(s, x0)), self._alpha(per_token(t, x0))
        weight = (a_s - a_t) / (1.0 - a_t).clamp_min(_TINY)
        return weight.to(log_mean.dtype) * self._masked_nll(x0, x_t, log_mean)

    def prior_kl(self, x0: Tensor) -> Tensor:
        r""":math:`\mathrm{KL}(q(x_1|x_0) \| \delta_m)`: zero when :math:`\alpha_1 = 0`,
        infinite otherwise (a shifted schedule never reaches the all-mask prior)."""
        a1 = self._alpha(torch.ones((), dtype=torch.float64))
        value = 0.0 if float(a1) == 0.0 else float("inf")
        return torch.full(x0.shape, value, dtype=torch.float64, device=x0.device)


@ddkit.hookimpl
def register_processes(register):
    register("masked", MaskedProcess,
             summary="absorbing-state (mask id = V) diffusion, MD4/MDLM")
