r"""Conformance checks for :class:`ddkit.Sampler`, run with a process.

The checks drive the sampler with denoisers whose behaviour is known:

* :class:`ContextDenoiser` — a fixed random function of a row's tokens and time (a neighbour
  table, a position table, the fraction of masked tokens, ``t``); it depends on nothing
  outside its row, so any sampler output for one row must be independent of the others;
* :class:`PointMassDenoiser` — the exact optimal denoiser for data that is always the same
  sequence ``y``: :math:`\log \mu = \log e_y` at every position, whatever :math:`x_t` and
  :math:`t` are;
* :class:`TimeCheckingDenoiser` — the same logits, and a record of any call whose ``t``
  cannot have produced its ``x_t`` from the data.

A sampler is run as it was built: the time handling under test is that of the
parameterization it was constructed with (``sampler.parameterization``, e.g.
``ddkit.build("sampler", "ancestral", parameterization={"name": "mean",
"time_conditioning": True})``); check a sampler once per parameterization you ship.

Checks:

* ``check_sampler_output`` — a :class:`~ddkit.SampleResult` with ``tokens`` a LongTensor
  ``[B, N]`` of clean tokens ``0..V-1``, an ``int`` NFE :math:`\ge 1`, and with
  ``record_trajectory=True`` a trajectory of ``[B, N]`` states ending at ``tokens``.
* ``check_sampler_nfe_counts_denoiser_calls`` — ``result.nfe`` equals the number of times
  the denoiser was actually called (with and without a prompt).
* ``check_sampler_fixed_positions`` — prompt entries in ``0..V-1`` (prefix, suffix,
  infill, whole rows, a whole batch) are kept in the result and in every trajectory state;
  ``result.fixed`` (when reported) marks them; the prompt tensor is not modified.
* ``check_sampler_point_mass_data`` — with :class:`PointMassDenoiser` every free position
  comes out as ``y``: a sampler whose last step denoises to data must reproduce data that
  has no randomness.
* ``check_sampler_deterministic_under_seed`` — the same generator seed gives the same
  tokens and NFE even when the global RNG is in a different state (a sampler given a
  generator must not draw from the global RNG).
* ``check_sampler_batch_permutation_equivariance`` — the distribution of a row's output
  depends only on that row's prompt, not on its index or on the other rows. This is a
  statement *in distribution*: with a shared generator the random numbers a row receives
  depend on its index, so ``sample(prompt[perm])`` and ``sample(prompt)[perm]`` differ
  draw by draw even for a correct sampler, and running a row alone or in a batch consumes
  the generator differently. The check therefore compares, per position and token, the
  output frequencies of prompt ``A`` rows in an all-``A`` batch with those of the ``A``
  rows of an interleaved ``B, A, B, A, ...`` batch (and likewise for ``B``), with a
  two-sample Hoeffding bound (failure probability 1e-6 for a correct sampler).
* ``check_sampler_dtype_and_device`` — logits in float32, float64, bfloat16 and float16 are
  accepted; the result lives on the requested device (and on CUDA when available) and is
  a LongTensor; the default dtype is unchanged afterwards.
* ``check_sampler_time_argument`` — the denoiser receives ``x_t`` as a LongTensor
  ``[B, N]`` of states ``0..S-1`` and ``t`` of shape ``[B]`` or ``[B, N]`` in
  :math:`[0, 1]`; with a parameterization without time conditioning ``t`` is one constant
  (the promise that makes caching valid), with time conditioning each row's ``t`` never
  increases from one call to the next (a sampler walks from 1 to 0).
* ``check_sampler_time_conditioned_denoiser`` (the sampler's ``parameterization`` declares
  ``time_conditioning``) — run with :class:`TimeCheckingDenoiser`, the optimal denoiser for
  point-mass data ``y`` that also checks its time: every state :math:`x_t` it is handed must
  be one the forward process can produce from ``y`` at the ``t`` handed with it,
  :math:`\bar Q(t)_{y_n, x_t^n} > 0`. A sampler that ignores the parameterization's time
  handling and feeds ``t = 0`` to a noisy state fails (nothing is noisy where
  :math:`\alpha_t = 1`), as does one that feeds ``1 - t`` or the target time of its last
  step while noise remains. Exact, not statistical; it cannot see a wrong ``t`` at which the
  state is still possible (with a schedule whose :math:`\alpha_0 < 1` not even ``t = 0``).
* ``check_sampler_rejects_invalid_prompt`` — a prompt with an out-of-range token or a
  floating dtype raises ``ValueError``.

Sampler capabilities (``sampler.capabilities``, optional): ``"variable_length"`` lifts the
fixed output length and skips the checks that need it (fixed positions, point mass,
equivariance). Process requirements (``sampler.requires``) must be met by the process,
otherwise :func:`~ddkit.testing.check_sampler` refuses to run.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..process import Process, per_token
from ..sampler import SampleResult
from ._failures import fail
from .oracles import channel_likelihood
from .stats import DEFAULT_DELTA, two_sample_frequency_bound

SEED = 20250102
#: rows per batch composition in the equivariance check
EQUIVARIANCE_ROWS = 4000


class ContextDenoiser:
    r"""A deterministic random denoiser that depends on a row's tokens and time only:

    .. math::  f(x_t, t)_{n,v} = P_{n \bmod 8, v} + L_{x_t^{n-1}, v} + R_{x_t^{n+1}, v}
               + c_v\,\rho(x_t) + d_v\,t_n

    with seeded Gaussian tables (``L``/``R`` have a row for "no neighbour"), :math:`\rho`
    the fraction of the row in the mask state (state 0 without a mask). Logits come back in
    ``dtype``."""

    def __init__(self, process: Process, seed: int = SEED, dtype: torch.dtype = torch.float32):
        V, S = process.vocab_size, process.num_states
        gen = torch.Generator().manual_seed(seed)
        self.position = 1.5 * torch.randn(8, V, generator=gen)
        self.left = 1.5 * torch.randn(S + 1, V, generator=gen)
        self.right = 1.5 * torch.randn(S + 1, V, generator=gen)
        self.fraction = 2.0 * torch.randn(V, generator=gen)
        self.time = 2.0 * torch.randn(V, generator=gen)
        self.marker = process.mask_id if process.mask_id is not None else 0
        self.edge, self.dtype = S, dtype

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        device = x_t.device
        B, N = x_t.shape
        pad = torch.full((B, 1), self.edge, dtype=torch.long, device=device)
        left = torch.cat([pad, x_t[:, :-1]], 1)
        right = torch.cat([x_t[:, 1:], pad], 1)
        t = torch.as_tensor(t, device=device).float()
        t = t[:, None].expand(B, N) if t.dim() == 1 else t.expand(B, N)
        rho = (x_t == self.marker).float().mean(-1, keepdim=True)
        positions = torch.arange(N, device=device) % self.position.shape[0]
        logits = (self.position.to(device)[positions] + self.left.to(device)[left]
                  + self.right.to(device)[right] + rho[..., None] * self.fraction.to(device)
                  + t[..., None] * self.time.to(device))
        return logits.to(self.dtype)


class PointMassDenoiser:
    r"""The optimal denoiser for data that is always ``target`` (``[N]``): logits
    :math:`\log e_{y_n}` (0 at the target token, :math:`-\infty` elsewhere)."""

    def __init__(self, target: Tensor, vocab_size: int):
        self.logits = torch.log(torch.nn.functional.one_hot(target, vocab_size).float())

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.logits.to(x_t.device).expand(x_t.shape[0], -1, -1)


class TimeCheckingDenoiser:
    r"""The optimal denoiser for data that is always ``target`` (the logits of
    :class:`PointMassDenoiser`) that also checks the time it is given: every position ``n``
    of ``x_t`` must be a state that the forward process can produce from the data at that
    time, :math:`\bar Q(t)_{y_n, x_t^n} > 0`. The first call that breaks this is kept in
    ``impossible`` (the call, row, position, state and time).

    A sampler that hands a time-conditioned denoiser ``t = 0`` (or ``1 - t``, or the next
    time ``s`` on its last step) while the state is still noisy shows it: nothing is noisy at
    a time where :math:`\alpha = 1`."""

    def __init__(self, target: Tensor, process: Process):
        self.point_mass = PointMassDenoiser(target, process.vocab_size)
        self.target, self.process = target, process
        self.calls = 0
        self.impossible: dict | None = None

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        if self.impossible is None:
            times = per_token(torch.as_tensor(t).detach().double().cpu(), x_t.cpu())
            channel = channel_likelihood(self.process, x_t.cpu(), times)  # [B, N, V]: Q(t)[v, x_t]
            from_data = channel.gather(-1, self.target[None, :, None].expand(*x_t.shape, 1))[..., 0]
            if bool((from_data <= 0).any()):
                b, n = (int(i) for i in (from_data <= 0).nonzero()[0])
                self.impossible = {"call": self.calls - 1, "row": b, "position": n,
                                   "state": int(x_t[b, n]), "data_token": int(self.target[n]),
                                   "t": float(times[b, n])}
        return self.point_mass(x_t, t)


class CallRecorder:
    """Wraps a denoiser, counting calls and keeping copies of their arguments."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.calls: list[tuple[Tensor, Tensor]] = []

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        self.calls.append((x_t.detach().clone(), torch.as_tensor(t).detach().clone()))
        return self.denoiser(x_t, t)


