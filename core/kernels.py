r"""Compute kernels: the hot per-step operations of samplers and losses, and backend choice.

Every operation takes its randomness as float64 uniforms in :math:`[0, 1)` drawn by the caller
(``torch.rand(..., dtype=torch.float64, generator=g)``), so every backend consumes the same
numbers and returns the same result, bit for bit, whatever its thread count.

Operations
----------
``categorical(logits [..., V], uniforms [...])`` -> ``LongTensor [...]``
    One category per row of :math:`\mathrm{softmax}(\mathrm{filter}(\ell))` by the reference
    inverse CDF below (temperature, then top-k, then top-p).
``masked_step(x [B, N], logits [B, N, V], p_unmask [B] | [B, N], u_move, u_token, mask_id)``
    The fused reverse step of masked diffusion from :math:`t` to :math:`s`: a position with
    :math:`x = m` unmasks iff ``u_move < p_unmask`` (the sampler passes
    :math:`p = \frac{\alpha_s - \alpha_t}{1 - \alpha_t}`, or 1 on the last step), and then
    takes the category that ``categorical`` draws from its logits with ``u_token`` (or the
    first maximal logit with ``argmax=True``); every other position is unchanged. In law this
    is the posterior :math:`p(x_s \mid x_t)` of the masked process; only the rows that unmask
    are read, so a step costs :math:`O(B N + n_{\text{unmask}} V)`. With ``remask_prob``
    :math:`\sigma` (``[B]`` | ``[B, N]``, uniforms ``u_remask`` and the ``fixed`` positions) the
    same pass also remasks: a position that holds a clean token in ``x`` and is not fixed (a
    prompt token) becomes the mask iff ``u_remask < remask_prob``; the positions that just
    unmasked keep their token. ReMDM's remasking posterior and the forward–backward
    corrector's step.
``commit_topk(scores [B, N], eligible [B, N], k [B])`` -> ``BoolTensor [B, N]``
    Confidence ranking: per sequence, the ``k[b]`` eligible positions with the highest scores
    (all of them if fewer), ties broken by the lower position.
``mask_noise(x0 [B, N], keep_prob [B] | [B, N], uniforms [B, N], mask_id)``
    Forward noising of the masked process, :math:`x_t = x_0` iff :math:`u < \alpha_t`, else
    the mask.
``uniform_noise(x0, keep_prob, u_keep, u_token, vocab_size)``
    Forward noising of the uniform process, :math:`x_t = x_0` iff :math:`u < \alpha_t`, else
    :math:`\lfloor u' V \rfloor` (a uniform token, possibly :math:`x_0` itself), which is
    :math:`\mathrm{Cat}(\alpha_t x_0 + (1 - \alpha_t)/V)`.
``any_equal(x [B, N], value)`` -> ``bool``
    Whether some token equals ``value``: a masked sampler's test, every step, for masks left
    (a compare-and-reduce in torch costs more than the step's other bookkeeping at small
    shapes; the Numba loop stops at the first match).

The reference inverse CDF
-------------------------
For a row :math:`\ell \in [-\infty, \infty)^V` (any float dtype, converted exactly to float64)
and a uniform :math:`u`:

1. temperature :math:`\tau = 0`: :math:`w_j = 1` where :math:`\ell_j = \max \ell`, else 0
   (a uniform draw among the maximal entries; top-k and top-p change nothing); otherwise
   :math:`z_j = \ell_j / \tau` (IEEE division; skipped for :math:`\tau = 1`);
2. top-k: entries below the k-th largest :math:`z` (counted with multiplicity) become
   :math:`-\infty`; entries tied with it stay;
3. :math:`w_j = \mathrm{rexp}(z_j - \max z)` with the reference exponential :func:`reference_exp`
   (within two ulp of :math:`e^x`; 0 below :math:`-708`, a weight under :math:`10^{-307}`);
4. top-p: :math:`T = \sum_j w_j` summed in index order; visiting the distinct values of
   :math:`z` in decreasing order with :math:`b_g` the sum of :math:`w` over all larger entries
   (summed in decreasing order), the group of value :math:`g` stays iff :math:`b_g < pT`
   (tie-inclusive, the smallest set of most likely values whose mass reaches :math:`p`);
5. :math:`C_j = \sum_{i \le j} w_i` summed sequentially in index order, target
   :math:`\hat u = u\,C_{V-1}`; the category is the first :math:`j` with :math:`C_j > \hat u`
   (``searchsorted(C, û, right=True)``), or, if there is none (:math:`u` within an ulp of 1),
   the last :math:`j` where :math:`C` increases.

Every step is a correctly rounded IEEE operation in a fixed order, so any backend can
reproduce it exactly. Extra memory is one uniform and one index per row, plus scratch of a
few rows (never a float64 copy of the logits). Rows with a NaN or :math:`+\infty` logit, or without any finite logit,
raise :class:`ValueError`.

Certified fast paths
--------------------
A backend may compute faster (a vectorised ``exp`` with an error of one ulp, any summation
order) as long as it certifies each row: with :math:`n = V` terms, the computed partial sums
and targets are within :math:`2(\epsilon + 1.01(n + 1)2^{-53})T` of the exact ones
(:math:`\epsilon \le 2^{-52}` for a one-ulp ``exp``, and :math:`\le 2^{-50}` for the reference),
so a decision taken with a margin above :func:`certified_margin` (the sum of both bounds, with
a factor-two reserve) agrees with the reference; a row with a smaller margin anywhere is
recomputed with :func:`reference_categorical`. The torch backend works this way; the Numba
backend computes the reference directly.

Backends
--------
Backends are components of kind ``kernel`` registered through the plugin system
(``register_kernels``): each is a :class:`KernelBackend`. ``backend="auto"`` picks, per
operation and device, the backend with the highest :meth:`KernelBackend.auto_priority`
(the built-in Numba backend claims CPU tensors for the operations where the benchmark shows it
faster; torch serves every device); ``DDKIT_KERNEL_BACKEND`` replaces ``auto`` process-wide.
A third-party backend registers a new name and, to take part in ``auto``, a higher priority::

    import ddkit

    @ddkit.hookimpl
    def register_kernels(register):
        register("mine", MyKernels, summary="fused kernels for my accelerator")
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache
from typing import ClassVar

import torch
from torch import Tensor

from .categorical import group_before
from .errors import NumericalError, UnknownComponentError
from .registry import get_registry, unknown_name_message

OPS = ("categorical", "masked_step", "commit_topk", "mask_noise", "uniform_noise", "token_probability", "any_equal")
AUTO = "auto"
BACKEND_ENV = "DDKIT_KERNEL_BACKEND"

#: error codes a backend writes instead of a category
NO_FINITE_LOGIT = -1
NAN_OR_POSINF_LOGIT = -2
BAD_UNIFORM = -3  #: for backends that check the uniforms themselves (``checks_uniforms``)

# -- the reference exponential -----------------------------------------------------------

LOG2E = 1.4426950408889634  #: 1 / ln 2, rounded
LN2_HI = 6.93147180369123816490e-01  #: ln 2 to 32 bits (0x3FE62E42FEE00000): k * LN2_HI is exact
LN2_LO = 1.90821492927058770002e-10  #: ln 2 - LN2_HI, rounded
#: coefficients of p(r) ~ e^r on |r| <= 0.35 (from :func:`derive_exp_coefficients`)
EXP_COEFFS = tuple(float.fromhex(c) for c in (
    "0x1.0000000000000p+0", "0x1.0000000000000p+0", "0x1.0000000000001p-1", "0x1.5555555555556p-3",
    "0x1.5555555553b72p-5", "0x1.111111111091ap-7", "0x1.6c16c1794bd5cp-10", "0x1.a01a01a83a3a3p-13",
    "0x1.a019b62aaa671p-16", "0x1.71de0be80e7e8p-19", "0x1.2894eb03786e2p-22", "0x1.af3cd7b3560d9p-26"))
#: below this, e^x < 2^-1021 and the reference flushes the weight to 0 (a probability below
#: 1e-307 of the most likely category's)
EXP_UNDERFLOW = -708.0


def reference_exp(x: Tensor) -> Tensor:
    r"""The reference exponential for :math:`x \le 0` (float64), built from IEEE operations only:

    .. math::  k = \lfloor x \log_2 e + \tfrac12 \rfloor,\quad
               r = (x - k\,\ln2_{hi}) - k\,\ln2_{lo},\quad
               e^x \approx 2^k\,p(r),\ p(r) = \textstyle\sum_{i=0}^{11} c_i r^i

    with :math:`|r| \le 0.35` and the coefficients :data:`EXP_COEFFS`
    (:func:`derive_exp_coefficients`: :math:`c_0 = c_1 = 1`, the rest interpolate
    :math:`(e^r - 1 - r)/r^2` at Chebyshev nodes; truncation error about :math:`10^{-17}`). The
    polynomial is evaluated by Estrin's scheme,
    :math:`s_j = (c_{4j} + c_{4j+1} r) + (c_{4j+2} + c_{4j+3} r) r^2`,
    :math:`p = (s_0 + s_1 r^4) + s_2 r^8`, whose short dependency chains vectorise well, and
    :math:`2^k` is built from its IEEE bits. The error is below two ulp (tested); what matters
    is that every backend computes exactly these operations in this order. ``x < -708`` and
    ``-inf`` give 0."""
    c = EXP_COEFFS
    xc = x.clamp_min(EXP_UNDERFLOW)
    k = torch.floor(xc * LOG2E + 0.5)
    r = (xc - k * LN2_HI) - k * LN2_LO
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    s0 = (c[0] + c[1] * r) + (c[2] + c[3] * r) * r2
    s1 = (c[4] + c[5] * r) + (c[6] + c[7] * r) * r2
    s2 = (c[8] + c[9] * r) + (c[10] + c[11] * r) * r2
    p = (s0 + s1 * r4) + s2 * r8
    scale = ((k.to(torch.int64) + 1023) << 52).view(torch.float64)  # exactly 2^k, k >= -1022
    return (p * scale).masked_fill(x < EXP_UNDERFLOW, 0.0)


def derive_exp_coefficients(degree: int = 11, half_width: Fraction = Fraction(35, 100)) -> tuple[float, ...]:
    r"""Where :data:`EXP_COEFFS` come from: :math:`p(r) = 1 + r + r^2 q(r)` with :math:`q` the
    polynomial of degree ``degree - 2`` through :math:`(e^r - 1 - r)/r^2` at the Chebyshev
    nodes of :math:`[-h, h]`, solved in exact rational arithmetic from 50-digit values of
    :math:`e^r`, then rounded to float64. Deterministic; a test checks it reproduces the table."""
    n = degree - 1
    with localcontext() as context:
        context.prec = 60
        nodes = [half_width * Fraction(math.cos(math.pi * (i + 0.5) / n)) for i in range(n)]
        values = []
        for r in nodes:
            rd = Decimal(r.numerator) / Decimal(r.denominator)
            values.append(Fraction((rd.exp() - 1 - rd) / (rd * rd)))
    rows = [[r ** j for j in range(n)] + [v] for r, v in zip(nodes, values)]
    for col in range(n):  # Gauss-Jordan elimination on the Vandermonde system
        pivot = max(range(col, n), key=lambda i: abs(rows[i][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for i in range(n):
            if i != col and rows[i][col]:
                factor = rows[i][col] / rows[col][col]
                rows[i] = [a - factor * b for a, b in zip(rows[i], rows[col])]
    return (1.0, 1.0) + tuple(float(rows[i][n] / rows[i][i]) for i in range(n))


def certified_margin(vocab_size: int, total: Tensor) -> Tensor:
    """The margin below which a fast path must defer to the reference (module docstring)."""
    return (4.0 * vocab_size + 80.0) * 2.0 ** -52 * total


# -- token filters -----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenFilter:
    """Temperature (0 = argmax, uniform among ties), top-k (``None``: off) and top-p
    (``None``: off), applied in that order."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def k_for(self, vocab_size: int) -> int:
        """The top-k value to apply, 0 when it filters nothing."""
        return 0 if self.top_k is None or self.top_k >= vocab_size else int(self.top_k)

    @property
    def p(self) -> float:
        """The top-p value to apply, 1.0 when it filters nothing."""
        return 1.0 if self.top_p is None else float(self.top_p)


