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

With a vector-valued schedule (one :math:`\alpha_{t,v}` per clean token, GenMD4,
:attr:`ddkit.Schedule.vector_size`) a token's rates depend on its clean value :math:`v`: row
:math:`v` of every matrix uses :math:`\alpha_{t,v}`, the marginal gathers
:math:`\alpha_{t,x_0}`, and with the weights :math:`c_v = -\alpha'_{t,v}/(1-\alpha_{t,v})`
and :math:`b_v = \frac{\alpha_{s,v}-\alpha_{t,v}}{1-\alpha_{t,v}}`:

* posterior for :math:`x_t = m`: become :math:`j` w.p. :math:`b_j\mu_j`, stay masked w.p.
  :math:`\sum_v \mu_v(1-b_v)`, where :math:`\mu` estimates :math:`p(x_0 \mid x_t)` under the
  token-dependent masking (a time-dependent denoiser);
* continuous-time integrand at a mask
  :math:`c_{x_0}(-\log\mu_{x_0} - 1) + \sum_v c_v\mu_v` (MD4's vector form; equal
  :math:`\alpha_{t,v}` give the scalar one);
* discrete-time term: the KL between the two-outcome true posterior
  (:math:`x_0` w.p. :math:`b_{x_0}`, else the mask) and the posterior above.

The scalar-schedule code paths are the ones above, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import PositiveInt
from torch import Tensor

import ddkit
import ddkit.kernels
from ddkit.process import per_token, scaled_rates
from ddkit.registry import split_spec

_TINY = torch.finfo(torch.float64).tiny