def _gen(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _variable_length(sampler) -> bool:
    return "variable_length" in getattr(sampler, "capabilities", frozenset())


def _run(sampler, denoiser, process, **kwargs) -> SampleResult:
    kwargs.setdefault("generator", _gen())
    return sampler.sample(denoiser, process, **kwargs)


def _check_tokens(sampler, result, process: Process, shape: tuple[int, int], what: str) -> None:
    if not isinstance(result, SampleResult):
        fail(f"{what}: sample() must return a ddkit.SampleResult", returned=type(result).__name__)
    tokens = result.tokens
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.long or tokens.dim() != 2:
        fail(f"{what}: tokens must be a LongTensor [B, N]",
             dtype=str(getattr(tokens, "dtype", type(tokens).__name__)),
             shape=tuple(getattr(tokens, "shape", ())))
    expected = shape if not _variable_length(sampler) else (shape[0], tokens.shape[1])
    if tuple(tokens.shape) != expected:
        fail(f"{what}: tokens must have shape [num_samples, length]", shape=tuple(tokens.shape),
             expected=expected)
    bad = (tokens < 0) | (tokens >= process.vocab_size)
    if bool(bad.any()):
        b, n = (int(i) for i in bad.nonzero()[0])
        fail(f"{what}: samples must be clean tokens in 0..{process.vocab_size - 1} (no mask or "
             f"extra state may remain)", row=b, position=n, token=tokens[b, n], sample=tokens[b])


def check_sampler_output(sampler, process: Process) -> None:
    """A SampleResult with clean LongTensor tokens [B, N], int NFE >= 1, a trajectory that
    ends at the tokens."""
    result = _run(sampler, ContextDenoiser(process), process, num_samples=5, length=6,
                  record_trajectory=True)
    _check_tokens(sampler, result, process, (5, 6), "sample(num_samples=5, length=6)")
    if isinstance(result.nfe, bool) or not isinstance(result.nfe, int):
        fail("nfe must be a Python int", nfe=result.nfe, type=type(result.nfe).__name__)
    if result.nfe < 1:
        fail("nfe must be >= 1 when there are positions to generate", nfe=result.nfe)
    trajectory = result.trajectory
    if trajectory is None or len(trajectory) < 1:
        fail("record_trajectory=True must return a list of states", trajectory=trajectory)
    for i, state in enumerate(trajectory):
        if not isinstance(state, Tensor) or state.shape[0] != 5 or state.dtype != torch.long:
            fail("every trajectory state must be a LongTensor [B, N]", step=i,
                 shape=tuple(getattr(state, "shape", ())))
    if not torch.equal(trajectory[-1], result.tokens):
        fail("the last trajectory state must equal the returned tokens",
             last_state=trajectory[-1], tokens=result.tokens)


def check_sampler_nfe_counts_denoiser_calls(sampler, process: Process) -> None:
    """result.nfe equals the number of denoiser calls actually made."""
    prompt = torch.full((4, 7), -1, dtype=torch.long)
    prompt[:, :2] = torch.arange(2) % process.vocab_size
    for kwargs in ({"num_samples": 3, "length": 8}, {"prompt": prompt}):
        recorder = CallRecorder(ContextDenoiser(process))
        result = _run(sampler, recorder, process, **kwargs)
        if result.nfe != len(recorder.calls):
            fail("nfe must equal the number of denoiser calls", nfe=result.nfe,
                 actual_calls=len(recorder.calls), arguments=sorted(kwargs))


def _prompts(process: Process) -> Tensor:
    gen = _gen(SEED + 1)
    V = process.vocab_size
    B, N = 7, 8
    tokens = torch.randint(0, V, (B, N), generator=gen)
    fixed = torch.zeros(B, N, dtype=torch.bool)
    fixed[0, :3] = True  # prefix
    fixed[1] = torch.rand(N, generator=gen) < 0.4  # infill
    fixed[2] = True  # a row with nothing to generate
    fixed[4, -3:] = True  # suffix
    fixed[5, ::2] = True  # alternating
    fixed[6, 2:6] = True  # a middle span
    prompt = torch.where(fixed, tokens, torch.full_like(tokens, -1))
    if process.mask_id is not None:
        prompt[6, 0] = process.mask_id  # the mask id also means "generate"
    return prompt


def check_sampler_fixed_positions(sampler, process: Process) -> None:
    """Fixed prompt tokens survive in the result and in every trajectory state; the prompt
    tensor is left untouched; result.fixed marks the fixed positions."""
    prompt = _prompts(process)
    original = prompt.clone()
    fixed = (prompt >= 0) & (prompt < process.vocab_size)
    result = _run(sampler, ContextDenoiser(process), process, prompt=prompt, record_trajectory=True)
    _check_tokens(sampler, result, process, tuple(prompt.shape), "sample(prompt=...)")
    if not torch.equal(prompt, original):
        fail("sample() must not modify the prompt tensor", before=original, after=prompt)
    lost = fixed & (result.tokens != prompt)
    if bool(lost.any()):
        b, n = (int(i) for i in lost.nonzero()[0])
        fail("a fixed prompt token was changed", row=b, position=n, prompt=prompt[b],
             sample=result.tokens[b])
    for step, state in enumerate(result.trajectory or []):
        if not torch.equal(state[fixed], prompt[fixed]):
            b, n = (int(i) for i in (fixed & (state != prompt)).nonzero()[0])
            fail("a fixed prompt token changed during sampling", step=step, row=b, position=n,
                 prompt=prompt[b], state=state[b])
    if result.fixed is not None and not torch.equal(result.fixed.cpu(), fixed):
        fail("result.fixed must mark exactly the fixed prompt positions", fixed=fixed,
             reported=result.fixed)
    whole = prompt[2:3].expand(3, -1).contiguous()
    result = _run(sampler, ContextDenoiser(process), process, prompt=whole)
    if not torch.equal(result.tokens, whole):
        fail("a prompt without free positions must come back unchanged", prompt=whole,
             sample=result.tokens)


def check_sampler_point_mass_data(sampler, process: Process) -> None:
    """With the optimal denoiser for point-mass data y, every free position becomes y."""
    V = process.vocab_size
    target = torch.randint(0, V, (8,), generator=_gen(SEED + 2))
    denoiser = PointMassDenoiser(target, V)
    result = _run(sampler, denoiser, process, num_samples=4, length=8)
    _check_tokens(sampler, result, process, (4, 8), "point-mass data")
    wrong = result.tokens != target
    if bool(wrong.any()):
        b, n = (int(i) for i in wrong.nonzero()[0])
        fail("with point-mass data y every generated token must be y", target=target,
             sample=result.tokens[b], position=n)
    prompt = _prompts(process)
    fixed = (prompt >= 0) & (prompt < V)
    result = _run(sampler, denoiser, process, prompt=prompt)
    expected = torch.where(fixed, prompt, target.expand_as(prompt))
    if not torch.equal(result.tokens, expected):
        b = int((result.tokens != expected).any(-1).nonzero()[0])
        fail("with point-mass data y every free position must become y (fixed ones kept)",
             prompt=prompt[b], target=target, sample=result.tokens[b])


def check_sampler_deterministic_under_seed(sampler, process: Process) -> None:
    """The same generator seed gives the same samples, whatever the global RNG state."""
    state = torch.get_rng_state()
    try:
        outcomes = []
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)
            result = _run(sampler, ContextDenoiser(process), process, num_samples=6, length=7,
                          generator=_gen(SEED + 3))
            outcomes.append(result)
    finally:
        torch.set_rng_state(state)
    a, b = outcomes
    if not torch.equal(a.tokens, b.tokens) or a.nfe != b.nfe:
        fail("the same generator seed must give the same samples and NFE (does the sampler "
             "draw from the global RNG?)", first=a.tokens, second=b.tokens, nfe=(a.nfe, b.nfe))


