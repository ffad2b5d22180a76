r"""The sampler protocol: from a denoiser and a process to samples.

A sampler walks the reverse process from :math:`t = 1` (the prior) to :math:`t = 0`. The walk
is written once, in :meth:`Sampler.sample`; a sampler contributes its **step**::

    state = SamplerState(prior draw with the prompt written in, t = 1, ...)
    sampler.start(state)                      # per-run set-up (a time grid, checks)
    while not sampler.finished(state):
        sampler.step(state)                   # t -> s: new tokens, new state.t
        state.step += 1
        if a corrector is due and sampling goes on:
            corrector.correct(state)          # at the same time s
        record state.x in the trajectory
    return state.result()                     # SampleResult with the NFE

Shared pieces, so every sampler behaves the same way:

* the prompt: a ``prompt`` entry in ``0..V-1`` is *fixed* (prefix or infill) and never
  changes; an entry ``-1`` (or the mask id) is generated (:meth:`Sampler.initial_state`);
* :class:`DenoiserCalls` calls the denoiser through the parameterization
  (:meth:`~DenoiserCalls.log_mean`, :meth:`~DenoiserCalls.mean_logits`,
  :meth:`~DenoiserCalls.log_score`), counts the number of function evaluations (NFE) and
  reuses the last output when the tokens did not change and the output cannot depend on
  ``t``;
* :class:`SamplerState` carries what a step needs and what it leaves for the next one
  (confidences, a cache slot for KV caches, per-run scratch values);
* composition points, each a plugin kind with its own hook: a :class:`Corrector` runs after
  a predictor step at the same time; an :class:`UnmaskingRule` decides, for an absorbing
  process, which masked positions commit and which clean ones are remasked;
* the parameters samplers share are public annotated types (:data:`Steps`,
  :data:`Temperature`, ...) and base classes (:class:`TokenSampler`, :class:`GridSampler`,
  :class:`TransitionSampler`), so a sampler declares each of its parameters once, in its
  ``__init__`` signature, and its YAML section is validated from it
  (:func:`ddkit.params_model`);
* every sampler returns a :class:`SampleResult` that reports its NFE.

Samplers declare the process capabilities they need in ``requires`` (e.g. ``"absorbing"``);
:meth:`Sampler.check_process` turns a mismatch into a clear error. A sampler written
against the earlier protocol, which overrides :meth:`Sampler.sample` itself, keeps working.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import AfterValidator, Field
from torch import Tensor

from .denoiser import Denoiser
from .kernels import AUTO, TokenFilter, any_equal, check_backend_name
from .parameterization import Parameterization
from .process import Process
from .registry import Component, build

FREE = -1  #: prompt value of a position to generate

Grid = Literal["uniform", "cosine"]

# -- the parameters samplers share (annotated types for ``__init__`` signatures) ----------

#: number of steps of a discrete-time sampler's grid
Steps = Annotated[int, Field(ge=1, description="number of steps of the time grid")]
#: sampling temperature; 0 takes the most likely token
Temperature = Annotated[float, Field(ge=0.0, allow_inf_nan=False, description="0 means argmax")]
#: keep the k most likely tokens (None: off)
TopK = Annotated[int | None, Field(ge=1, description="keep the k most likely tokens")]
#: keep the smallest set of most likely tokens whose probability reaches p (None: off)
TopP = Annotated[float | None, Field(gt=0.0, le=1.0, description="nucleus (top-p) filter")]
#: kernel backend of the hot step: ``auto``, ``torch``, ``numba`` or an installed one
Backend = Annotated[str, AfterValidator(check_backend_name),
                    Field(description="kernel backend: auto, torch, numba or an installed one")]
#: the parameterization (name, ``{name: ..., ...}`` or a built object)
ParameterizationSpec = Component("parameterization")
#: an optional corrector applied after predictor steps (``{name: ..., every: ...}``)
CorrectorSpec = Component("corrector")
#: the unmasking / remasking rule of an absorbing process
UnmaskingRuleSpec = Component("unmasking_rule")
#: a sampler inside another (e.g. the inner sampler of semi-autoregressive blocks)
SamplerSpec = Component("sampler")


@dataclass
class SampleResult:
    """Samples ``tokens`` (``[B, N]``), the number of denoiser calls ``nfe``, the number of
    sampler ``steps`` taken, the states after every step if recorded (first entry: the
    initial state), and sampler-specific counts in ``info``. A variable-length sampler
    returns its sequences padded to ``N`` and their ``lengths`` (``[B]`` long; ``None`` for
    fixed-length samplers)."""

    tokens: Tensor
    nfe: int
    steps: int
    trajectory: list[Tensor] | None = None
    fixed: Tensor | None = field(default=None, repr=False)
    info: dict[str, Any] = field(default_factory=dict)
    lengths: Tensor | None = None


def time_grid(num_steps: int, grid: Grid = "uniform", *, dtype: torch.dtype = torch.float64,
              device: torch.device | str | None = None) -> Tensor:
    r"""Times :math:`t(T) = 1 > \dots > t(0) = 0`, returned in the order a sampler visits them
    (``num_steps + 1`` entries, decreasing).

    * ``uniform``: :math:`t(i) = i/T`;
    * ``cosine`` (MD4): :math:`t(i) = \cos(\frac{\pi}{2}(1 - i/T))`, which spends more steps
      near :math:`t = 0` (with the linear schedule it acts like the cosine schedule)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    i = torch.arange(num_steps, -1, -1, dtype=dtype, device=device) / num_steps
    if grid == "uniform":
        return i
    if grid == "cosine":
        t = torch.cos(math.pi / 2 * (1 - i))
        t[0], t[-1] = 1.0, 0.0  # exact endpoints: cos(pi/2) is 6e-17, not 0
        return t
    raise ValueError(f"unknown time grid {grid!r}; use 'uniform' or 'cosine'")