def reference_categorical(rows: Tensor, uniforms: Tensor, token_filter: TokenFilter) -> Tensor:
    """The reference inverse CDF (module docstring) on CPU: ``rows [R, V]`` any float dtype,
    ``uniforms [R]``. Returns categories, or the error codes :data:`NO_FINITE_LOGIT` /
    :data:`NAN_OR_POSINF_LOGIT`, on the device of ``rows``."""
    device = rows.device
    z = rows.detach().to("cpu", torch.float64, copy=True)
    u = uniforms.detach().to("cpu", torch.float64)
    V = z.shape[-1]
    tau = token_filter.temperature
    if tau not in (0.0, 1.0):
        z = z / tau
    m = z.amax(-1, keepdim=True)
    code = _row_codes(m)
    m = m.masked_fill(code != 0, 0.0)
    if tau == 0:
        w = (z == m).to(torch.float64)
    else:
        k = token_filter.k_for(V)
        if k:
            kth = z.topk(k, dim=-1).values[..., -1:]
            z = z.masked_fill(z < kth, float("-inf"))
        w = reference_exp(z - m)
        if token_filter.p < 1:
            total = w.cumsum(-1)[..., -1:]
            values, order = z.sort(-1, descending=True)
            before = group_before(values, reference_exp(values - m).cumsum(-1))
            drop = torch.zeros_like(values, dtype=torch.bool).scatter(-1, order, before >= token_filter.p * total)
            w = w.masked_fill(drop, 0.0)
    cdf = w.cumsum(-1)
    index = torch.searchsorted(cdf, u[:, None] * cdf[..., -1:], right=True).squeeze(-1)
    increases = cdf > torch.nn.functional.pad(cdf[..., :-1], (1, 0))
    last_increase = (V - 1) - increases.flip(-1).to(torch.int8).argmax(-1)
    index = torch.where(index >= V, last_increase, index)
    return torch.where(code.squeeze(-1) != 0, code.squeeze(-1), index).to(device)


