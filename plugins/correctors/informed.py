r"""The informed corrector (Zhao, Shi, Chen, Druckmann, Mackey, Linderman 2024, "Informed
correctors for discrete diffusion models").

After a predictor step to time :math:`s`, a *hollow* denoiser (output at :math:`d` a function
of :math:`x^{-d}` only, e.g. ``model: {name: hollow}``) gives at every position the
leave-one-out conditional :math:`p_\theta(\cdot \mid x_s^{-d})` in one call. The corrector

1. scores every free clean position by the log-probability of its current token plus Gumbel
   noise at temperature :math:`\tau`,
   :math:`\mathrm{score}_d = \log p_\theta(x_s^d \mid x_s^{-d}) - \tau G_d`,
   :math:`G_d \sim \mathrm{Gumbel}(0, 1)` (masked and fixed positions are not candidates);
2. takes the ``k`` lowest scores — the least likely tokens; this draws ``k`` positions without
   replacement with probabilities :math:`\propto p_\theta(x_s^d \mid x_s^{-d})^{-1/\tau}`
   (Gumbel top-k); :math:`\tau = 0` is greedy, :math:`\tau = \infty` uniform;
3. replaces all of them at once by draws :math:`y^d \sim p_\theta(\cdot \mid x_s^{-d})`
   (float64; the draw may equal the current token).

Scores and draws are float64 without a float64 copy of the ``[B, N, V]`` logits: the scores
of the candidates in row chunks, the top-k choice through :func:`ddkit.kernels.commit_topk`,
and the targets of the chosen positions only, by the kernel backends' categorical draw (one
uniform per position for the Gumbel noise when :math:`\tau > 0`, one for the target).

Masked positions stay masked and the number of clean tokens is unchanged. Each correction is
one denoiser call (NFE), so a predictor with the corrector after every step costs two calls
per step; compare at equal NFE (half the steps). With the exact leave-one-out conditionals,
``k = 1`` and :math:`\tau = \infty` this is random-scan Gibbs sampling of the clean tokens
given the mask pattern, which leaves :math:`q_s` exactly invariant. The informed choice
(:math:`\tau < \infty`) and simultaneous updates (``k > 1``) trade that exactness for speed:
they move the least likely tokens first.

Defaults are the reference implementation's (``k = 1``, :math:`\tau = 1`); its experiments
sweep :math:`k \in \{1, 2, 4, 8, 16\}` and :math:`\tau \in \{0.1, 1, 2, 10, 1000\}`. The
corrector needs an absorbing process, the mean parameterization and a denoiser that declares
``hollow = True``; ``backend`` picks the kernel backend (identical samples on all). YAML::

    model: {name: hollow}
    sampler: {name: ancestral, steps: 32, corrector: {name: informed, k: 4, temperature: 1.0}}
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

import ddkit
from ddkit import kernels
from ddkit.categorical import rows_per_chunk
from ddkit.sampler import Backend


def check_hollow(state: ddkit.SamplerState) -> None:
    """A clear error unless the denoiser declares ``hollow = True`` and the parameterization
    is the mean."""
    check_hollow_model(state.calls.denoiser)
    predicts = state.calls.parameterization.predicts
    if predicts != "mean":
        raise ValueError(f"the informed corrector reads the hollow model's conditionals through the mean "
                         f"parameterization; this one predicts {predicts!r}")


def check_hollow_model(model) -> None:
    """A clear error unless ``model`` declares ``hollow = True``."""
    if not getattr(model, "hollow", False):
        raise ValueError(
            f"the informed corrector needs a hollow denoiser, whose output at position d does not depend on "
            f"x^d (declared by the attribute hollow = True, e.g. model: {{name: hollow}}); "
            f"{type(model).__name__} does not declare it")


def token_log_probs(logits: Tensor, tokens: Tensor) -> Tensor:
    """``log softmax(logits)[..., tokens]`` in float64 (``logits [..., V]``, ``tokens [...]``),
    computed in chunks of rows so that no float64 copy of all the logits is made."""
    V = logits.shape[-1]
    rows, index = logits.reshape(-1, V), tokens.reshape(-1)
    out = torch.empty(index.shape, dtype=torch.float64, device=logits.device)
    step = rows_per_chunk(rows.shape[0], V, logits.device)
    for start in range(0, rows.shape[0], step):
        chunk = rows[start:start + step].to(torch.float64)
        picked = chunk.gather(-1, index[start:start + step, None]).squeeze(-1)
        out[start:start + step] = picked - torch.logsumexp(chunk, dim=-1)
    return out.view(tokens.shape)


class InformedCorrector(ddkit.Corrector):
    requires = frozenset({"absorbing"})

    def __init__(self, k: Annotated[int, Field(ge=1, description="positions resampled per correction")] = 1,
                 temperature: Annotated[float, Field(ge=0.0, allow_inf_nan=True,  # inf: uniform, a meant value
                                                     description="Gumbel temperature of the choice: "
                                                     "0 greedy, inf uniform")] = 1.0,
                 backend: Backend = "auto", **common):
        super().__init__(**common)
        self.backend = backend
        if math.isnan(temperature):
            raise ValueError("temperature must be a number >= 0 (inf: uniform choice), got nan")
        self.k = int(k)
        self.temperature = float(temperature)

    def __repr__(self):
        return f"InformedCorrector(k={self.k}, temperature={self.temperature}, every={self.every})"

    def check_model(self, model):
        check_hollow_model(model)

    def correct(self, state):
        check_hollow(state)
        x, process = state.x, state.process
        candidates = (x != process.mask_id) & ~state.fixed
        if not bool(candidates.any()):
            return
        logits = state.calls.mean_logits(x, state.t)  # hollow: p(. | x^-d) at every position
        current = torch.zeros(x.shape, dtype=torch.float64, device=x.device)  # read at candidates only
        current[candidates] = token_log_probs(logits[candidates], x[candidates])
        # priority = -score: the k highest priorities are the k lowest scores
        if self.temperature == 0.0:
            priority = -current
        else:
            u = torch.rand(x.shape, generator=state.generator, dtype=torch.float64, device=x.device)
            u = u.clamp_min(torch.finfo(torch.float64).tiny)  # a finite Gumbel draw even at u = 0
            gumbel = -torch.log(-torch.log(u))
            priority = gumbel if math.isinf(self.temperature) else self.temperature * gumbel - current
        chosen = kernels.commit_topk(priority, candidates, self.k, backend=self.backend)
        u_token = torch.rand(x.shape, generator=state.generator, dtype=torch.float64, device=x.device)
        new = x.clone()
        new[chosen] = kernels.categorical(logits[chosen], u_token[chosen], backend=self.backend)  # float64, per row
        state.x = new


@ddkit.hookimpl
def register_correctors(register):
    register("informed", InformedCorrector,
             summary="Zhao et al.: resample the k least likely clean tokens (Gumbel, temperature) from a hollow model")
