r"""Conformance checks for :class:`ddkit.Schedule`.

Each check takes the schedule and raises :class:`~ddkit.testing.CheckFailure` with a
counterexample when its property breaks. All run in float64 on a grid of ``t`` in
:math:`[0, 1]`. A vector-valued schedule (:attr:`~ddkit.Schedule.vector_size` ``= V``: one
:math:`\alpha_{t,v}` per clean token) is checked token by token: each property must hold for
every :math:`v`.

* ``check_schedule_elementwise`` — ``alpha`` and ``alpha_prime`` keep the shape of ``t``
  (``[]``, ``[K]``, ``[B, N]``; a vector schedule appends an axis of size ``V``), act
  elementwise, return float64 for float64 input and accept float32 input;
* ``check_schedule_finite`` — :math:`\alpha_t` finite on :math:`[0, 1]`, :math:`\alpha'_t`
  never NaN (it may be :math:`\pm\infty` at an endpoint, e.g. :math:`1 - t^k` with
  :math:`k < 1`);
* ``check_schedule_alpha_in_unit_interval`` — :math:`0 \le \alpha_t \le 1`;
* ``check_schedule_monotone`` — :math:`\alpha` non-increasing on the grid and
  :math:`\alpha'_t \le 0`;
* ``check_schedule_endpoints`` — :math:`\alpha_0 \ge 1 - \epsilon`, :math:`\alpha_1 \le \epsilon`
  with :data:`ENDPOINT_TOLERANCE` = :math:`\epsilon` (shifted schedules such as log-linear
  with :math:`\alpha_1 = 10^{-3}` pass; the shift is their documented choice), and
  :meth:`~ddkit.Schedule.endpoints` agrees with :math:`(\alpha_0, \alpha_1)` (for a vector
  schedule with :math:`(\min_v \alpha_{0,v}, \max_v \alpha_{1,v})`);
* ``check_schedule_derivative`` — :math:`\alpha'_t` equals the central difference
  :math:`(\alpha_{t+h} - \alpha_{t-h}) / 2h` (:math:`h = 10^{-6}`, truncation
  :math:`O(h^2)`, rounding :math:`O(10^{-16}/h)`) on :math:`t \in [0.01, 0.99]`;
* ``check_schedule_inverse`` (``invertible``) — :math:`t(\alpha_t) = t`, judged in
  :math:`\alpha`-space where :math:`\alpha` is flat (:math:`|\alpha(t(\alpha_t)) -
  \alpha_t|` tiny is as good as an exact inverse there), and the inverse maps
  :math:`[\alpha_1, \alpha_0]` into :math:`[0, 1]`;
* ``check_schedule_gradients`` (learnable: some parameter requires grad) — :math:`\alpha_t`
  and :math:`\alpha'_t` back-propagate finite gradients to every parameter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._failures import assert_close, fail

#: how far :math:`\alpha_0` may sit below 1 and :math:`\alpha_1` above 0
ENDPOINT_TOLERANCE = 1e-2

_F64 = torch.float64


def _grid(n: int = 1001) -> Tensor:
    return torch.linspace(0.0, 1.0, n, dtype=_F64)


def _first(bad: Tensor) -> tuple[int, ...]:
    """The index of the first true entry (``[time]`` or ``[time, token]``)."""
    return tuple(int(i) for i in bad.nonzero()[0])


def _shape_for(schedule, t: Tensor) -> tuple[int, ...]:
    """The shape ``alpha(t)`` must have: ``t``'s, with ``V`` appended for a vector schedule."""
    size = getattr(schedule, "vector_size", None)
    return tuple(t.shape) if size is None else (*t.shape, size)