def reference_token_probability(rows: Tensor, tokens: Tensor) -> Tensor:
    r"""The reference of :func:`token_probability` on CPU: :math:`e_{x}/\sum_j e_j` with
    :math:`e_j` = :func:`reference_exp` :math:`(z_j - \max z)` in float64, the sum sequential
    in index order (the last entry of ``cumsum``), as the Numba kernel computes it; NaN where
    the row's maximum is NaN or infinite."""
    device = rows.device
    z = rows.detach().to("cpu", torch.float64, copy=True)
    m = z.amax(-1, keepdim=True)
    usable = _row_codes(m).squeeze(-1) == 0
    w = reference_exp(z - m.masked_fill(~usable[:, None], 0.0))
    p = w.gather(-1, tokens.detach().to("cpu", torch.long)[:, None]).squeeze(-1) / w.cumsum(-1)[:, -1]
    return p.masked_fill(~usable, float("nan")).to(device)


def _row_codes(row_max: Tensor) -> Tensor:
    """0 for a usable row, else the error code, from the row maxima."""
    bad = torch.isnan(row_max) | (row_max == float("inf"))
    empty = row_max == float("-inf")
    code = torch.zeros(row_max.shape, dtype=torch.int64, device=row_max.device)
    return code.masked_fill(empty, NO_FINITE_LOGIT).masked_fill(bad, NAN_OR_POSINF_LOGIT)


