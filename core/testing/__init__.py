r"""ddkit's testing kit: conformance checks, exact oracles and hypothesis strategies.

A third-party schedule, process or sampler is checked with one call::

    >>> import ddkit
    >>> from ddkit.testing import check_schedule
    >>> check_schedule(ddkit.build("schedule", "cosine")).ok
    True

* :func:`check_schedule`, :func:`check_process`, :func:`check_sampler` — every applicable
  conformance check (see :mod:`ddkit.testing.checks`); :func:`parametrize_with_checks`
  turns them into pytest tests, and the opt-in pytest plugin
  ``ddkit.testing.pytest_plugin`` (enable it with
  ``pytest_plugins = ["ddkit.testing.pytest_plugin"]``) adds a marker and fixtures;
* :class:`MarkovChain`, :class:`HiddenMarkovModel` — data with exact log-probabilities and
  entropies; :class:`OracleDenoiser` — the exact optimal denoiser for such data under any
  per-token process (:mod:`ddkit.testing.oracles`); :class:`LeaveOneOutOracle` — the exact
  hollow conditionals :math:`p(x^d \mid x_t^{-d})` for the informed corrector;
* :mod:`ddkit.testing.stats` — distances and non-asymptotic sampling bounds;
* :mod:`ddkit.testing.strategies` — hypothesis strategies (needs ``hypothesis``, the
  ``test`` extra; import it explicitly).

The "Testing your plugin" page of the documentation walks through it.
"""

from ._failures import CheckFailure
from .checks import (
    Check,
    CheckReport,
    CheckResult,
    ConformanceError,
    check_process,
    check_sampler,
    check_schedule,
    describe,
    parametrize_with_checks,
    run_checks,
    yield_checks,
    yield_process_checks,
    yield_sampler_checks,
    yield_schedule_checks,
)
from .leave_one_out import LeaveOneOutOracle
from .oracles import HiddenMarkovModel, MarkovChain, OracleDenoiser, SequenceDistribution

__all__ = [
    "Check",
    "CheckFailure",
    "CheckReport",
    "CheckResult",
    "ConformanceError",
    "HiddenMarkovModel",
    "LeaveOneOutOracle",
    "MarkovChain",
    "OracleDenoiser",
    "SequenceDistribution",
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