@torch.no_grad()
def check_schedule_elementwise(schedule) -> None:
    """``alpha``/``alpha_prime`` keep the input shape, act elementwise, return float64 for
    float64 input and accept float32 input."""
    t = torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.7, 0.2]], dtype=_F64)
    for method in ("alpha", "alpha_prime"):
        fn = getattr(schedule, method)
        for shaped in (t, t.reshape(-1), t[0, 1]):
            out = fn(shaped)
            if not isinstance(out, Tensor) or tuple(out.shape) != _shape_for(schedule, shaped):
                fail(f"{method} must return a tensor of the input's shape (a vector schedule: "
                     f"with vector_size appended)", input_shape=tuple(shaped.shape),
                     expected_shape=_shape_for(schedule, shaped),
                     output_shape=tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__)
            if out.dtype != _F64:
                fail(f"{method} must return float64 for float64 input", output_dtype=str(out.dtype))
        batched = fn(t)
        one_by_one = torch.stack([fn(v) for v in t.reshape(-1)]).reshape(batched.shape)
        assert_close(batched, one_by_one, f"{method} on a batch vs one time at a time",
                     atol=1e-12, rtol=1e-12, t=t)
        low = fn(t.float())
        if not (isinstance(low, Tensor) and low.is_floating_point() and tuple(low.shape) == _shape_for(schedule, t)):
            fail(f"{method} must accept float32 times", output=low)
        assert_close(low.double(), batched, f"{method} in float32 vs float64", atol=1e-4, rtol=1e-4,
                     t=t)


@torch.no_grad()
def check_schedule_finite(schedule) -> None:
    """alpha is finite on [0, 1]; alpha_prime is never NaN."""
    t = _grid()
    alpha, prime = schedule.alpha(t), schedule.alpha_prime(t)
    bad = ~torch.isfinite(alpha)
    if bool(bad.any()):
        i = _first(bad)
        fail("alpha(t) must be finite on [0, 1]", t=t[i[0]], index=list(i), alpha=alpha[i])
    bad = torch.isnan(prime)
    if bool(bad.any()):
        i = _first(bad)
        fail("alpha_prime(t) must not be NaN on [0, 1]", t=t[i[0]], index=list(i), alpha_prime=prime[i])


@torch.no_grad()
def check_schedule_alpha_in_unit_interval(schedule) -> None:
    """0 <= alpha(t) <= 1 on [0, 1]."""
    t = _grid()
    alpha = schedule.alpha(t)
    bad = (alpha < 0) | (alpha > 1) | torch.isnan(alpha)
    if bool(bad.any()):
        i = _first(bad)
        fail("alpha(t) is a probability and must lie in [0, 1]", t=t[i[0]], index=list(i), alpha=alpha[i])


@torch.no_grad()
def check_schedule_monotone(schedule) -> None:
    """alpha is non-increasing in t and alpha_prime <= 0."""
    t = _grid()
    alpha = schedule.alpha(t)
    rise = alpha[1:] - alpha[:-1]
    bad = rise > 1e-12
    if bool(bad.any()):
        i = _first(bad)
        after = (i[0] + 1, *i[1:])
        fail("alpha must be non-increasing in t (a token never gets cleaner with more noise)",
             t=(float(t[i[0]]), float(t[i[0] + 1])), index=list(i), alpha=(float(alpha[i]), float(alpha[after])))
    prime = schedule.alpha_prime(t)
    bad = prime > 1e-12
    if bool(bad.any()):
        i = _first(bad)
        fail("alpha_prime(t) must be <= 0", t=t[i[0]], index=list(i), alpha_prime=prime[i])


@torch.no_grad()
def check_schedule_endpoints(schedule) -> None:
    """alpha_0 ~ 1 and alpha_1 ~ 0 (within ENDPOINT_TOLERANCE); endpoints() agrees."""
    with torch.no_grad():
        values = schedule.alpha(torch.tensor([0.0, 1.0], dtype=_F64))
    if getattr(schedule, "vector_size", None) is not None:  # the extremes over the tokens
        values = torch.stack([values[0].min(), values[1].max()])
    a0, a1 = float(values[0]), float(values[1])
    if not a0 >= 1.0 - ENDPOINT_TOLERANCE:
        fail(f"alpha(0) must be within {ENDPOINT_TOLERANCE} of 1 (t = 0 is data)", alpha_0=a0)
    if not a1 <= ENDPOINT_TOLERANCE:
        fail(f"alpha(1) must be within {ENDPOINT_TOLERANCE} of 0 (t = 1 is noise)", alpha_1=a1)
    reported = schedule.endpoints()
    assert_close(torch.tensor(reported, dtype=_F64), values, "endpoints() vs alpha at t = 0, 1",
                 atol=1e-12)