class MaskedProcess(ddkit.Process):
    """Absorbing-state process with mask id ``V``."""

    capabilities = frozenset({"absorbing"})
    vector_schedules = True

    def __init__(self, vocab_size: PositiveInt, schedule: ddkit.Component("schedule") = "linear"):
        super().__init__(vocab_size, build_schedule(schedule, vocab_size))
        self.mask_id = self.vocab_size
        #: whether the schedule gives one alpha per clean token
        self.vector = self.schedule.vector_size is not None

    @property
    def num_states(self) -> int:
        return self.vocab_size + 1

    def _alpha(self, t: Tensor) -> Tensor:
        return self.schedule.alpha(torch.as_tensor(t, dtype=torch.float64))

    def _noised(self, t: Tensor) -> Tensor:
        r""":math:`1 - \alpha_t` from the schedule (without cancellation where it offers that)."""
        return self.schedule.one_minus_alpha(torch.as_tensor(t, dtype=torch.float64))

    def _alpha_of(self, t: Tensor, x: Tensor) -> Tensor:
        r""":math:`\alpha_t` of each token of ``x`` (``[B, N]``; for a vector schedule
        :math:`\alpha_{t, x}`, meaningful where ``x`` is clean)."""
        a = self._alpha(per_token(t, x))
        return self._at(a, x) if self.vector else a

    def _at(self, per_value: Tensor, x: Tensor) -> Tensor:
        """Entry ``x`` of the last axis (``[B, N, V]`` -> ``[B, N]``; clean ``x``)."""
        return per_value.gather(-1, x.clamp_max(self.vocab_size - 1)[..., None]).squeeze(-1)

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

    def _keep_rows(self, keep: Tensor, lost: Tensor) -> Tensor:
        """A vector schedule's matrix: row ``v`` keeps w.p. ``keep[..., v]`` and becomes the
        mask w.p. ``lost[..., v]`` (``1 - keep``, computed without cancellation)."""
        V, m = self.vocab_size, self.mask_id
        q = torch.zeros(*keep.shape[:-1], V + 1, V + 1, dtype=torch.float64, device=keep.device)
        q[..., :V, :V] = torch.diag_embed(keep)
        q[..., :V, m] = lost
        q[..., m, m] = 1.0
        return q

    def transition_matrix(self, s: Tensor, t: Tensor) -> Tensor:
        a_s, a_t = self._alpha(s), self._alpha(t)
        # if alpha_s = 0 every token is already masked at s and the clean rows are unreachable
        keep = torch.where(a_s > 0, a_t / a_s.clamp_min(_TINY), torch.ones_like(a_t))
        if self.vector:  # 1 - alpha_t/alpha_s = ((1 - alpha_t) - (1 - alpha_s)) / alpha_s
            lost = torch.where(a_s > 0, (self._noised(t) - self._noised(s)) / a_s.clamp_min(_TINY), 0.0)
            return self._keep_rows(keep, lost)
        return self._keep_matrix(keep)

    def marginal_matrix(self, t: Tensor) -> Tensor:
        # from the data, not from time 0: differs from transition_matrix(0, t) when alpha_0 < 1
        if self.vector:
            return self._keep_rows(self._alpha(t), self._noised(t))
        return self._keep_matrix(self._alpha(t))

    def _beta(self, t: Tensor) -> Tensor:
        r""":math:`\beta(t) = -\alpha'_t/\alpha_t`, finite (``α`` clipped at the smallest double)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return -self.schedule.alpha_prime(t) / self._alpha(t).clamp_min(_TINY)

    def rate_matrix(self, t: Tensor) -> Tensor:
        beta = self._beta(t)
        S, m = self.num_states, self.mask_id
        if self.vector:  # row v: beta_v (e_m - e_v); the mask row is 0
            rates = torch.zeros(*beta.shape[:-1], S, S, dtype=torch.float64, device=beta.device)
            rates[..., :m, :m] = torch.diag_embed(-beta)
            rates[..., :m, m] = beta
            return rates
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
        a = self._alpha_of(t, x0)
        probs = torch.nn.functional.one_hot(x0, self.num_states).to(torch.float64) * a[..., None]
        probs[..., self.mask_id] += self._at(self._noised(per_token(t, x0)), x0) if self.vector else 1.0 - a
        return probs

    def sample_marginal(self, x0: Tensor, t: Tensor, *, generator=None) -> Tensor:
        r""":math:`x_t = x_0` if :math:`u < \alpha_t` (:math:`\alpha_{t, x_0}`), else the mask."""
        a = self._alpha_of(t, x0)
        u = torch.rand(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)
        return ddkit.kernels.mask_noise(x0, a, u, mask_id=self.mask_id)

    def sample_complementary(self, x0: Tensor, t: Tensor, *, generator=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""Two noisings of ``x0`` whose masks are complements, for a lower-variance ELBO
        estimate: with one uniform :math:`u_n` per position, :math:`x^n_t = x^n_0` iff
        :math:`u_n < \alpha_t`, and :math:`x^n_{t'} = x^n_0` iff :math:`u_n \ge \alpha_t`, at
        the time :math:`t'` with :math:`\alpha_{t'} = 1 - \alpha_t` (each a draw of
        :math:`q(\cdot \mid x_0)` at its own time). ``t``: ``[B]`` or ``[B, N]``. Returns
        ``(x_t, x_t', t', w)`` with :math:`w = \alpha'_t / \alpha'_{t'}` (shaped like ``t``):
        :math:`t'` is not uniform when :math:`t` is (except for the linear schedule), and
        :math:`w` is the change of variables that makes :math:`w\,\ell(x_{t'}, t')` an
        unbiased draw of the same integral. Needs a scalar schedule with an inverse."""
        check_complementary(self)
        schedule = self.schedule
        alpha = self._alpha(t)
        # t' = 0 only when t = 1 exactly: kept above 0 so that its (empty) term stays finite
        t_other = schedule.inverse(1.0 - alpha).clamp(1e-12, 1.0)
        weight = schedule.alpha_prime(t) / schedule.alpha_prime(t_other).clamp_max(-1e-300)
        u = torch.rand(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)
        kept = u < per_token(alpha, x0)
        return x0.masked_fill(~kept, self.mask_id), x0.masked_fill(kept, self.mask_id), t_other, weight

    def posterior_probs(self, x_t: Tensor, mean: Tensor, s: Tensor, t: Tensor) -> Tensor:
        if self.vector:
            return self._vector_posterior_probs(x_t, mean, self._noised(per_token(s, x_t)),
                                                self._noised(per_token(t, x_t)))
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

    def _vector_posterior_probs(self, x_t: Tensor, mean: Tensor, n_s: Tensor, n_t: Tensor) -> Tensor:
        """``n_s``, ``n_t``: :math:`1 - \alpha_{s,v}` and :math:`1 - \alpha_{t,v}`."""
        denom = n_t.clamp_min(_TINY)
        mean = mean.to(torch.float64)
        probs = torch.zeros(*x_t.shape, self.num_states, dtype=torch.float64, device=x_t.device)
        probs[..., : self.vocab_size] = mean * (n_t - n_s) / denom
        probs[..., self.mask_id] = (mean * n_s / denom).sum(-1)
        clean = torch.nn.functional.one_hot(x_t, self.num_states).to(torch.float64)
        return torch.where((x_t == self.mask_id)[..., None], probs, clean)

    def _masked_nll(self, x0: Tensor, x_t: Tensor, log_mean: Tensor) -> Tensor:
        masked = x_t == self.mask_id
        nll = -torch.gather(log_mean, -1, x0[..., None]).squeeze(-1)
        # unmasked positions contribute nothing, even where log_mean is -inf (carry-over)
        return torch.where(masked, nll, torch.zeros_like(nll))

    def continuous_elbo(self, x0: Tensor, x_t: Tensor, log_mean: Tensor, t: Tensor) -> Tensor:
        t_ = per_token(t, x0)
        if self.vector:
            weight = -self.schedule.alpha_prime(t_) / self._noised(t_).clamp_min(_TINY)
            return self._vector_continuous_elbo(x0, x_t, log_mean, weight)
        weight = -self.schedule.alpha_prime(t_) / (1.0 - self._alpha(t_)).clamp_min(_TINY)
        return weight.to(log_mean.dtype) * self._masked_nll(x0, x_t, log_mean)

    def _vector_continuous_elbo(self, x0: Tensor, x_t: Tensor, log_mean: Tensor, weight: Tensor) -> Tensor:
        r""":math:`c_{x_0}(-\log\mu_{x_0} - 1) + \sum_v c_v\mu_v` at masks, 0 elsewhere."""
        masked = x_t == self.mask_id
        log_mean64 = log_mean.to(torch.float64)
        own = x0[..., None]
        # clean rows (carry-over, -inf off x_t) are replaced by a finite row: no inf * 0 in the graph
        log_mean64 = torch.where(masked[..., None], log_mean64, torch.zeros_like(log_mean64))
        expected_weight = (weight * log_mean64.exp()).sum(-1)
        terms = weight.gather(-1, own).squeeze(-1) * (-log_mean64.gather(-1, own).squeeze(-1) - 1.0) + expected_weight
        return torch.where(masked, terms, torch.zeros_like(terms)).to(log_mean.dtype)

    def discrete_elbo(self, x0: Tensor, x_t: Tensor, log_mean: Tensor, s: Tensor, t: Tensor) -> Tensor:
        if self.vector:
            n_s, n_t = self._noised(per_token(s, x0)), self._noised(per_token(t, x0))
            return self._vector_discrete_elbo(x0, x_t, log_mean, (n_t - n_s) / n_t.clamp_min(_TINY))
        a_s, a_t = self._alpha(per_token(s, x0)), self._alpha(per_token(t, x0))
        weight = (a_s - a_t) / (1.0 - a_t).clamp_min(_TINY)
        return weight.to(log_mean.dtype) * self._masked_nll(x0, x_t, log_mean)

    def _vector_discrete_elbo(self, x0: Tensor, x_t: Tensor, log_mean: Tensor, unmask: Tensor) -> Tensor:
        r"""KL of the true posterior (:math:`x_0` w.p. :math:`b_{x_0}`, else the mask) from the
        model's (:math:`j` w.p. :math:`b_j\mu_j`, the mask w.p. :math:`\sum_v\mu_v(1-b_v)`)."""
        masked = x_t == self.mask_id
        log_mean64 = log_mean.to(torch.float64)
        log_mean64 = torch.where(masked[..., None], log_mean64, torch.zeros_like(log_mean64))
        own = x0[..., None]
        true_unmask = unmask.gather(-1, own).squeeze(-1)
        model_unmask = true_unmask * log_mean64.gather(-1, own).squeeze(-1).exp()
        model_stay = (log_mean64.exp() * (1.0 - unmask)).sum(-1)
        true_stay = 1.0 - true_unmask
        kl = (torch.xlogy(true_unmask, true_unmask) - torch.xlogy(true_unmask, model_unmask)
              + torch.xlogy(true_stay, true_stay) - torch.xlogy(true_stay, model_stay))
        return torch.where(masked, kl, torch.zeros_like(kl)).to(log_mean.dtype)

    # -- the score (ratio) form, closed ----------------------------------------------------
    #
    # Only the mask has reverse rates: column m of R(t) is beta(t) on every clean row, the
    # column of a clean token is 0 off the diagonal (a clean token jumps only to the mask, the
    # mask row is 0). Each method equals the generic dense one of ddkit.Process, elementwise
    # in the per-token times (no loop over distinct times).

    def score_from_mean(self, x_t: Tensor, mean: Tensor, t: Tensor) -> Tensor:
        r"""At the mask :math:`s(m, t)_j = \frac{\alpha_t}{1-\alpha_t}\mu_j`; at a clean
        :math:`x_t` only :math:`x_0 = x_t` produces it, so :math:`s_j = \mu_{x_t}\delta_{j x_t}`
        (1 with the mean's carry-over). Clean tokens that cannot produce :math:`x_t` drop out:
        every one at the mask when :math:`\alpha_t = 1`, and :math:`x_t` itself when
        :math:`\alpha_t = 0`."""
        V = self.vocab_size
        t_ = per_token(t, x_t)
        if self.vector:  # alpha_{t, j} for every j
            a, noised = self._alpha(t_), self._noised(t_)
        else:
            a = self._alpha(t_)[..., None]
            noised = 1.0 - a
        masked = (x_t == self.mask_id)[..., None]
        likelihood = torch.where(masked, noised, a)  # q(x_t | x_0) of every x_0 that can produce x_t
        scale = torch.where(likelihood > 0, a / likelihood.clamp_min(_TINY), 0.0)
        scaled = mean.to(torch.float64) * scale  # [B, N, V]
        own = x_t.clamp_max(V - 1)[..., None]
        at_clean = torch.zeros_like(scaled).scatter(-1, own, scaled.gather(-1, own))
        return torch.where(masked, scaled, at_clean)

    def reverse_rates(self, x_t: Tensor, score: Tensor, t: Tensor) -> Tensor:
        r""":math:`\hat R_t(m \to j) = \beta(t)\, s_j` for clean :math:`j`, the diagonal
        minus their sum; a clean token has no reverse rate."""
        V, m = self.vocab_size, self.mask_id
        beta = self._beta(per_token(t, x_t))
        beta = beta if self.vector else beta[..., None]  # a vector schedule: beta_j(t) for every j
        score = score.to(torch.float64)
        masked = (x_t == m)[..., None]
        # a zero ratio stays zero where the rate is huge (alpha_t = 0)
        into = torch.where(masked & (beta > 0) & (score > 0), beta * score, 0.0)
        rates = torch.zeros(*x_t.shape, self.num_states, dtype=torch.float64, device=x_t.device)
        rates[..., :V] = into
        rates[..., m] = -into.sum(-1)
        return rates

    def score_posterior(self, x_t: Tensor, score: Tensor, s: Tensor, t: Tensor) -> Tensor:
        r"""Closed form of the analytic step: with :math:`k = \alpha_t/\alpha_s` (1 once
        :math:`\alpha_s = 0`), :math:`\bar Q(s,t)^{-1}` maps the ratios to
        :math:`\hat s_j/k` on clean :math:`j` and :math:`1 - \frac{1-k}{k}\sum_j \hat s_j` on
        the mask, so from the mask :math:`p(j) \propto (1-k)\,\hat s_j^+` and
        :math:`p(m) \propto [k - (1-k)\sum_j \hat s_j]^+` (a factor :math:`1/k` dropped); a
        clean token stays. Raises where :math:`\alpha_t = 0 < \alpha_s` (:math:`k = 0`), as
        the generic form does."""
        a_s, a_t = self._alpha(per_token(s, x_t)), self._alpha(per_token(t, x_t))
        singular = (a_t <= 0) & (a_s > 0)
        if bool(singular.any()):  # as the generic form: Q(s, t) cannot be inverted there
            index = tuple(int(i) for i in singular.nonzero()[0])[:2]  # [b, n] (and v for a vector schedule)
            raise ValueError(
                f"the analytic step from t = {float(per_token(t, x_t)[index])} to "
                f"s = {float(per_token(s, x_t)[index])} needs an invertible transition matrix; "
                f"Q(s, t) is singular (alpha_t = 0). Start below the singular time or use a "
                f"schedule with alpha_1 > 0")
        V, m = self.vocab_size, self.mask_id
        keep = torch.where(a_s > 0, a_t / a_s.clamp_min(_TINY), torch.ones_like(a_t))
        score = score.to(torch.float64)
        probs = torch.empty(*x_t.shape, self.num_states, dtype=torch.float64, device=x_t.device)
        if self.vector:  # per-token k_v: p(j) ~ s_j (1 - k_j)/k_j, p(m) ~ [1 - sum_j s_j (1 - k_j)/k_j]^+
            # (1 - k)/k = (alpha_s - alpha_t)/alpha_t; alpha_t > 0 where alpha_s > 0 (refused above)
            noised_s, noised_t = self._noised(per_token(s, x_t)), self._noised(per_token(t, x_t))
            odds = torch.where(a_s > 0, (noised_t - noised_s) / a_t.clamp_min(_TINY), 0.0)
            probs[..., :V] = odds * score.clamp_min(0.0)
            probs[..., m] = (1.0 - (odds * score).sum(-1)).clamp_min(0.0)
        else:
            probs[..., :V] = (1.0 - keep)[..., None] * score.clamp_min(0.0)
            probs[..., m] = (keep - (1.0 - keep) * score.sum(-1)).clamp_min(0.0)
        total = probs.sum(-1, keepdim=True)
        from_mask = torch.where(total > 0, probs / total.clamp_min(_TINY), probs)
        clean = torch.nn.functional.one_hot(x_t, self.num_states).to(torch.float64)
        return torch.where((x_t == m)[..., None], from_mask, clean)

    def score_entropy(self, x0: Tensor, x_t: Tensor, log_score: Tensor, t: Tensor) -> Tensor:
        r"""At the mask, with :math:`r = \frac{\alpha_t}{1-\alpha_t}` the true ratio of
        :math:`x_0`: :math:`\beta(t)\big(\sum_j s_j - r\log s_{x_0} + r\log r - r\big)`; 0 at
        a clean token (no reverse rate)."""
        t_ = per_token(t, x_t)
        a, beta = self._alpha(t_), self._beta(t_)
        log_score = log_score.to(torch.float64)
        if self.vector:
            return self._vector_score_entropy(x0, x_t, log_score, a, self._noised(t_), beta)
        ratio = a / (1.0 - a).clamp_min(_TINY)
        log_at_x0 = log_score.gather(-1, x0[..., None]).squeeze(-1)
        cross = torch.where(ratio > 0, ratio * log_at_x0, 0.0)
        terms = log_score.exp().sum(-1) - cross + torch.xlogy(ratio, ratio) - ratio
        return torch.where((x_t == self.mask_id) & (beta > 0), beta * terms, 0.0)

    def _vector_score_entropy(self, x0: Tensor, x_t: Tensor, log_score: Tensor, a: Tensor, noised: Tensor,
                              beta: Tensor) -> Tensor:
        r"""At the mask :math:`\sum_j \beta_j(t)(s_j - r_j\log s_j + r_j\log r_j - r_j)` with
        :math:`r_j = \delta_{j x_0}\frac{\alpha_{t,x_0}}{1-\alpha_{t,x_0}}`; 0 at a clean token."""
        own = x0[..., None]
        own_ratio = a.gather(-1, own) / noised.gather(-1, own).clamp_min(_TINY)
        ratio = torch.zeros_like(a).scatter(-1, own, own_ratio)
        cross = torch.where(ratio > 0, ratio * log_score, 0.0)
        terms = log_score.exp() - cross + torch.xlogy(ratio, ratio) - ratio
        total = torch.where(beta > 0, beta * terms, 0.0).sum(-1)
        return torch.where(x_t == self.mask_id, total, 0.0)

    def prior_kl(self, x0: Tensor) -> Tensor:
        r""":math:`\mathrm{KL}(q(x_1|x_0) \| \delta_m)`: zero when :math:`\alpha_1 = 0`,
        infinite otherwise (a shifted schedule never reaches the all-mask prior)."""
        a1 = self._alpha(torch.ones((), dtype=torch.float64))
        if self.vector:  # per token: alpha_{1, x_0}
            a1 = a1.detach().to(x0.device)[x0]
            return torch.where(a1 == 0.0, 0.0, float("inf")).to(torch.float64)
        value = 0.0 if float(a1) == 0.0 else float("inf")
        return torch.full(x0.shape, value, dtype=torch.float64, device=x0.device)


