"""How a conformance check reports a broken property: :class:`CheckFailure` with a
counterexample, and the comparison helpers that build one."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class CheckFailure(AssertionError):
    """A conformance check found a counterexample to the property it checks.

    ``str(failure)`` reads ``<check> failed for <component>: <property>`` followed by the
    counterexample (the inputs and the values that disagree)."""

    def __init__(self, message: str, counterexample: dict[str, Any] | None = None):
        self.message = message
        self.counterexample = dict(counterexample or {})
        self.check: str | None = None
        self.component: str | None = None
        super().__init__(self._format())

    def attach(self, check: str, component: str) -> CheckFailure:
        """Record which check on which component failed (the runner does this)."""
        self.check, self.component = check, component
        self.args = (self._format(),)
        return self

    def _format(self) -> str:
        head = self.message
        if self.check is not None:
            head = f"{self.check} failed for {self.component}: {self.message}"
        if not self.counterexample:
            return head
        lines = [f"    {key} = {_show(value)}" for key, value in self.counterexample.items()]
        return head + "\n  counterexample:\n" + "\n".join(lines)


def _show(value: Any, limit: int = 400) -> str:
    if isinstance(value, Tensor):
        if value.numel() == 1:
            text = repr(value.item())
        else:
            with torch.no_grad():
                shown = value.detach().cpu()
                if shown.is_floating_point():
                    shown = shown.double().round(decimals=10)
                text = f"tensor{tuple(value.shape)} {shown.tolist()}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(message: str, **counterexample: Any) -> None:
    """Raise :class:`CheckFailure` with ``message`` (the property that broke) and the
    counterexample given as keyword arguments."""
    raise CheckFailure(message, counterexample)


def assert_close(actual: Tensor, expected: Tensor, what: str, *, atol: float, rtol: float = 0.0,
                 **context: Any) -> None:
    r"""Fail unless :math:`|a - e| \le \mathrm{atol} + \mathrm{rtol}\,|e|` everywhere (equal
    infinities count as close); the counterexample is the worst entry and ``context`` (a
    context tensor shaped like a prefix of ``actual`` is shown at the failing index)."""
    actual = torch.as_tensor(actual).to(torch.float64)
    expected = torch.as_tensor(expected).to(torch.float64)
    if actual.shape != expected.shape:
        fail(f"{what}: shape {tuple(actual.shape)} differs from the expected {tuple(expected.shape)}",
             **context)
    same_inf = torch.isinf(actual) & torch.isinf(expected) & (torch.sign(actual) == torch.sign(expected))
    error = torch.where(same_inf, torch.zeros_like(actual), (actual - expected).abs())
    allowed = atol + rtol * expected.abs().nan_to_num(posinf=0.0, neginf=0.0)
    bad = ~(error <= allowed)  # NaN counts as bad
    if bool(bad.any()):
        excess = torch.where(bad, (error - allowed).nan_to_num(nan=float("inf")), torch.zeros_like(error))
        index = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape)) if excess.dim() else ()
        fail(f"{what}: |actual - expected| = {float(error[index]):.3g} exceeds "
             f"{atol:g} + {rtol:g}|expected| at index {list(index)}",
             actual=actual[index], expected=expected[index],
             **{key: _at(value, index, actual.shape) for key, value in context.items()})


def _at(value: Any, index: tuple[int, ...], shape: torch.Size) -> Any:
    """The part of a context tensor that lines up with the failing index: its leading axes
    that match the leading axes of the compared shape are indexed (e.g. the times of a batch
    of matrices, or the row of per-row inputs)."""
    if not isinstance(value, Tensor):
        return value
    lead = 0
    while lead < min(value.dim(), len(shape)) and value.shape[lead] == shape[lead]:
        lead += 1
    return value[index[:lead]] if lead else value