@torch.no_grad()
def check_schedule_derivative(schedule) -> None:
    """alpha_prime matches central finite differences of alpha on [0.01, 0.99]."""
    t = torch.linspace(0.01, 0.99, 197, dtype=_F64)
    h = 1e-6
    with torch.no_grad():
        numeric = (schedule.alpha(t + h) - schedule.alpha(t - h)) / (2 * h)
        analytic = schedule.alpha_prime(t)
    assert_close(analytic, numeric, "alpha_prime vs central finite difference (h = 1e-6)",
                 atol=1e-6, rtol=1e-5, t=t)


@torch.no_grad()
def check_schedule_inverse(schedule) -> None:
    """inverse(alpha(t)) = t, and the inverse maps [alpha_1, alpha_0] into [0, 1]."""
    t = _grid()
    with torch.no_grad():
        alpha = schedule.alpha(t)
        back = schedule.inverse(alpha)
        if not isinstance(back, Tensor) or back.shape != t.shape:
            fail("inverse must return a tensor of the input's shape",
                 output_shape=tuple(back.shape) if isinstance(back, Tensor) else type(back).__name__)
        outside = (back < 0) | (back > 1) | torch.isnan(back)
        if bool(outside.any()):
            i = int(outside.nonzero()[0])
            fail("inverse(alpha) must lie in [0, 1] for alpha in [alpha_1, alpha_0]",
                 alpha=alpha[i], inverse=back[i])
        t_error = (back - t).abs()
        alpha_error = (schedule.alpha(back) - alpha).abs()
    # where alpha is flat, many t give the same float64 alpha: then the round trip in
    # alpha-space is the meaningful statement
    bad = (t_error > 1e-6) & (alpha_error > 1e-12)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        fail("inverse(alpha(t)) must return t", t=t[i], alpha=alpha[i], inverse=back[i],
             alpha_of_inverse=schedule.alpha(back[i]))


def check_schedule_gradients(schedule) -> None:
    """A learnable schedule back-propagates finite gradients to every trainable parameter."""
    params = [(name, p) for name, p in schedule.named_parameters() if p.requires_grad]
    t = torch.linspace(0.05, 0.95, 7, dtype=_F64)
    for method in ("alpha", "alpha_prime"):
        schedule.zero_grad(set_to_none=True)
        out = getattr(schedule, method)(t)
        if not out.requires_grad:
            fail(f"{method}(t) does not depend on the trainable parameters",
                 parameters=[name for name, _ in params])
        out.sum().backward()
        for name, p in params:
            if p.grad is None:
                if method == "alpha":
                    fail(f"parameter {name!r} gets no gradient from alpha(t)")
                continue
            if not bool(torch.isfinite(p.grad).all()):
                fail(f"parameter {name!r} gets a non-finite gradient from {method}(t)", grad=p.grad)
    schedule.zero_grad(set_to_none=True)


def applicable_checks(schedule) -> list:
    """The checks that apply to ``schedule``: all of the above, ``check_schedule_inverse``
    only when ``schedule.invertible``, ``check_schedule_gradients`` only when it has
    trainable parameters."""
    checks = [check_schedule_elementwise, check_schedule_finite,
              check_schedule_alpha_in_unit_interval, check_schedule_monotone,
              check_schedule_endpoints, check_schedule_derivative]
    if getattr(schedule, "invertible", False):
        checks.append(check_schedule_inverse)
    parameters = getattr(schedule, "parameters", None)
    if callable(parameters) and any(p.requires_grad for p in parameters()):
        checks.append(check_schedule_gradients)
    return checks