class DenoiserCalls:
    r"""The denoiser seen through a parameterization, with the count of network evaluations
    ``nfe`` (one per call, or the denoiser's ``evaluations_per_call``).

    :meth:`log_mean`, :meth:`mean_logits` and :meth:`log_score` call the parameterization's
    method of the same name. With ``cache=True`` a call with the same method and the same
    ``x`` as the previous one returns the previous output without calling the denoiser, where
    that output cannot depend on ``t``: the mean and its logits for a parameterization without
    time conditioning, the log score only for one that predicts the score itself without time
    conditioning (ratios derived from a mean depend on ``t`` through the process).

    Calling the object itself is :meth:`log_mean` (the form samplers written against the
    earlier protocol use)."""

    def __init__(self, denoiser: Denoiser, process: Process, parameterization: Parameterization,
                 *, cache: bool = False):
        self.denoiser = denoiser
        self.process = process
        self.parameterization = parameterization
        self.cache = cache and not parameterization.time_conditioning
        #: network evaluations per call, as the denoiser declares (``ddkit.Denoiser``)
        self.evaluations_per_call = int(getattr(denoiser, "evaluations_per_call", 1))
        self.nfe = 0
        self._last: tuple[str, Tensor, int | None, Tensor] | None = None

    def log_mean(self, x: Tensor, t: Tensor) -> Tensor:
        r""":math:`\log \mu_\theta(x, t)`, ``[B, N, V]``."""
        return self._call("log_mean", x, t, cacheable=True)

    def mean_logits(self, x: Tensor, t: Tensor) -> Tensor:
        r"""Logits of :math:`\mu_\theta(x, t)` without the carry-over at clean positions
        (:meth:`ddkit.Parameterization.mean_logits`), ``[B, N, V]``."""
        return self._call("mean_logits", x, t, cacheable=True)

    def log_score(self, x: Tensor, t: Tensor) -> Tensor:
        r""":math:`\log s_\theta(x, t)`, ``[B, N, V]`` float64."""
        return self._call("log_score", x, t, cacheable=self.parameterization.predicts == "score")

    __call__ = log_mean

    def _call(self, method: str, x: Tensor, t: Tensor, *, cacheable: bool) -> Tensor:
        if torch.is_grad_enabled():  # a sampler's walk already runs without; a direct call may not
            with torch.no_grad():
                return self._call(method, x, t, cacheable=cacheable)
        cache = self.cache and cacheable
        if cache and self._last is not None:
            last_method, last_x, version, out = self._last
            # the previous input, kept by reference, is valid while not modified in place
            # (its version counter unchanged); inference tensors have none and were copied
            unchanged = version is None or last_x._version == version
            if last_method == method and unchanged and (x is last_x or torch.equal(last_x, x)):
                return out
        out = getattr(self.parameterization, method)(self.denoiser, x, t, self.process)
        self.nfe += self.evaluations_per_call
        if cache:
            self._last = (method, x.clone(), None, out) if x.is_inference() else (method, x, x._version, out)
        return out