def check_sampler_batch_permutation_equivariance(sampler, process: Process) -> None:
    """A row's output distribution depends only on its own prompt (two-sample test of
    per-position token frequencies, failure probability 1e-6 for a correct sampler)."""
    V, N, n = process.vocab_size, 4, EQUIVARIANCE_ROWS
    free = torch.full((N,), -1, dtype=torch.long)
    anchored = free.clone()
    anchored[0], anchored[2] = 0, V - 1
    denoiser = ContextDenoiser(process)
    alone = {}
    for name, prompt in (("A", free), ("B", anchored)):
        batch = prompt.expand(n, -1).contiguous()
        alone[name] = _run(sampler, denoiser, process, prompt=batch, generator=_gen(SEED + 4)).tokens
    mixed_prompt = torch.stack([anchored, free]).repeat(n, 1)  # B, A, B, A, ...
    mixed = _run(sampler, denoiser, process, prompt=mixed_prompt, generator=_gen(SEED + 5)).tokens
    together = {"B": mixed[0::2], "A": mixed[1::2]}
    eps = two_sample_frequency_bound(n, n, DEFAULT_DELTA, num_tests=2 * N * V)
    for name in ("A", "B"):
        f_alone = torch.nn.functional.one_hot(alone[name], V).double().mean(0)  # [N, V]
        f_mixed = torch.nn.functional.one_hot(together[name], V).double().mean(0)
        gap = (f_alone - f_mixed).abs()
        if bool((gap > eps).any()):
            pos, tok = (int(i) for i in torch.unravel_index(gap.argmax(), gap.shape))
            fail(f"the output distribution of a row must not depend on the other rows: "
                 f"frequencies of prompt {name} alone vs interleaved with another prompt differ "
                 f"by more than the two-sample bound {eps:.4f} ({n} rows each)",
                 prompt=free if name == "A" else anchored, position=pos, token=tok,
                 frequency_alone=f_alone[pos, tok], frequency_interleaved=f_mixed[pos, tok])


