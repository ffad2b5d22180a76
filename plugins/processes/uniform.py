r"""Uniform diffusion (D3PM uniform, UDLM / Duo): a token is resampled uniformly over ``V``.

States are the clean tokens ``0..V-1`` (``S = V``, no mask); :math:`J = \mathbf 1 \mathbf 1^\top`.
With the schedule :math:`\alpha_t` and :math:`u_t = (1 - \alpha_t)/V`:

* marginal :math:`q(x_t \mid x_0) = \mathrm{Cat}(\alpha_t e_{x_0} + u_t \mathbf 1)`; prior
  :math:`\mathrm{Cat}(\mathbf 1/V)`, reached exactly when :math:`\alpha_1 = 0`;
* transition :math:`\bar Q(s,t) = k I + \frac{1-k}{V} J` with :math:`k = \alpha_t/\alpha_s`
  (the identity once :math:`\alpha_s = 0`), and from the data
  :math:`\bar Q(t) = \alpha_t I + \frac{1-\alpha_t}{V} J`;
* rate matrix :math:`R(t) = \beta(t)\,(J/V - I)` with :math:`\beta(t) = -\alpha'_t/\alpha_t`;
* posterior, for a clean-token distribution :math:`\mu \approx p(x_0 \mid x_t)` and
  :math:`d_v = q(x_t \mid x_0 = v) = \alpha_t \delta_{v x_t} + u_t`:

  .. math::  p(x_s = y \mid x_t) = \sum_{x_0} \mu(x_0) q(x_s = y \mid x_t, x_0)
             = \bar Q(s,t)_{y x_t} \Big(\alpha_s \frac{\mu_y}{d_y}
               + \frac{1-\alpha_s}{V} \sum_v \frac{\mu_v}{d_v}\Big);

* ratios implied by :math:`\mu` (:meth:`~ddkit.Process.score_from_mean`), with the signal
  to noise ratio :math:`a_t = V\alpha_t/(1-\alpha_t)`:

  .. math::  s_y = \frac{q_t(y)}{q_t(x_t)} = 1 + a_t \mu_y - \frac{a_t}{1 + a_t}\mu_{x_t}
             \quad (y \ne x_t);

* continuous-time NELBO integrand per token (the limit of the discrete-time KL terms; it is
  denoising score entropy with the ratios above, Campbell et al. 2022, Lou et al. 2024):

  .. math::  \frac{\beta(t)}{V} \sum_{y \ne x_t} \Big(s_y - r_y \log s_y + r_y \log r_y - r_y\Big),
             \qquad r_y = \frac{q(y \mid x_0)}{q(x_t \mid x_0)} =
             \begin{cases} \frac{1}{1 + a_t} & x_t = x_0 \\
                           1 + a_t & x_t \ne x_0,\ y = x_0 \\
                           1 & \text{otherwise} \end{cases}

  which is :math:`O(V)` per token: the generic :meth:`ddkit.Process.continuous_elbo` on the
  closed forms of :meth:`score_from_mean` and :meth:`score_entropy`.

Relation to UDLM / D3PM: those papers plug the network's prediction :math:`\tilde x_\theta`
into the posterior formula, :math:`q(x_s \mid x_t, x_0 = \tilde x_\theta)`, which equals the
posterior above for :math:`\mu \propto \tilde x_\theta \odot q(x_t \mid \cdot)`. ddkit's
denoisers predict :math:`\mu \approx p(x_0 \mid x_t)` (the exact oracle's output); the two
are reparameterizations of each other and give the same bound for the optimal model (UDLM's
closed form is the integrand above written with :math:`\bar x = V\alpha_t e_{x_0} + 1 - \alpha_t`).
The optimal uniform-diffusion denoiser depends on ``t``: use a parameterization with
``time_conditioning=True``.

Example::

    >>> import torch, ddkit
    >>> process = ddkit.build("process", "uniform", vocab_size=4)
    >>> process.marginal_probs(torch.tensor([[2]]), torch.tensor([0.5]))
    tensor([[[0.1250, 0.1250, 0.6250, 0.1250]]], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

import ddkit
import ddkit.kernels
from ddkit.process import per_token, scaled_rates

_TINY = torch.finfo(torch.float64).tiny


class UniformProcess(ddkit.Process):
    """Uniform-noise process on ``V`` states."""

    capabilities = frozenset()

    def __init__(self, vocab_size: Annotated[int, Field(ge=2)], schedule: ddkit.Component("schedule") = "linear"):
        super().__init__(vocab_size, ddkit.build("schedule", schedule))
        if self.vocab_size < 2:
            raise ValueError(f"uniform diffusion needs vocab_size >= 2, got {self.vocab_size}")

    def _alpha(self, t: Tensor) -> Tensor:
        return self.schedule.alpha(torch.as_tensor(t, dtype=torch.float64))

    def _beta(self, t: Tensor) -> Tensor:
        r""":math:`\beta(t) = -\alpha'_t/\alpha_t`, finite (``α`` clipped at the smallest double)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return -self.schedule.alpha_prime(t) / self._alpha(t).clamp_min(_TINY)

    def _snr(self, alpha: Tensor) -> Tensor:
        r""":math:`a = V\alpha/(1-\alpha)`, finite."""
        return self.vocab_size * alpha / (1.0 - alpha).clamp_min(_TINY)

    # -- dense ---------------------------------------------------------------------------

    def _mix_matrix(self, keep: Tensor) -> Tensor:
        r""":math:`k I + \frac{1-k}{V} J` for a keep probability ``k`` of any shape."""
        keep = keep[..., None, None]
        V = self.vocab_size
        eye = torch.eye(V, dtype=torch.float64, device=keep.device)
        return keep * eye + (1.0 - keep) / V

    def transition_matrix(self, s: Tensor, t: Tensor) -> Tensor:
        a_s, a_t = self._alpha(s), self._alpha(t)
        return self._mix_matrix(torch.where(a_s > 0, a_t / a_s.clamp_min(_TINY), torch.ones_like(a_t)))

    def marginal_matrix(self, t: Tensor) -> Tensor:
        return self._mix_matrix(self._alpha(t))

    def rate_matrix(self, t: Tensor) -> Tensor:
        V = self.vocab_size
        return scaled_rates(self._beta(t), torch.full((V, V), 1.0 / V, dtype=torch.float64) - torch.eye(V))

    def prior_probs(self) -> Tensor:
        return torch.full((self.vocab_size,), 1.0 / self.vocab_size, dtype=torch.float64)

    # -- closed forms --------------------------------------------------------------------

    def sample_prior(self, shape, *, generator=None, device=None) -> Tensor:
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
        return (u * self.vocab_size).long().clamp_max(self.vocab_size - 1)

    def marginal_probs(self, x0: Tensor, t: Tensor) -> Tensor:
        a = self._alpha(per_token(t, x0))[..., None]
        onehot = torch.nn.functional.one_hot(x0, self.vocab_size).to(torch.float64)
        return a * onehot + (1.0 - a) / self.vocab_size

    def sample_marginal(self, x0: Tensor, t: Tensor, *, generator=None) -> Tensor:
        r""":math:`x_t = x_0` if :math:`u < \alpha_t`, else a uniform token (possibly :math:`x_0`)."""
        keep = self._alpha(per_token(t, x0))
        u_keep = torch.rand(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)
        u_token = torch.rand(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)
        return ddkit.kernels.uniform_noise(x0, keep, u_keep, u_token, vocab_size=self.vocab_size)

    def posterior_probs(self, x_t: Tensor, mean: Tensor, s: Tensor, t: Tensor) -> Tensor:
        a_s, a_t = self._alpha(per_token(s, x_t)), self._alpha(per_token(t, x_t))
        V = self.vocab_size
        at_x = torch.nn.functional.one_hot(x_t, V).bool()
        likelihood = torch.where(at_x, (a_t + (1.0 - a_t) / V)[..., None], ((1.0 - a_t) / V)[..., None])
        mean = mean.to(torch.float64)
        weights = torch.where(mean > 0, mean / likelihood.clamp_min(_TINY), 0.0)  # mu_v / d_v
        from_x0 = a_s[..., None] * weights + ((1.0 - a_s) / V)[..., None] * weights.sum(-1, keepdim=True)
        keep = torch.where(a_s > 0, a_t / a_s.clamp_min(_TINY), torch.ones_like(a_t))[..., None]
        column = torch.where(at_x, keep + (1.0 - keep) / V, (1.0 - keep) / V)  # Q(s,t)[y, x_t]
        return column * from_x0

    def score_from_mean(self, x_t: Tensor, mean: Tensor, t: Tensor) -> Tensor:
        r"""The ratios in the module docstring; where :math:`\alpha_t = 1` (no noise) only
        :math:`x_0 = x_t` produces :math:`x_t` and every other ratio is 0."""
        alpha = self._alpha(per_token(t, x_t))[..., None]
        noiseless = alpha >= 1.0
        a = torch.where(noiseless, 0.0, self._snr(alpha))  # finite, also for the gradient
        mean = mean.to(torch.float64)
        mean_x = mean.gather(-1, x_t[..., None])
        # 1 - a mu_x / (1 + a), written to stay >= 0 when a is large
        base = (1.0 + a * (1.0 - mean_x).clamp_min(0.0)) / (1.0 + a)
        return torch.where(noiseless, 0.0, base + a * mean).scatter(-1, x_t[..., None], 1.0)

    def reverse_rates(self, x_t: Tensor, score: Tensor, t: Tensor) -> Tensor:
        rate = (self._beta(per_token(t, x_t)) / self.vocab_size)[..., None]
        score = score.to(torch.float64)
        # a zero ratio stays zero where the rate is infinite (alpha_t = 0)
        row = torch.where(score > 0, rate * score, 0.0).scatter(-1, x_t[..., None], 0.0)
        return row.scatter(-1, x_t[..., None], -row.sum(-1, keepdim=True))

    def score_posterior(self, x_t: Tensor, score: Tensor, s: Tensor, t: Tensor) -> Tensor:
        r"""Closed form of the analytic step: with :math:`\bar Q(s,t)^{-1} = \frac1k I +
        (1 - \frac1k)\frac JV`, :math:`p(y) \propto [\hat s_y - (1-k)\frac{\sum \hat s}{V}]^+
        \,(k\delta_{y x_t} + \frac{1-k}{V})` (a factor :math:`1/k` dropped). Raises where
        :math:`\alpha_t = 0 < \alpha_s` (:math:`k = 0`: the ratios carry no information), as
        the generic form does."""
        a_s, a_t = self._alpha(per_token(s, x_t)), self._alpha(per_token(t, x_t))
        singular = (a_t <= 0) & (a_s > 0)
        if bool(singular.any()):  # as the generic form: Q(s, t) cannot be inverted there
            index = tuple(int(i) for i in singular.nonzero()[0])
            raise ValueError(
                f"the analytic step from t = {float(per_token(t, x_t)[index])} to "
                f"s = {float(per_token(s, x_t)[index])} needs an invertible transition matrix; "
                f"Q(s, t) is singular (alpha_t = 0). Start below the singular time or use a "
                f"schedule with alpha_1 > 0")
        V = self.vocab_size
        keep = torch.where(a_s > 0, a_t / a_s.clamp_min(_TINY), torch.ones_like(a_t))[..., None]
        full = score.to(torch.float64).scatter(-1, x_t[..., None], 1.0)
        backward = (full - (1.0 - keep) * full.sum(-1, keepdim=True) / V).clamp_min(0.0)
        column = torch.where(torch.nn.functional.one_hot(x_t, V).bool(), keep + (1.0 - keep) / V,
                             (1.0 - keep) / V)
        probs = backward * column
        total = probs.sum(-1, keepdim=True)
        return torch.where(total > 0, probs / total.clamp_min(_TINY), probs)

    def score_entropy(self, x0: Tensor, x_t: Tensor, log_score: Tensor, t: Tensor) -> Tensor:
        t_ = per_token(t, x_t)
        V = self.vocab_size
        a = self._snr(self._alpha(t_))
        log_score = log_score.to(torch.float64)
        at_x = torch.nn.functional.one_hot(x_t, V).bool()
        score_sum = log_score.exp().masked_fill(at_x, 0.0).sum(-1)  # sum_{y != x_t} s_y
        log_sum = log_score.masked_fill(at_x, 0.0).sum(-1)  # sum_{y != x_t} log s_y
        log_at_x0 = log_score.gather(-1, x0[..., None]).squeeze(-1)
        same = x_t == x0
        log1p_a = torch.log1p(a)
        # sum_{y != x_t} r_y log s_y and sum_{y != x_t} (r_y log r_y - r_y)
        cross = torch.where(same, log_sum / (1.0 + a), log_sum + a * log_at_x0)
        entropy = torch.where(same, -(V - 1) * (log1p_a + 1.0) / (1.0 + a),
                              (1.0 + a) * log1p_a - (V - 1) - a)
        return self._beta(t_) / V * (score_sum - cross + entropy)


@ddkit.hookimpl
def register_processes(register):
    register("uniform", UniformProcess,
             summary="uniform-noise diffusion, q(x_t|x_0) = Cat(alpha x_0 + (1 - alpha)/V) (D3PM/UDLM)")