@dataclass
class SamplerState:
    """What a sampler step reads and writes.

    * ``x`` (``[B, N]``): the current tokens; ``fixed``: the prompt's positions (clean
      tokens), never changed;
    * ``t``: the current time, ``[B]`` float64 (1 at the start); ``step``: steps taken;
      ``previous_t``: the time before the last step (``None`` before the first), so that a
      corrector sees the predictor's step :math:`t \to s` as ``(previous_t, t)``;
    * ``process``, ``calls`` (:class:`DenoiserCalls`: ``calls.nfe`` is the NFE so far) and
      ``generator``: what a step draws with;
    * ``confidence``: optional per-position data (e.g. the probability a token had when it
      was unmasked); ``cache``: an optional slot for a KV cache;
    * ``scratch``: per-run values a sampler computes once in :meth:`Sampler.start` (a time
      grid, per-step probabilities); samplers keep them here, not on ``self``, so that one
      sampler object can run several samplings;
    * ``trajectory``: the states after every step, when recorded (first: the initial state);
    * ``info``: counts a sampler reports beside the NFE (e.g. KV-cache commit passes).
    """

    x: Tensor
    fixed: Tensor
    t: Tensor
    process: Process
    calls: DenoiserCalls
    generator: torch.Generator | None = None
    step: int = 0
    previous_t: Tensor | None = None
    confidence: Tensor | None = None
    cache: Any = None
    scratch: dict[str, Any] = field(default_factory=dict)
    trajectory: list[Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def nfe(self) -> int:
        return self.calls.nfe

    def free_masked(self) -> Tensor:
        """``[B, N]`` bool: positions that are masked and not fixed (absorbing processes)."""
        return (self.x == self.process.mask_id) & ~self.fixed

    def result(self) -> SampleResult:
        return SampleResult(tokens=self.x, nfe=self.calls.nfe, steps=self.step,
                            trajectory=self.trajectory, fixed=self.fixed, info=self.info)


class Corrector:
    r"""A corrector: after a predictor step to time :math:`s`, moves ``state.x`` with a
    kernel that should leave the marginal :math:`q_s` invariant (forward–backward, Gibbs /
    informed, ...), at the same time. It runs every ``every`` predictor steps and never after
    the last one. Each denoiser call it makes goes through ``state.calls`` and counts in NFE.

    Subclasses implement :meth:`correct` and take ``**kwargs`` in ``__init__`` (passed on
    here) so that ``every`` stays a parameter of theirs."""

    #: process capabilities this corrector needs
    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, every: Annotated[int, Field(ge=1, description="run after every k-th predictor step")] = 1):
        self.every = int(every)

    def correct(self, state: SamplerState) -> None:
        """Update ``state.x`` (and whatever else it keeps) at time ``state.t``."""
        raise NotImplementedError

    def check_model(self, model: Any) -> None:
        """Raise ``ValueError`` if this corrector cannot work with ``model`` (e.g. a capability
        it needs and the model does not declare); its sampler's :meth:`Sampler.check_model`
        calls it before any step. By default every model is accepted."""