def check_sampler_dtype_and_device(sampler, process: Process) -> None:
    """Any floating logits dtype is accepted; results are LongTensors on the requested
    device; the default dtype is unchanged."""
    original = torch.get_default_dtype()
    try:
        for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            torch.set_default_dtype(torch.float32)
            result = _run(sampler, ContextDenoiser(process, dtype=dtype), process, num_samples=3,
                          length=5, device="cpu")
            if torch.get_default_dtype() != torch.float32:
                fail("sampling must not change torch's default dtype", before="torch.float32",
                     after=str(torch.get_default_dtype()), logits_dtype=str(dtype))
            _check_tokens(sampler, result, process, (3, 5), f"logits in {dtype}")
            if result.tokens.device.type != "cpu":
                fail("tokens must be on the requested device", requested="cpu",
                     device=str(result.tokens.device))
    finally:
        torch.set_default_dtype(original)
    if torch.cuda.is_available():
        result = _run(sampler, ContextDenoiser(process), process, num_samples=3, length=5,
                      device="cuda", generator=torch.Generator("cuda").manual_seed(SEED))
        if result.tokens.device.type != "cuda":
            fail("tokens must be on the requested device", requested="cuda",
                 device=str(result.tokens.device))
        prompt = _prompts(process).cuda()
        result = _run(sampler, ContextDenoiser(process), process, prompt=prompt,
                      generator=torch.Generator("cuda").manual_seed(SEED))
        if result.tokens.device.type != "cuda":
            fail("without device=, tokens must be on the prompt's device", prompt_device="cuda",
                 device=str(result.tokens.device))


