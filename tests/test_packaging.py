"""Installation: the built wheel works outside the checkout, and a third-party plugin
distribution is discovered through the ``ddkit`` entry-point group."""

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "contrib" / "example_plugin"


def run(*args, **kwargs):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def pip_install_into(target, source):
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--target", target, source)


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A new virtual environment with ddkit installed from a built wheel; its dependencies
    (torch, pydantic, ...) are borrowed from this environment through a .pth file."""
    tmp = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "-w", tmp / "dist", ROOT)
    (wheel,) = (tmp / "dist").glob("ddkit-*.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    # plain path lines: this environment's .pth hooks (the editable ddkit finder) do not run there
    (purelib / "borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip_install_into(purelib, wheel)
    return python, venv


def test_wheel_imports_from_the_fresh_venv(fresh_venv):
    python, venv = fresh_venv
    location = run(python, "-c", "import ddkit, ddkit.plugins.samplers.ancestral; print(ddkit.__file__)",
                   cwd="/")
    assert str(venv) in location  # not the checkout
    rows = json.loads(run(python, "-m", "ddkit.cli", "plugins", "--json", cwd="/"))
    names = {(r["kind"], r["name"]) for r in rows}
    assert {("process", "masked"), ("sampler", "first_hitting"), ("schedule", "loglinear")} <= names


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory):
    target = tmp_path_factory.mktemp("plugin")
    pip_install_into(target, EXAMPLE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])))
    env.pop("DDKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    return env


def test_third_party_plugin_is_listed(example_plugin):
    rows = json.loads(run(sys.executable, "-m", "ddkit.cli", "plugins", "--json", env=example_plugin, cwd="/"))
    ours = {(r["kind"], r["name"]): r for r in rows if r["source"] == "ddkit-example-plugin"}
    assert set(ours) == {("schedule", "exponential"), ("sampler", "any_order")}
    assert ours[("schedule", "exponential")]["summary"]


def test_third_party_plugin_builds_by_name(example_plugin):
    code = (
        "import torch, ddkit\n"
        "p = ddkit.build('process', 'masked', vocab_size=3, schedule={'name': 'exponential', 'rate': 2.0})\n"
        "s = ddkit.build('sampler', 'any_order', tokens_per_step=2)\n"
        "r = s.sample(lambda x, t: torch.zeros(*x.shape, 3), p, num_samples=2, length=4,"
        " generator=torch.Generator().manual_seed(0))\n"
        "print(type(p.schedule).__name__, r.nfe, int((r.tokens < 3).all()))\n"
    )
    assert run(sys.executable, "-c", code, env=example_plugin, cwd="/").split() == ["ExponentialSchedule", "2", "1"]


def test_autoload_switch_hides_the_third_party_plugin(example_plugin):
    env = dict(example_plugin, DDKIT_DISABLE_PLUGIN_AUTOLOAD="1")
    rows = json.loads(run(sys.executable, "-m", "ddkit.cli", "plugins", "--json", env=env, cwd="/"))
    assert all(r["source"] == "ddkit" for r in rows)


def test_third_party_plugin_passes_its_own_tests(example_plugin):
    run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", EXAMPLE / "tests",
        env=example_plugin, cwd=EXAMPLE)