class UnmaskingRule:
    r"""For an absorbing process, one grid step :math:`t \to s` of a masked sampler: which
    free masked positions commit to a token (and which token), and which clean ones are
    masked again. The rule calls the denoiser itself (``state.calls``: the carry-over mean,
    :meth:`DenoiserCalls.log_mean`, or the cheaper :meth:`DenoiserCalls.mean_logits` when only
    masked rows are read) and returns the new tokens; fixed positions must not change.

    ``tokens`` carries the sampler's temperature / top-k / top-p, ``argmax`` says whether to
    take the most likely token (the sampler's ``final_argmax`` on the last step)."""

    requires: ClassVar[frozenset[str]] = frozenset({"absorbing"})
    #: whether the rule draws from the process's posterior (then a sampler may use the
    #: posterior of a non-absorbing process in its place)
    is_posterior: ClassVar[bool] = False
    #: whether the rule may mask clean tokens again: then a sampler runs all its steps
    #: instead of stopping once nothing is masked
    remasks: bool = False

    def start(self, state: SamplerState, grid: Tensor) -> None:
        """Per-run set-up (e.g. per-step probabilities over ``grid``, kept in ``state.scratch``)."""

    def step(self, state: SamplerState, i: int, s: Tensor, t: Tensor, *, last: bool,
             tokens: TokenFilter, argmax: bool, backend: str) -> Tensor:
        raise NotImplementedError