def check_sampler_time_argument(sampler, process: Process) -> None:
    """The denoiser gets x_t [B, N] long in 0..S-1 and t [B] or [B, N] in [0, 1]; t is a
    constant without time conditioning and never increases per row with it."""
    S = process.num_states
    recorder = CallRecorder(ContextDenoiser(process))
    _run(sampler, recorder, process, num_samples=4, length=6)
    previous = None
    for i, (x_t, t) in enumerate(recorder.calls):
        if x_t.dtype != torch.long or tuple(x_t.shape) != (4, 6):
            fail("the denoiser must get x_t as a LongTensor [B, N]", call=i,
                 dtype=str(x_t.dtype), shape=tuple(x_t.shape))
        if bool(((x_t < 0) | (x_t >= S)).any()):
            fail(f"x_t must hold states in 0..{S - 1}", call=i, x_t=x_t)
        if not t.is_floating_point() or tuple(t.shape) not in ((4,), (4, 6)):
            fail("the denoiser must get t as a floating tensor [B] or [B, N]", call=i,
                 dtype=str(t.dtype), shape=tuple(t.shape))
        if bool(((t < 0) | (t > 1) | ~torch.isfinite(t)).any()):
            fail("t must lie in [0, 1]", call=i, t=t)
        current = t.double() if t.dim() == 2 else t.double()[:, None].expand(4, 6)
        parameterization = getattr(sampler, "parameterization", None)
        conditioned = getattr(parameterization, "time_conditioning", None)
        if conditioned is False and bool((current != current.reshape(-1)[0]).any()):
            fail("without time conditioning the denoiser must always see one constant t "
                 "(the promise that makes caching valid)", call=i, t=t)
        if conditioned and previous is not None and bool((current > previous + 1e-12).any()):
            fail("with time conditioning each row's t must not increase from call to call "
                 "(a sampler walks from t = 1 to t = 0)", call=i, previous_t=previous, t=t)
        previous = current


