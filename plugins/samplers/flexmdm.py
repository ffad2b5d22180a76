r"""FlexMDM samplers of the ``insertion`` process: sequences grow from the empty sequence by
inserting masks and unmasking them (``flexmdm_euler``, ``flexmdm_tau_leaping``).

On a uniform or cosine grid :math:`1 = t_0 > \dots > t_T = 0` (:func:`ddkit.time_grid`), step
:math:`t \to s` calls the two-headed denoiser once at :math:`(x_t, t)`
(:meth:`InsertionProcess.predict <ddkit.plugins.processes.insertion.InsertionProcess.predict>`)
and then

1. **unmasks**: each mask becomes a token w.p.
   :math:`p_{unm} = (\alpha^{unm}_s - \alpha^{unm}_t)/(1 - \alpha^{unm}_t)`, drawn from the
   token head (padding excluded) filtered by temperature / top-k / top-p, in float64
   (:func:`ddkit.steps.masked_step`); on the last step :math:`p_{unm} = 1`: every mask left is
   unmasked;
2. **inserts** (not on the last step) masks into the slots :math:`j = 0..|x_t|`: each absent
   token is inserted w.p. :math:`p_{ins} = (\alpha^{ins}_s - \alpha^{ins}_t)/(1 - \alpha^{ins}_t)`,
   so slot :math:`j` expects :math:`\lambda_j = p_{ins}\,\hat g_j` insertions:

   - ``flexmdm_euler``: one insertion w.p. :math:`\min(1, \lambda_j)` (FlexMDM's Euler
     sampler);
   - ``flexmdm_tau_leaping``: :math:`\mathrm{Poisson}(\lambda_j)` insertions.

   The tokens after slot :math:`j` move right by the insertions before them.

For linear schedules :math:`p = (t - s)\,w(t)` with the hazard :math:`w(t) = 1/t`: FlexMDM's
Euler step. With the exact denoiser the samples converge to the data law as the grid is
refined (the error is first order in the step). Insertions of the last interval are not made
(they would need a further call): part of that error.

**Maximum length.** Samples are ``[B, N]`` with ``N`` the requested ``length``, padded with
the process's ``pad_id``; ``SampleResult.lengths`` holds their lengths. When a step proposes
more insertions than a sequence has room for, ``overflow: truncate`` (default) keeps as many
as fit, chosen uniformly at random among the proposed ones (for Poisson counts the kept ones
are again multinomial over the slots), and counts what was dropped in ``SampleResult.info``:
``truncated_insertions`` (insertions dropped) and ``truncated_sequences`` (sequences that
lost some); ``overflow: error`` raises instead. Sequences are never silently cut.

NFE is the number of steps. Prompts are not supported: sampling starts from the empty
sequence. Example (YAML): ``sampler: {name: flexmdm_tau_leaping, steps: 256}``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

import ddkit
from ddkit import steps
from ddkit.kernels import TokenFilter
from ddkit.sampler import Backend, Grid, Steps, Temperature, TopK, TopP, time_grid

Overflow = Literal["truncate", "error"]


def insert_masks(x: Tensor, lengths: Tensor, counts: Tensor, *, mask_id: int, pad_id: int) -> Tensor:
    """``x`` (``[B, N]``, lengths ``[B]``) with ``counts[b, j]`` masks inserted before token
    ``j`` (slot ``lengths[b]``: after the last token); the new lengths must fit in ``N``."""
    B, N = x.shape
    index = torch.arange(N, device=x.device)
    new_lengths = lengths + counts.sum(-1)
    if bool((new_lengths > N).any()):
        raise ValueError(f"insertions beyond the width {N}: lengths {new_lengths.max().item()}")
    out = torch.where(index < new_lengths[:, None], torch.full_like(x, mask_id), torch.full_like(x, pad_id))
    # token j moves right by the insertions in slots 0..j; padding goes to a spare column
    target = torch.where(index < lengths[:, None], index + counts[:, :N].cumsum(-1), N)
    wide = torch.cat([out, out[:, :1]], dim=1).scatter(1, target, x)
    return wide[:, :N]


class FlexMDMSampler(ddkit.Sampler):
    """Base of the FlexMDM samplers (module docstring); subclasses draw the insertion counts."""

    requires = frozenset({"insertion"})
    capabilities = frozenset({"variable_length"})
    #: how a slot's insertions are drawn from its expected count
    counts: ClassVar[Literal["bernoulli", "poisson"]]

    def __init__(self, steps: Steps = 128, grid: Grid = "uniform", temperature: Temperature = 1.0,
                 top_k: TopK = None, top_p: TopP = None,
                 overflow: Annotated[Overflow, Field(
                     description="insertions beyond the maximum length: truncate (counted in info) or error")
                 ] = "truncate",
                 backend: Backend = "auto"):
        self.steps, self.grid = int(steps), grid
        self.tokens = TokenFilter(temperature, top_k, top_p)
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.overflow = overflow
        self.backend = backend

    def sample(self, denoiser, process, *, num_samples: int | None = None, length: int | None = None,
               prompt: Tensor | None = None, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, record_trajectory: bool = False,
               parameterization: ddkit.Parameterization | None = None) -> ddkit.SampleResult:
        """``num_samples`` sequences of at most ``length`` tokens, padded to ``length``; the
        result carries their ``lengths``. ``parameterization`` is accepted for the common
        signature and not used: the denoiser's heads are read directly."""
        if prompt is not None:
            raise ValueError(f"{type(self).__name__} generates from the empty sequence; prompts are not supported")
        self.check_process(process)
        process.check_denoiser(denoiser)
        result = super().sample(denoiser, process, num_samples=num_samples, length=length, generator=generator,
                                device=device, record_trajectory=record_trajectory,
                                parameterization=parameterization)
        result.lengths = process.lengths(result.tokens)
        return result

    def start(self, state: ddkit.SamplerState) -> None:
        process, x = state.process, state.x
        grid = time_grid(self.steps, self.grid, device=x.device)
        t, s = grid[:-1], grid[1:]
        state.scratch.update(
            grid=grid,
            p_unmask=process.unmasking_probability(t, s),
            p_insert=process.insertion_probability(t, s),
            lengths=torch.zeros(x.shape[0], dtype=torch.long, device=x.device),
            truncated=torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))
        state.info.update(truncated_insertions=0, truncated_sequences=0)

    def finished(self, state: ddkit.SamplerState) -> bool:
        return state.step >= self.steps

    def step(self, state: ddkit.SamplerState) -> None:
        process, scratch, i = state.process, state.scratch, state.step
        B, N = state.x.shape
        t = scratch["grid"][i].expand(B)
        lengths = scratch["lengths"]
        pred = process.predict(state.calls.denoiser, state.x, lengths, t)
        state.calls.nfe += state.calls.evaluations_per_call
        x = steps.masked_step(state, pred.token_logits, float(scratch["p_unmask"][i]), tokens=self.tokens,
                              backend=self.backend)
        if i < self.steps - 1:  # the last step only unmasks
            expected = float(scratch["p_insert"][i]) * pred.expected_gaps
            counts = self.draw_counts(expected, state.generator)
            counts = self.fit(counts, lengths, N, state)
            x = insert_masks(x, lengths, counts, mask_id=process.mask_id, pad_id=process.pad_id)
            scratch["lengths"] = lengths + counts.sum(-1)
        state.x = x
        state.t = scratch["grid"][i + 1].expand(B)

    def draw_counts(self, expected: Tensor, generator: torch.Generator | None) -> Tensor:
        """Insertions per slot (``[B, N + 1]`` long) from their expected numbers."""
        if self.counts == "bernoulli":
            u = torch.rand(expected.shape, generator=generator, dtype=torch.float64, device=expected.device)
            return (u < expected.clamp(max=1.0)).long()
        return torch.poisson(expected, generator=generator).long()

    def fit(self, counts: Tensor, lengths: Tensor, width: int, state: ddkit.SamplerState) -> Tensor:
        """``counts`` with each sequence's insertions cut to the room it has (``overflow``)."""
        room = width - lengths
        total = counts.sum(-1)
        over = (total > room).nonzero().flatten().tolist()
        if not over:
            return counts
        if self.overflow == "error":
            b = over[0]
            raise ValueError(f"sequence {b} would grow from {int(lengths[b])} to {int(lengths[b] + total[b])} "
                             f"tokens, above the maximum length {width} (the sample length); sample with a "
                             f"larger length or overflow: truncate")
        counts = counts.clone()
        slots = torch.arange(counts.shape[1], device=counts.device)
        for b in over:  # keep a uniformly random subset of the proposed insertions
            events = slots.repeat_interleave(counts[b])
            keep = events[torch.randperm(events.numel(), generator=state.generator, device=counts.device)[:room[b]]]
            counts[b] = torch.bincount(keep, minlength=counts.shape[1])
        state.info["truncated_insertions"] += int((total - room).clamp_min(0).sum())
        truncated = state.scratch["truncated"]
        state.info["truncated_sequences"] += int((~truncated[over]).sum())
        truncated[over] = True
        return counts


class FlexMDMEuler(FlexMDMSampler):
    counts = "bernoulli"


class FlexMDMTauLeaping(FlexMDMSampler):
    counts = "poisson"


@ddkit.hookimpl
def register_samplers(register):
    register("flexmdm_euler", FlexMDMEuler,
             summary="FlexMDM Euler: from the empty sequence, at most one insertion per slot per step")
    register("flexmdm_tau_leaping", FlexMDMTauLeaping,
             summary="FlexMDM tau-leaping: from the empty sequence, Poisson insertions per slot")
