r"""Conformance checks in the style of scikit-learn's ``check_estimator``.

One call runs every check that applies to a component, chosen by what it declares
(``schedule.invertible``, trainable parameters, ``process.capabilities`` such as
``"absorbing"``, whether the score form applies, ``sampler.requires``, the
parameterization's ``time_conditioning``, ``sampler.capabilities`` such as
``"variable_length"``)::

    >>> import ddkit
    >>> from ddkit.testing import check_schedule, check_process, check_sampler
    >>> report = check_schedule(ddkit.build("schedule", "cosine"))
    >>> report.ok
    True
    >>> process = ddkit.build("process", "masked", vocab_size=4, schedule="cosine")
    >>> check_process(process).ok and check_sampler(ddkit.build("sampler", "first_hitting"), process).ok
    True

A failing check raises :class:`ConformanceError` listing every broken property with its
counterexample. A check known to fail can be marked with a reason,
``check_process(p, expected_failures={"check_process_prior_reached": "shifted prior"})``;
it is then reported as an expected failure, and it is an error if it passes (the mark is
stale) or if the name is not a check that applies.

For pytest, :func:`parametrize_with_checks` makes one test per check, and
:func:`yield_checks` yields the ``(name, check)`` pairs for any other runner. The checks
themselves live in :mod:`~ddkit.testing.schedule_checks`,
:mod:`~ddkit.testing.process_checks` and :mod:`~ddkit.testing.sampler_checks`, where
their docstrings state each property.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import DDKitError
from ..process import Process
from ..sampler import Sampler
from ..schedule import Schedule
from . import process_checks, sampler_checks, schedule_checks
from ._failures import CheckFailure

ExpectedFailures = Mapping[str, str]


class ConformanceError(DDKitError, AssertionError):
    """One or more conformance checks failed; ``report`` holds every result."""

    def __init__(self, report: CheckReport):
        self.report = report
        super().__init__(report.summary())


class Check:
    """One conformance check bound to its component: call it with no arguments; it raises
    :class:`CheckFailure` (naming the check, the component and a counterexample) when the
    property is broken."""

    def __init__(self, name: str, func: Callable[..., None], args: tuple, component: str):
        self.name, self.func, self.args, self.component = name, func, args, component

    def __call__(self) -> None:
        try:
            self.func(*self.args)
        except CheckFailure as failure:
            raise failure.attach(self.name, self.component) from None

    @property
    def description(self) -> str:
        """The first paragraph of the check's docstring: the property it checks."""
        return " ".join((self.func.__doc__ or "").strip().split("\n\n")[0].split())

    def __repr__(self) -> str:
        return self.name


@dataclass
class CheckResult:
    """``status`` is ``passed``, ``failed``, ``xfailed`` (failed as expected) or ``xpassed``
    (marked as an expected failure but passed)."""

    name: str
    status: str
    message: str = ""
    reason: str = ""


@dataclass
class CheckReport:
    component: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def problems(self) -> list[CheckResult]:
        """Results that make the run fail: unexpected failures and stale expected failures."""
        return [r for r in self.results if r.status in ("failed", "xpassed")]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        counts = {s: sum(r.status == s for r in self.results)
                  for s in ("passed", "failed", "xfailed", "xpassed")}
        head = (f"conformance of {self.component}: " +
                ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        lines = [head]
        for r in self.results:
            if r.status == "failed":
                lines.append(f"- {r.message}")
            elif r.status == "xpassed":
                lines.append(f"- {r.name} passed but is marked as an expected failure "
                             f"({r.reason!r}); remove the mark")
            elif r.status == "xfailed":
                lines.append(f"- {r.name}: expected failure ({r.reason})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# -- describing components -------------------------------------------------------------------


def describe(component: Any) -> str:
    """A short readable name for a schedule, a process or a ``(sampler, process)`` pair."""
    if isinstance(component, tuple) and len(component) == 2:
        return f"{describe(component[0])} with {describe(component[1])}"
    if _has_own_repr(component):
        return " ".join(repr(component).split())
    name = type(component).__name__
    if isinstance(component, Process) or _looks_like_process(component):
        schedule = getattr(component, "schedule", None)
        extra = f", schedule={describe(schedule)}" if schedule is not None else ""
        return f"{name}(vocab_size={component.vocab_size}{extra})"
    simple = {k: v for k, v in vars(component).items()
              if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in simple.items())})"


