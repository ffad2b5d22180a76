"""An opt-in pytest plugin for authors of ddkit plugins.

It is *not* registered as a ``pytest11`` entry point, so it never loads into unrelated
test runs. Enable it in the top-level ``conftest.py`` of your project (or in a test
module)::

    pytest_plugins = ["ddkit.testing.pytest_plugin"]

It provides:

* the marker ``ddkit_conformance(*components, expected_failures=None)``: a test that takes
  the ``ddkit_check`` argument is parametrized with every applicable conformance check of
  the marked components (schedules, processes, ``(sampler, process)`` pairs)::

      import pytest, ddkit

      process = ddkit.build("process", "masked", vocab_size=4, schedule="exponential")

      @pytest.mark.ddkit_conformance(process.schedule, process,
                                     (ddkit.build("sampler", "any_order"), process))
      def test_conformance(ddkit_check):
          ddkit_check()

  ``expected_failures`` (``{check name: reason}``) marks checks ``xfail(strict=True)``;
* the fixture ``ddkit_generator``: a ``torch.Generator`` seeded with ``--ddkit-seed``
  (default 0), shown in the test report header;
* the hypothesis profiles ``ddkit-dev``, ``ddkit-ci`` and ``ddkit-nightly``
  (:func:`ddkit.testing.strategies.register_profiles`), one of which
  ``--ddkit-hypothesis-profile NAME`` loads.
"""

from __future__ import annotations

import pytest
import torch

from .checks import parametrize_with_checks

MARKER = "ddkit_conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ddkit", "ddkit testing kit")
    group.addoption("--ddkit-seed", type=int, default=0,
                    help="seed of the ddkit_generator fixture (default 0)")
    group.addoption("--ddkit-hypothesis-profile", default=None,
                    help="load this hypothesis profile (ddkit-dev, ddkit-ci, ddkit-nightly)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*components, expected_failures=None): parametrize the ddkit_check argument "
        "with every conformance check of the components",
    )
    # default=: a plugin enabled from a test module registers after the command line is parsed
    profile = config.getoption("--ddkit-hypothesis-profile", default=None)
    try:
        from . import strategies
    except ImportError:  # hypothesis is optional; the profiles need it
        if profile:
            raise pytest.UsageError("--ddkit-hypothesis-profile needs the hypothesis package")
        return
    strategies.register_profiles()
    if profile:
        from hypothesis import settings

        settings.load_profile(profile)


def pytest_report_header(config: pytest.Config) -> str:
    import ddkit

    seed = config.getoption("--ddkit-seed", default=0)
    return f"ddkit testing kit: ddkit {ddkit.__version__}, ddkit_generator seed {seed}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ddkit_check" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} takes ddkit_check but has no "
            f"@pytest.mark.{MARKER}(...) naming the components to check")
    decorator = parametrize_with_checks(marker.args,
                                        expected_failures=marker.kwargs.get("expected_failures"))
    _, params = decorator.args
    metafunc.parametrize("ddkit_check", [
        pytest.param(p.values[1], id=p.id, marks=p.marks) for p in params
    ])


@pytest.fixture
def ddkit_generator(request: pytest.FixtureRequest) -> torch.Generator:
    """A CPU generator seeded with ``--ddkit-seed``."""
    return torch.Generator().manual_seed(request.config.getoption("--ddkit-seed", default=0))