def check_codes(codes: Tensor) -> None:
    """Raise if a backend reported a bad row in ``codes`` (:func:`raise_for_code`)."""
    if codes.numel():
        raise_for_code(codes.min().item())


def raise_for_code(worst: int) -> None:
    """Raise for the lowest code of a sampling result (0 or a category: nothing to raise):
    :class:`ddkit.NumericalError` for logits that cannot be sampled (NaN, +inf, all -inf: the
    model's output), :class:`ValueError` for a caller's bad uniforms."""
    if worst >= 0:
        return
    if worst == NAN_OR_POSINF_LOGIT:
        raise NumericalError("logits contain NaN or +inf (after the temperature) in a sampled row")
    if worst == NO_FINITE_LOGIT:
        raise NumericalError("a sampled row of logits has no finite entry (all -inf)")
    if worst == BAD_UNIFORM:
        raise ValueError("uniforms must lie in [0, 1)")
    if worst < 0:
        raise ValueError(f"kernel returned an unknown error code {worst}")


# -- backends ----------------------------------------------------------------------------


class KernelBackend:
    """Base class of kernel backends. The functions of this module validate and normalise
    their inputs and call the backend with flat, contiguous tensors:

    * ``categorical(logits [R, V], uniforms [R] float64, token_filter)`` -> ``[R]`` int64
      categories or error codes;
    * ``masked_step(x [B, N] int64, logits [B*N, V], p_unmask [B, 1] or [B, N] f64,
      u_move [B, N] f64, u_token [B, N] f64, mask_id, token_filter, argmax, remask)`` ->
      ``[B, N]`` int64 (error codes allowed); ``remask``: ``None`` or ``(remask_prob [B, 1]
      or [B, N] f64, u_remask [B, N] f64, fixed [B, N] bool)``;
    * ``commit_topk(scores [B, N] f64, eligible [B, N] bool, k [B] int64)`` -> ``[B, N]`` bool;
    * ``mask_noise(x0 [B, N], keep [B, 1] or [B, N] f64, u [B, N] f64, mask_id)`` -> ``[B, N]``;
    * ``uniform_noise(x0 [B, N], keep, u_keep [B, N] f64, u_token [B, N] f64, vocab_size)``
      -> ``[B, N]``;
    * ``token_probability(logits [R, V], tokens [R] int64)`` -> ``[R]`` float64, NaN for a
      row without a usable maximum (:func:`reference_token_probability`);
    * ``any_equal(x [B, N] int64, value)`` -> ``bool``.

    The uniforms are checked to lie in [0, 1) before the call, unless the backend sets
    ``checks_uniforms``: then its kernels check them while they read them (no extra pass) and
    report a bad one with the code :data:`BAD_UNIFORM` (``categorical``) or a
    :class:`ValueError` (the other operations). Likewise the results of ``categorical`` and
    ``masked_step`` are searched for error codes after the call (:func:`check_codes`),
    unless the backend sets ``checks_codes``: then it raises itself (:func:`raise_for_code`
    with the lowest code its kernels wrote).
    """

    name: ClassVar[str] = ""
    checks_uniforms: ClassVar[bool] = False
    checks_codes: ClassVar[bool] = False

    def auto_priority(self, op: str, device: torch.device) -> int | None:
        """Priority of this backend for ``op`` on ``device`` under ``backend="auto"``;
        ``None``: not a candidate."""
        return None

    def supports(self, op: str, device: torch.device) -> bool:
        """Whether this backend can run ``op`` on tensors of ``device`` at all."""
        return hasattr(self, op)

    def prepare(self, ops: tuple[str, ...]) -> bool:
        """Get ``ops`` ready before their first call (a just-in-time backend compiles them or
        loads them from its on-disk cache); returns whether anything had to be compiled.
        Nothing to do by default."""
        return False