def _has_own_repr(obj: Any) -> bool:
    return type(obj).__repr__ is not object.__repr__


def _looks_like_schedule(obj: Any) -> bool:
    return isinstance(obj, Schedule) or (callable(getattr(obj, "alpha", None))
                                         and callable(getattr(obj, "alpha_prime", None)))


def _looks_like_process(obj: Any) -> bool:
    return isinstance(obj, Process) or callable(getattr(obj, "transition_matrix", None))


def _looks_like_sampler(obj: Any) -> bool:
    return isinstance(obj, Sampler) or callable(getattr(obj, "sample", None))


# -- generating checks -----------------------------------------------------------------------


def _bind(funcs: list, args: tuple, component: str) -> Iterator[tuple[str, Check]]:
    for func in funcs:
        yield func.__name__, Check(func.__name__, func, args, component)


def yield_schedule_checks(schedule: Schedule) -> Iterator[tuple[str, Check]]:
    """``(name, check)`` for every check that applies to ``schedule``."""
    yield from _bind(schedule_checks.applicable_checks(schedule), (schedule,), describe(schedule))


def yield_process_checks(process: Process) -> Iterator[tuple[str, Check]]:
    """``(name, check)`` for every check that applies to ``process``."""
    yield from _bind(process_checks.applicable_checks(process), (process,), describe(process))


def yield_sampler_checks(sampler: Sampler, process: Process) -> Iterator[tuple[str, Check]]:
    """``(name, check)`` for every check that applies to ``sampler`` run with ``process``.
    Raises ``ValueError`` if the process lacks a capability the sampler requires."""
    missing = set(getattr(sampler, "requires", frozenset())) - set(process.capabilities)
    if missing:
        raise ValueError(f"{describe(sampler)} requires process capabilities {sorted(missing)} "
                         f"that {describe(process)} does not declare; pick a matching process")
    yield from _bind(sampler_checks.applicable_checks(sampler, process), (sampler, process),
                     describe((sampler, process)))


def yield_checks(component: Any) -> Iterator[tuple[str, Check]]:
    """Dispatch on the kind: a schedule, a process, or a ``(sampler, process)`` tuple."""
    if isinstance(component, tuple):
        if len(component) != 2 or not _looks_like_sampler(component[0]) \
                or not _looks_like_process(component[1]):
            raise TypeError(f"a sampler is checked as a (sampler, process) pair, got {component!r}")
        return yield_sampler_checks(*component)
    if _looks_like_schedule(component):
        return yield_schedule_checks(component)
    if _looks_like_process(component):
        return yield_process_checks(component)
    if _looks_like_sampler(component):
        raise TypeError("a sampler is checked with a process: pass (sampler, process)")
    raise TypeError(f"cannot check {component!r}: expected a schedule, a process or a "
                    "(sampler, process) pair")


# -- running checks --------------------------------------------------------------------------


def run_checks(checks: Iterable[tuple[str, Check]], component: str,
               expected_failures: ExpectedFailures | None = None, *,
               raise_on_failure: bool = True) -> CheckReport:
    """Run ``(name, check)`` pairs, honouring ``expected_failures`` (name -> reason)."""
    checks = list(checks)
    expected = dict(expected_failures or {})
    _validate_expected(expected, [name for name, _ in checks], component)
    report = CheckReport(component)
    for name, check in checks:
        reason = expected.get(name, "")
        try:
            check()
        except CheckFailure as failure:
            report.results.append(CheckResult(name, "xfailed" if reason else "failed",
                                              str(failure), reason))
        except Exception as exc:  # noqa: BLE001 - a crash in the component is a failure too
            where = traceback.extract_tb(exc.__traceback__)[-1]
            message = (f"{name} failed for {component}: raised {type(exc).__name__}: {exc} "
                       f"(at {where.filename}:{where.lineno})")
            report.results.append(CheckResult(name, "xfailed" if reason else "failed", message,
                                              reason))
        else:
            report.results.append(CheckResult(name, "xpassed" if reason else "passed", "", reason))
    if raise_on_failure and not report.ok:
        raise ConformanceError(report)
    return report