def build_schedule(spec: Any, vocab_size: int) -> ddkit.Schedule:
    """The process's schedule from a name, ``{name: ..., **params}`` or a built schedule; a
    schedule whose parameters include ``vocab_size`` (vector-valued: one alpha per token) and
    that was not given one gets the process's."""
    if isinstance(spec, (str, Mapping)):
        name, params = split_spec(spec)
        record = ddkit.get_registry().get("schedule", name)
        if "vocab_size" in record.params.model_fields and params.get("vocab_size") is None:
            return ddkit.build("schedule", {"name": name, **params, "vocab_size": vocab_size})
    return ddkit.build("schedule", spec)


def check_complementary(process: ddkit.Process) -> None:
    """A clear error unless ``process`` can draw complementary masks
    (:meth:`MaskedProcess.sample_complementary`): a masked process with a scalar, invertible
    schedule."""
    if "absorbing" not in process.capabilities or not hasattr(process, "sample_complementary"):
        raise ValueError(f"complementary_masks needs a masked process (sample_complementary); "
                         f"{type(process).__name__} is not one")
    schedule = process.schedule
    if schedule.vector_size is not None or not schedule.invertible:
        raise ValueError(f"complementary_masks needs a scalar schedule with an inverse; "
                         f"{type(schedule).__name__} is not one")


@ddkit.hookimpl
def register_processes(register):
    register("masked", MaskedProcess,
             summary="absorbing-state (mask id = V) diffusion, MD4/MDLM")