@lru_cache(maxsize=None)
def _instance(record) -> KernelBackend:
    return record.factory()


def backend_names() -> list[str]:
    """Installed kernel backends."""
    return get_registry().names("kernel")


def check_backend_name(name: str) -> str:
    """Validate a ``backend`` setting: ``auto`` or an installed kernel backend (its plain or
    ``distribution:name`` qualified name)."""
    if name == AUTO:
        return name
    try:
        get_registry().get("kernel", name)
    except UnknownComponentError:
        raise ValueError(unknown_name_message("kernel backend", name, [AUTO, *backend_names()])) from None
    return name


def resolve(backend: str, op: str, device: torch.device | str) -> KernelBackend:
    """The backend that runs ``op`` on ``device`` for the setting ``backend``."""
    device_type = torch.device(device).type
    if backend == AUTO:
        backend = os.environ.get(BACKEND_ENV, "").strip() or AUTO
    registry = get_registry()
    cache = _RESOLVED.setdefault(registry, {})
    # plugins added to a loaded registry bump its revision and invalidate the cache
    key = (backend, op, device_type, registry.revision)
    if key not in cache:
        cache[key] = _resolve(registry, backend, op, torch.device(device_type))
    return cache[key]


_RESOLVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _resolve(registry, backend: str, op: str, device: torch.device) -> KernelBackend:
    if backend != AUTO:
        try:
            chosen = _instance(registry.get("kernel", backend))
        except UnknownComponentError:
            raise ValueError(unknown_name_message("kernel backend", backend, [AUTO, *registry.names("kernel")])) from None
        if not chosen.supports(op, device):
            raise ValueError(f"kernel backend {backend!r} cannot run {op!r} on {device.type} tensors; "
                             f"use backend='auto' or one of {registry.names('kernel')}")
        return chosen
    best, best_priority = None, None
    for record in registry.records("kernel"):
        candidate = _instance(record)
        priority = candidate.auto_priority(op, device) if candidate.supports(op, device) else None
        if priority is not None and (best_priority is None or priority > best_priority):
            best, best_priority = candidate, priority
    if best is None:
        raise ValueError(f"no installed kernel backend runs {op!r} on {device.type} tensors "
                         f"(installed: {registry.names('kernel') or 'none'})")
    return best