def _validate_expected(expected: Mapping[str, str], names: list[str], component: str) -> None:
    unknown = sorted(set(expected) - set(names))
    if unknown:
        raise ValueError(f"expected_failures names {unknown}, which are not checks that apply to "
                         f"{component}; applicable checks: {', '.join(names)}")
    empty = sorted(name for name, reason in expected.items() if not str(reason).strip())
    if empty:
        raise ValueError(f"expected_failures needs a reason for {empty}")


def check_schedule(schedule: Schedule, *, expected_failures: ExpectedFailures | None = None,
                   raise_on_failure: bool = True) -> CheckReport:
    """Run every applicable schedule check; raise :class:`ConformanceError` on failure."""
    return run_checks(yield_schedule_checks(schedule), describe(schedule), expected_failures,
                      raise_on_failure=raise_on_failure)


def check_process(process: Process, *, expected_failures: ExpectedFailures | None = None,
                  raise_on_failure: bool = True) -> CheckReport:
    """Run every applicable process check; raise :class:`ConformanceError` on failure.
    Use a small vocabulary: the checks compare with dense ``S x S`` computations."""
    return run_checks(yield_process_checks(process), describe(process), expected_failures,
                      raise_on_failure=raise_on_failure)


def check_sampler(sampler: Sampler, process: Process, *,
                  expected_failures: ExpectedFailures | None = None,
                  raise_on_failure: bool = True) -> CheckReport:
    """Run every applicable sampler check with ``process``; raise :class:`ConformanceError`
    on failure. Use a small vocabulary (the checks draw a few thousand short sequences)."""
    return run_checks(yield_sampler_checks(sampler, process), describe((sampler, process)),
                      expected_failures, raise_on_failure=raise_on_failure)


# -- pytest ----------------------------------------------------------------------------------


def parametrize_with_checks(components: Iterable[Any], *,
                            expected_failures: ExpectedFailures
                            | Callable[[Any], ExpectedFailures | None] | None = None):
    """A ``pytest.mark.parametrize`` over every applicable check of every component::

        from ddkit.testing import parametrize_with_checks

        @parametrize_with_checks([schedule, process, (sampler, process)])
        def test_conformance(component, check):
            check()

    ``components`` holds schedules, processes and ``(sampler, process)`` pairs; test ids
    read ``<component>-<check name>``. ``expected_failures`` is one mapping
    ``{check name: reason}`` for all components, or a function of the component returning
    one; those tests are marked ``xfail(strict=True)`` with the reason."""
    import pytest

    params = []
    seen_names: set[str] = set()
    for component in components:
        desc = describe(component)
        marks_for = (expected_failures(component) if callable(expected_failures)
                     else expected_failures) or {}
        checks = list(yield_checks(component))
        names = [name for name, _ in checks]
        seen_names.update(names)
        if callable(expected_failures):
            _validate_expected(marks_for, names, desc)
        for name, check in checks:
            marks = []
            if name in marks_for:
                marks.append(pytest.mark.xfail(reason=marks_for[name], strict=True))
            params.append(pytest.param(component, check, id=f"{desc}-{name}", marks=marks))
    if expected_failures is not None and not callable(expected_failures):
        _validate_expected(expected_failures, sorted(seen_names), "the given components")
    return pytest.mark.parametrize(("component", "check"), params)


__all__ = [
    "Check",
    "CheckFailure",
    "CheckReport",
    "CheckResult",
    "ConformanceError",
    "check_process",
    "check_sampler",
    "check_schedule",
    "describe",
    "parametrize_with_checks",
    "run_checks",
    "yield_checks",
    "yield_process_checks",
    "yield_sampler_checks",
    "yield_schedule_checks",
]