class Sampler:
    """Base class: the walk from the prior to data (module docstring).

    A sampler implements :meth:`step` and, where needed, :meth:`start` and :meth:`finished`
    (by default it stops once no free masked position remains, which suits samplers of
    absorbing processes). Its ``parameterization`` (default: the mean without time
    conditioning) is replaced by the one passed to :meth:`sample`; its ``corrector``, if any,
    runs after steps. ``cache_outputs`` lets :class:`DenoiserCalls` reuse time-independent
    outputs."""

    #: process capabilities this sampler needs
    requires: ClassVar[frozenset[str]] = frozenset()
    parameterization: Parameterization | None = None
    corrector: Corrector | None = None
    cache_outputs: bool = False
    #: the kernel backend of the sampler's steps (:mod:`ddkit.kernels`), ``auto`` by default
    backend: str = AUTO

    def sample(self, denoiser: Denoiser, process: Process, *, num_samples: int | None = None,
               length: int | None = None, prompt: Tensor | None = None,
               generator: torch.Generator | None = None,
               device: torch.device | str | None = None,
               record_trajectory: bool = False,
               parameterization: Parameterization | None = None) -> SampleResult:
        """Draw ``num_samples`` sequences of ``length`` tokens, or complete ``prompt``
        (``[B, N]``; entries ``-1`` or the mask id are generated, others kept).
        ``parameterization`` (a built object) overrides the sampler's own, e.g. the one a
        pipeline trained its model with."""
        self.check_process(process)
        self.check_model(denoiser)
        parameterization = parameterization or self.parameterization or build("parameterization", "mean")
        x, fixed = self.initial_state(process, num_samples=num_samples, length=length,
                                      prompt=prompt, generator=generator, device=device)
        state = SamplerState(
            x=x, fixed=fixed, t=torch.ones(x.shape[0], dtype=torch.float64, device=x.device),
            process=process, generator=generator,
            calls=DenoiserCalls(denoiser, process, parameterization, cache=self.cache_outputs),
            trajectory=[x.clone()] if record_trajectory else None)
        with torch.no_grad():
            self.run(state)
        return state.result()

    def run(self, state: SamplerState) -> None:
        """The walk on a prepared state: :meth:`start`, then :meth:`step` (with the corrector
        when due) until :meth:`finished`, recording the trajectory. A wrapper (e.g. semi-
        autoregressive blocks) runs an inner sampler on a state of its own making."""
        self.start(state)
        while not self.finished(state):
            state.previous_t = state.t.clone()
            self.step(state)
            state.step += 1
            corrector = self.corrector
            if corrector is not None and state.step % corrector.every == 0 and not self.finished(state):
                corrector.correct(state)
            if state.trajectory is not None:
                state.trajectory.append(state.x.clone())

    def start(self, state: SamplerState) -> None:
        """Per-run set-up before the first step."""

    def finished(self, state: SamplerState) -> bool:
        """Whether to stop; by default once no masked position remains (fixed positions hold
        clean tokens, so these are the free masked ones). A sampler for processes without a
        mask implements its own."""
        if state.process.mask_id is None:
            raise NotImplementedError(f"{type(self).__name__} must implement finished() for a process "
                                      f"without a mask ({type(state.process).__name__})")
        return not any_equal(state.x, state.process.mask_id, backend=self.backend)

    def step(self, state: SamplerState) -> None:
        """One step: update ``state.x`` and ``state.t``."""
        raise NotImplementedError(f"{type(self).__name__} implements neither step() nor sample()")

    def check_process(self, process: Process) -> None:
        if not getattr(process, "factorised", True) and not self.requires & process.capabilities:
            raise ValueError(f"sampler {type(self).__name__} samples processes factorised over positions; "
                             f"{type(process).__name__} is not (capabilities {sorted(process.capabilities)}): "
                             f"use a sampler that requires one of them")
        for who, requires in ((f"sampler {type(self).__name__}", self.requires),
                              (f"corrector {type(self.corrector).__name__}",
                               self.corrector.requires if self.corrector is not None else frozenset())):
            missing = requires - process.capabilities
            if missing:
                raise ValueError(
                    f"{who} needs a process with {sorted(missing)}; "
                    f"{type(process).__name__} has {sorted(process.capabilities) or 'none'}"
                )

    def check_model(self, model: Any) -> None:
        """Raise ``ValueError`` if this sampler cannot sample ``model`` (a capability the model
        does not declare, a block length that differs); pipelines call it when they are built,
        before any training, and :meth:`sample` before the walk. By default it asks the
        corrector (:meth:`Corrector.check_model`)."""
        if self.corrector is not None:
            self.corrector.check_model(model)

    @classmethod
    def takes_parameterization(cls) -> bool:
        """Whether :meth:`sample` accepts ``parameterization=`` (samplers on this protocol
        do; one that overrides ``sample`` with the earlier signature may not)."""
        return "parameterization" in inspect.signature(cls.sample).parameters

    @staticmethod
    def initial_state(process: Process, *, num_samples: int | None, length: int | None,
                      prompt: Tensor | None, generator: torch.Generator | None,
                      device: torch.device | str | None) -> tuple[Tensor, Tensor]:
        """``(x, fixed)``: a prior draw with the prompt's fixed tokens written in, and the
        boolean mask of fixed positions."""
        if prompt is None:
            if num_samples is None or length is None:
                raise ValueError("give either prompt or both num_samples and length")
            if num_samples < 1 or length < 1:
                raise ValueError(f"num_samples and length must be >= 1, got {num_samples}, {length}")
            shape = (num_samples, length)
            fixed = torch.zeros(shape, dtype=torch.bool, device=device)
            prompt = torch.full(shape, FREE, dtype=torch.long, device=device)
        else:
            if prompt.dim() != 2 or prompt.dtype != torch.long:
                raise ValueError(f"prompt must be a LongTensor [B, N], got {prompt.dtype} {tuple(prompt.shape)}")
            if num_samples is not None and num_samples != prompt.shape[0]:
                raise ValueError(f"num_samples={num_samples} disagrees with prompt batch {prompt.shape[0]}")
            if length is not None and length != prompt.shape[1]:
                raise ValueError(f"length={length} disagrees with prompt length {prompt.shape[1]}")
            free = (prompt == FREE) | (prompt == (process.mask_id if process.mask_id is not None else FREE))
            bad = ~free & ((prompt < 0) | (prompt >= process.vocab_size))
            if bool(bad.any()):
                raise ValueError(f"prompt entries must be in 0..{process.vocab_size - 1}, -1 or the mask id")
            device = prompt.device if device is None else device
            prompt = prompt.to(device)
            fixed = ~free.to(device)
        x = process.sample_prior(tuple(prompt.shape), generator=generator, device=device)
        return torch.where(fixed, prompt, x), fixed


class TokenSampler(Sampler):
    """A sampler that draws tokens from the model's distribution, filtered by temperature,
    top-k and top-p (``self.tokens``, a :class:`ddkit.kernels.TokenFilter`)."""

    def __init__(self, temperature: Temperature = 1.0, top_k: TopK = None, top_p: TopP = None,
                 parameterization: ParameterizationSpec = "mean"):
        self.tokens = TokenFilter(temperature, top_k, top_p)
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.parameterization = build("parameterization", parameterization)