def _time_conditioned(sampler) -> bool:
    return bool(getattr(getattr(sampler, "parameterization", None), "time_conditioning", False))


def check_sampler_time_conditioned_denoiser(sampler, process: Process) -> None:
    """With a time-conditioned parameterization the denoiser gets the sampler's current time:
    every state it is handed is one the forward process can produce from the data at the
    time it is handed with (point-mass data y, no prompt)."""
    V = process.vocab_size
    target = torch.randint(0, V, (8,), generator=_gen(SEED + 6))
    denoiser = TimeCheckingDenoiser(target, process)
    result = _run(sampler, denoiser, process, num_samples=16, length=8)
    _check_tokens(sampler, result, process, (16, 8), "time-conditioned denoiser")
    if denoiser.impossible is not None:
        fail("a time-conditioned denoiser was handed a state that the forward process cannot "
             "produce from the data at the time it was given (q(x_t | x_0) = 0): the sampler "
             "does not pass its current time through the parameterization (t = 0, or another "
             "time than the state's?)", **denoiser.impossible)


def check_sampler_rejects_invalid_prompt(sampler, process: Process) -> None:
    """Prompts with out-of-range tokens or a floating dtype raise ValueError."""
    V = process.vocab_size
    bad_token = torch.full((2, 4), -1, dtype=torch.long)
    bad_token[0, 1] = process.num_states + 3
    for prompt, what in ((bad_token, f"a token {process.num_states + 3} outside 0..{V - 1}"),
                         (torch.full((2, 4), -1.0), "a floating dtype")):
        try:
            _run(sampler, ContextDenoiser(process), process, prompt=prompt)
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001 - the type is what the check reports
            fail(f"a prompt with {what} must raise ValueError", raised=f"{type(exc).__name__}: {exc}")
        fail(f"a prompt with {what} must raise ValueError, but sampling succeeded", prompt=prompt)


def applicable_checks(sampler, process: Process) -> list:
    """The checks that apply to ``sampler`` with ``process`` (see the module docstring)."""
    checks = [check_sampler_output, check_sampler_nfe_counts_denoiser_calls]
    if not _variable_length(sampler):
        checks += [check_sampler_fixed_positions, check_sampler_point_mass_data]
    checks += [check_sampler_deterministic_under_seed]
    if not _variable_length(sampler):
        checks.append(check_sampler_batch_permutation_equivariance)
    checks += [check_sampler_dtype_and_device, check_sampler_time_argument]
    if _time_conditioned(sampler) and not _variable_length(sampler):
        checks.append(check_sampler_time_conditioned_denoiser)
    checks.append(check_sampler_rejects_invalid_prompt)
    return checks