def prepare(ops: tuple[str, ...] = OPS, device: torch.device | str = "cpu", backend: str = AUTO) -> list[str]:
    """Get the backends that run ``ops`` on ``device`` ready (:meth:`KernelBackend.prepare`),
    so that a timed first call measures the work and not the compilation. Returns the names of
    the backends that had to compile (slow; the first run after an install or an upgrade)."""
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        raise ValueError(f"unknown kernel operations {unknown}; the operations are {list(OPS)}")
    device = torch.device(device)
    chosen: dict[int, tuple[KernelBackend, list[str]]] = {}
    for op in ops:
        try:
            kernels = resolve(backend, op, device)
        except ValueError:  # no backend runs op here; the call itself reports it
            continue
        chosen.setdefault(id(kernels), (kernels, []))[1].append(op)
    return [kernels.name for kernels, names in chosen.values() if kernels.prepare(tuple(names))]


# -- operations --------------------------------------------------------------------------


def _per_position(t: Tensor | float, shape: tuple[int, int], device: torch.device, name: str) -> Tensor:
    """A probability per sequence or per position: float64 ``[B, 1]`` or ``[B, N]``, contiguous
    (a per-sequence value is not expanded)."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device).detach()  # e.g. a learnable schedule's alpha
    if t.dim() == 0:
        t = t.expand(shape[0], 1)
    elif t.dim() == 1 and t.shape[0] == shape[0]:
        t = t[:, None]
    if t.dim() != 2 or t.shape[0] != shape[0] or t.shape[1] not in (1, shape[1]):
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to {shape}")
    return t.contiguous()


def _uniforms(kernels: KernelBackend, shape: tuple[int, ...], device: torch.device, **named: Tensor) -> list[Tensor]:
    """Check and convert uniforms: float64 of ``shape``, contiguous, in [0, 1). The range is
    left to ``kernels`` if it checks it; else all tensors are checked with one device-to-host
    copy (a sync on CUDA)."""
    out = []
    for name, u in named.items():
        if not isinstance(u, Tensor) or tuple(u.shape) != shape:
            raise ValueError(f"{name} must be a tensor of shape {shape}, got "
                             f"{tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__}")
        if u.dtype != torch.float64 or u.device != device:
            u = u.to(device=device, dtype=torch.float64)
        out.append(u if u.is_contiguous() else u.contiguous())
    if out[0].numel() and not kernels.checks_uniforms:
        bounds = torch.stack([bound for u in out for bound in torch.aminmax(u)]).tolist()
        for name, low, high in zip(named, bounds[::2], bounds[1::2]):
            if not (0 <= low and high < 1):  # also NaN
                raise ValueError(f"{name} must lie in [0, 1)")
    return out


def _tokens(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dtype != torch.long or x.dim() != 2:
        raise ValueError(f"{name} must be a LongTensor [B, N]")
    return x if x.is_contiguous() else x.contiguous()


def _logits(logits: Tensor) -> Tensor:
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        raise ValueError("logits must be a floating-point tensor [..., V]")
    if logits.shape[-1] < 1:
        raise ValueError("logits need at least one category (V >= 1)")
    return logits.detach().reshape(-1, logits.shape[-1]).contiguous()


def categorical(logits: Tensor, uniforms: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, backend: str = AUTO) -> Tensor:
    """Draw one category per row of ``logits [..., V]`` with ``uniforms [...]`` (module
    docstring). Returns a LongTensor of shape ``logits.shape[:-1]``."""
    token_filter = TokenFilter(temperature, top_k, top_p)
    rows = _logits(logits)
    kernels = resolve(backend, "categorical", rows.device)
    u, = _uniforms(kernels, tuple(logits.shape[:-1]), rows.device, uniforms=uniforms)
    u = u.reshape(-1)
    if rows.shape[0] == 0:
        return torch.empty(logits.shape[:-1], dtype=torch.long, device=rows.device)
    out = kernels.categorical(rows, u, token_filter)
    if not kernels.checks_codes:
        check_codes(out)
    return out.reshape(logits.shape[:-1])


def masked_step(x: Tensor, logits: Tensor, p_unmask: Tensor | float, u_move: Tensor, u_token: Tensor, *,
                mask_id: int, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                argmax: bool = False, remask_prob: Tensor | float | None = None, u_remask: Tensor | None = None,
                fixed: Tensor | None = None, backend: str = AUTO) -> Tensor:
    """One reverse step of masked diffusion (module docstring); returns the new ``x``.
    ``p_unmask`` and ``remask_prob``: a number, one per sequence ``[B]`` or one per position
    ``[B, N]``; with ``remask_prob``, ``u_remask`` and ``fixed`` (BoolTensor ``[B, N]``) too."""
    token_filter = TokenFilter(temperature, top_k, top_p)
    x = _tokens(x, "x")
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(x.shape):
        raise ValueError(f"logits must have shape [B, N, V] = [{x.shape[0]}, {x.shape[1]}, V], "
                         f"got {tuple(logits.shape)}")
    shape, device = tuple(x.shape), x.device
    rows = _logits(logits).to(device)
    p = _per_position(p_unmask, shape, device, "p_unmask")
    kernels = resolve(backend, "masked_step", device)
    if remask_prob is None:
        if u_remask is not None or fixed is not None:
            raise ValueError("u_remask and fixed go with remask_prob, which is missing")
        remask = None
        u_move, u_token = _uniforms(kernels, shape, device, u_move=u_move, u_token=u_token)
    else:
        if not isinstance(fixed, Tensor) or fixed.dtype != torch.bool or tuple(fixed.shape) != shape:
            raise ValueError(f"remask_prob needs fixed, a BoolTensor of the shape of x {shape}, got "
                             f"{type(fixed).__name__ if fixed is None else (fixed.dtype, tuple(fixed.shape))}")
        u_move, u_token, u_remask = _uniforms(kernels, shape, device, u_move=u_move, u_token=u_token,
                                              u_remask=u_remask)
        remask = (_per_position(remask_prob, shape, device, "remask_prob"), u_remask, fixed.to(device).contiguous())
    out = kernels.masked_step(x, rows, p, u_move, u_token, int(mask_id), token_filter, bool(argmax), remask)
    if not kernels.checks_codes:
        check_codes(out)
    return out


def commit_topk(scores: Tensor, eligible: Tensor, k: Tensor | int, *, backend: str = AUTO) -> Tensor:
    """Per sequence, the ``k`` eligible positions of highest score (ties: lower position)."""
    if scores.dim() != 2 or tuple(eligible.shape) != tuple(scores.shape) or eligible.dtype != torch.bool:
        raise ValueError("scores must be [B, N] and eligible a BoolTensor of the same shape")
    s = scores.detach().to(torch.float64).contiguous()
    if bool(torch.isnan(s).logical_and_(eligible).any()):  # no boolean indexing: it gathers
        raise NumericalError("scores of eligible positions must not be NaN")
    k = torch.as_tensor(k, dtype=torch.long, device=s.device).expand(s.shape[0]).contiguous()
    if bool((k < 0).any()):
        raise ValueError("k must be >= 0")
    return resolve(backend, "commit_topk", s.device).commit_topk(s, eligible.contiguous(), k)


def mask_noise(x0: Tensor, keep_prob: Tensor | float, uniforms: Tensor, *, mask_id: int,
               backend: str = AUTO) -> Tensor:
    r"""Forward noising of the masked process: :math:`x_t = x_0` iff :math:`u < \alpha_t`.
    ``x0 [B, N]``; ``keep_prob`` (:math:`\alpha_t`): a number, ``[B]`` or ``[B, N]``."""
    x0 = _tokens(x0, "x0")
    shape, device = tuple(x0.shape), x0.device
    keep = _per_position(keep_prob, shape, device, "keep_prob")
    kernels = resolve(backend, "mask_noise", device)
    u, = _uniforms(kernels, shape, device, uniforms=uniforms)
    return kernels.mask_noise(x0, keep, u, int(mask_id))


def uniform_noise(x0: Tensor, keep_prob: Tensor | float, u_keep: Tensor, u_token: Tensor, *, vocab_size: int,
                  backend: str = AUTO) -> Tensor:
    r"""Forward noising of the uniform process: :math:`x_t = x_0` iff :math:`u < \alpha_t`,
    else :math:`\lfloor u' V \rfloor`. Shapes as :func:`mask_noise`."""
    x0 = _tokens(x0, "x0")
    shape, device = tuple(x0.shape), x0.device
    keep = _per_position(keep_prob, shape, device, "keep_prob")
    kernels = resolve(backend, "uniform_noise", device)
    u_keep, u_token = _uniforms(kernels, shape, device, u_keep=u_keep, u_token=u_token)
    return kernels.uniform_noise(x0, keep, u_keep, u_token, int(vocab_size))


def any_equal(x: Tensor, value: int, *, backend: str = AUTO) -> bool:
    """Whether some entry of the tokens ``x [B, N]`` equals ``value`` (e.g. the mask id)."""
    x = _tokens(x, "x")
    return bool(resolve(backend, "any_equal", x.device).any_equal(x, int(value)))


def token_probability(logits: Tensor, tokens: Tensor, *, backend: str = AUTO) -> Tensor:
    r"""The model's probability at temperature 1 of ``tokens`` (``logits.shape[:-1]``, long)
    under the rows of ``logits`` (``[..., V]``): :math:`\mathrm{softmax}(z)_x` in float64,
    the confidence of a drawn token in confidence decoding. Computed row by row with O(1)
    extra memory per row (never a float64 copy of the logits), identically on the Numba and
    the torch backend on CPU (:func:`reference_token_probability`; on CUDA the row sum's
    order may differ in the last bits). A row with a NaN or infinite maximum raises
    :class:`ddkit.NumericalError`."""
    rows = _logits(logits)
    index = tokens.reshape(-1)
    if index.dtype != torch.long or index.numel() != rows.shape[0]:
        raise ValueError(f"tokens must be a LongTensor of shape {tuple(logits.shape[:-1])}, got "
                         f"{index.dtype} {tuple(tokens.shape)}")
    if index.numel() and bool(((index < 0) | (index >= rows.shape[1])).any()):
        raise ValueError(f"tokens must lie in 0..{rows.shape[1] - 1}")
    if rows.shape[0] == 0:
        return torch.empty(logits.shape[:-1], dtype=torch.float64, device=rows.device)
    out = resolve(backend, "token_probability", rows.device).token_probability(rows, index.contiguous())
    if bool(torch.isnan(out).any()):
        raise NumericalError("logits with a NaN or infinite maximum: no token probability")
    return out.reshape(logits.shape[:-1])
