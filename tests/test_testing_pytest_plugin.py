"""The opt-in pytest plugin, run in a separate pytest process on a throw-away project."""

import subprocess
import sys
import textwrap
from importlib import metadata

CONFTEST = 'pytest_plugins = ["ddkit.testing.pytest_plugin"]\n'

PASSING = '''
import pytest, torch, ddkit

class Stale(type(ddkit.build("schedule", "cosine"))):
    def alpha_prime(self, t):
        return 1.01 * super().alpha_prime(t)

process = ddkit.build("process", "masked", vocab_size=3, schedule="linear")

@pytest.mark.ddkit_conformance(ddkit.build("schedule", "cosine"), process,
                               (ddkit.build("sampler", "first_hitting"), process))
def test_builtins(ddkit_check):
    ddkit_check()

@pytest.mark.ddkit_conformance(Stale(), expected_failures={
    "check_schedule_derivative": "alpha_prime is scaled on purpose"})
def test_marked(ddkit_check):
    ddkit_check()

def test_generator(ddkit_generator):
    assert torch.equal(torch.rand(2, generator=ddkit_generator),
                       torch.rand(2, generator=torch.Generator().manual_seed(5)))

def test_profile():
    from hypothesis import settings
    assert settings.default.max_examples == 1000
'''

FAILING = '''
import pytest, torch, ddkit

class Broken(type(ddkit.build("schedule", "linear"))):
    def inverse(self, alpha):
        return alpha

@pytest.mark.ddkit_conformance(Broken())
def test_broken(ddkit_check):
    ddkit_check()
'''


def run_pytest(path, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--rootdir", str(path), str(path), *args],
                          capture_output=True, text=True, cwd=path, timeout=300)


def write(path, files):
    for name, text in files.items():
        (path / name).write_text(textwrap.dedent(text))


def test_conformance_marker_fixtures_and_profiles(tmp_path):
    write(tmp_path, {"conftest.py": CONFTEST, "test_kit.py": PASSING})
    result = run_pytest(tmp_path, "--ddkit-seed=5", "--ddkit-hypothesis-profile=ddkit-nightly", "-rx",
                        "-v")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # cosine: 7 schedule checks; masked: 19 process checks; first_hitting: 9 sampler checks;
    # Stale: 7 checks, one an expected failure; plus the two fixture tests
    assert "43 passed, 1 xfailed" in out, out
    assert "alpha_prime is scaled on purpose" in out
    assert "ddkit testing kit: ddkit" in out and "seed 5" in out


def test_a_failing_check_names_the_property_and_counterexample(tmp_path):
    write(tmp_path, {"conftest.py": CONFTEST, "test_broken.py": FAILING})
    result = run_pytest(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "1 failed, 6 passed" in out
    assert "check_schedule_inverse failed for Broken()" in out and "counterexample" in out
    assert "test_broken[Broken()-check_schedule_inverse]" in out


def test_the_plugin_is_not_loaded_unless_enabled(tmp_path):
    write(tmp_path, {"test_broken.py": FAILING})
    result = run_pytest(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "fixture 'ddkit_check' not found" in out
    assert not [ep for ep in metadata.entry_points(group="pytest11") if ep.value.startswith("ddkit")]


def test_a_test_without_the_marker_is_a_usage_error(tmp_path):
    write(tmp_path, {"conftest.py": CONFTEST,
                     "test_unmarked.py": "def test_unmarked(ddkit_check):\n    ddkit_check()\n"})
    result = run_pytest(tmp_path)
    assert result.returncode != 0
    assert "has no @pytest.mark.ddkit_conformance" in result.stdout + result.stderr