class GridSampler(TokenSampler):
    r"""A discrete-time sampler: ``steps`` on a uniform or cosine grid (:func:`time_grid`);
    step ``i`` goes from :math:`t = ` ``grid[i]`` to :math:`s = ` ``grid[i + 1]``, the last
    one to data (``final_argmax``: take the most likely token there). ``cache``: reuse a
    time-independent denoiser output while the tokens do not change. ``corrector``: run one
    after predictor steps.

    It stops after ``steps`` steps, and, for an absorbing process without a corrector, as
    soon as no free masked position remains (nothing can change any more)."""

    def __init__(self, steps: Steps = 128, grid: Grid = "uniform", cache: bool = True,
                 final_argmax: bool = False, corrector: CorrectorSpec | None = None, **token_params: Any):
        super().__init__(**token_params)
        self.steps, self.grid = int(steps), grid
        self.cache = self.cache_outputs = bool(cache)
        self.final_argmax = bool(final_argmax)
        self.corrector = None if corrector is None else build("corrector", corrector)

    def start(self, state: SamplerState) -> None:
        state.scratch["grid"] = time_grid(self.steps, self.grid, device=state.x.device)

    def times(self, state: SamplerState) -> tuple[Tensor, Tensor]:
        """``(t, s)`` of the next step, each ``[B]`` float64."""
        grid, i, batch = state.scratch["grid"], state.step, state.x.shape[0]
        return grid[i].expand(batch), grid[i + 1].expand(batch)

    def last_step(self, state: SamplerState) -> bool:
        """Whether the next step is the last one (to :math:`s = 0`)."""
        return state.step == self.steps - 1

    def finished(self, state: SamplerState) -> bool:
        if state.step >= self.steps:
            return True
        return (self.corrector is None and "absorbing" in state.process.capabilities
                and super().finished(state))


class TransitionSampler(GridSampler):
    r"""A grid sampler whose step draws every free position independently from a transition
    distribution :math:`p(x_s \mid x_t)` over the ``S`` states, given by
    :meth:`transition_probs` (``[B, N, S]`` float64) and shaped by :meth:`step_probs`: the last
    step is restricted to data, and temperature, top-k and top-p reshape *where* a position
    jumps, not *whether* (:func:`ddkit.steps.filter_jump_targets`). Fixed positions keep
    their token; categories are drawn in float64. The model output is the log score for a
    parameterization that predicts it (``score=True``), else the log mean."""

    def transition_probs(self, out: Tensor, x: Tensor, process: Process, s: Tensor, t: Tensor,
                         last: bool, *, score: bool) -> Tensor:
        r""":math:`p(x_s \mid x_t = x)` from the model output ``out``; ``last``: the step to
        :math:`s = 0`."""
        raise NotImplementedError

    def step_probs(self, out: Tensor, x: Tensor, process: Process, s: Tensor, t: Tensor,
                   last: bool, *, score: bool) -> Tensor:
        """The distribution a free position draws from: :meth:`transition_probs`, restricted
        to data on the last step, jump targets filtered."""
        from . import steps  # the reusable steps build on this module

        probs = self.transition_probs(out, x, process, s, t, last, score=score)
        if last:
            probs = steps.restrict_to_data(probs, process.vocab_size)
        return steps.filter_jump_targets(probs, x, self.tokens)

    def step(self, state: SamplerState) -> None:
        from . import steps

        t, s = self.times(state)
        last = self.last_step(state)
        x, calls = state.x, state.calls
        score = calls.parameterization.predicts == "score"
        out = calls.log_score(x, t) if score else calls.log_mean(x, t)
        probs = self.step_probs(out, x, state.process, s, t, last, score=score)
        # fixed positions keep their token (their own step may be undefined, e.g. a clean
        # token where the process allows only the mask)
        probs = torch.where(state.fixed[..., None], torch.nn.functional.one_hot(x, probs.shape[-1]).to(probs), probs)
        new = probs.argmax(-1) if last and self.final_argmax else \
            steps.sample_categorical(probs, generator=state.generator)
        state.x = torch.where(state.fixed, x, new)
        state.t = s
