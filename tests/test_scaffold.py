"""``ddkit new-plugin``: each kind is scaffolded into a temporary directory, pip-installed,
passes its own generated tests, is listed by ``ddkit plugins --json`` with its distribution
as source, and is used from a pipeline file through an override; wrong names and an
existing directory are refused with one clear line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ddkit.cli import main
from ddkit.contrib.scaffold import KINDS, ScaffoldError, plugin_files, write_plugin

ROOT = Path(__file__).resolve().parents[1]
NAMES = {kind: f"scaffolded_{kind}" for kind in KINDS}
#: overrides that put every kind into pipelines/markov.yaml (the corrector needs the masked
#: process, so the scaffolded process is checked in a second file)
OVERRIDES = {
    "masked": ["process.schedule={name: scaffolded_schedule, power: 3.0}",
               "sampler={name: scaffolded_sampler, steps: 16, corrector: {name: scaffolded_corrector, every: 2}}"],
    "own process": ["process={name: scaffolded_process, schedule: scaffolded_schedule}"],
}

def run(*args, **kwargs):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """One package per kind, written by the command and pip-installed into one target
    directory; the environment that puts it on the path of a subprocess."""
    parent, target = tmp_path_factory.mktemp("plugins"), tmp_path_factory.mktemp("site")
    for kind, name in NAMES.items():
        result = CliRunner().invoke(main, ["new-plugin", name, "--kind", kind, "--dir", str(parent)])
        assert result.exit_code == 0, result.output
        assert f"wrote {parent / name}/ ({kind})" in result.output
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--target", target, *(parent / name for name in NAMES.values()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])))
    env.pop("DDKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    return parent, env


def test_each_generated_package_passes_its_own_tests(installed):
    parent, env = installed
    out = run(sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--rootdir", parent,
              *(parent / name / "tests" for name in NAMES.values()), env=env, cwd=parent)
    assert "failed" not in out and "error" not in out.lower()
    for name in NAMES.values():
        assert f"PASSED {name}/tests/test_{name}.py::test_conformance" in out
    assert "PASSED scaffolded_corrector/tests/test_scaffolded_corrector.py::test_corrector_keeps_the_marginal" in out


def test_every_component_is_listed_with_its_distribution(installed):
    _, env = installed
    rows = json.loads(run(sys.executable, "-m", "ddkit.cli", "plugins", "--json", env=env, cwd="/"))
    ours = {(r["kind"], r["name"]): r for r in rows if r["name"] in NAMES.values()}
    assert set(ours) == {(kind, name) for kind, name in NAMES.items()}
    for (kind, name), row in ours.items():
        assert row["source"] == name.replace("_", "-") and row["summary"]
    params = ours[("schedule", NAMES["schedule"])]["params"]["properties"]
    assert params["power"]["minimum"] == 1.0  # declared once, in the __init__ signature


@pytest.mark.parametrize("overrides", OVERRIDES.values(), ids=OVERRIDES.keys())
def test_a_pipeline_uses_them_through_overrides(installed, overrides):
    _, env = installed
    out = run(sys.executable, "-m", "ddkit.cli", "config", "validate", "--no-data",
              ROOT / "pipelines" / "markov.yaml", *overrides, env=env, cwd=ROOT)
    assert "pipelines/markov.yaml: valid (vocabulary 8" in out


def test_each_kind_writes_its_module_and_its_tests():
    files = plugin_files("demo", ["sampler", "schedule", "sampler"])
    assert set(files) == {"pyproject.toml", "README.md", "src/demo/__init__.py", "src/demo/schedule.py",
                          "src/demo/sampler.py", "tests/test_demo.py"}
    assert '[project.entry-points.ddkit]\ndemo = "demo"' in files["pyproject.toml"]
    assert 'name = "demo"' in files["pyproject.toml"]
    assert "class DemoSampler(ddkit.GridSampler)" in files["src/demo/sampler.py"]
    assert "__" not in files["src/demo/schedule.py"].replace("__init__", "").replace("__future__", "")
    assert 'ddkit.build("schedule", "demo")' in files["tests/test_demo.py"]
    assert "corrector" not in files["tests/test_demo.py"]


@pytest.mark.parametrize("name, kinds, message", [
    ("My-Plugin", ["schedule"], "invalid package name 'My-Plugin': expected a lowercase Python identifier"),
    ("class", ["schedule"], "invalid package name 'class'"),
    ("torch", ["sampler"], "invalid package name 'torch': a module of that name is already importable"),
    ("linear", ["process", "schedule"], "schedule name 'linear' is taken (a built-in); choose another NAME"),
    ("fresh_name", ["scheduler"], "kinds must be among schedule, process, sampler, corrector, got ['scheduler']"),
])
def test_wrong_names_and_kinds_are_refused(tmp_path, name, kinds, message):
    with pytest.raises(ScaffoldError) as info:
        write_plugin(name, kinds, tmp_path)
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_target_directory_is_refused(tmp_path):
    (tmp_path / "taken_dir").mkdir()
    result = CliRunner().invoke(main, ["new-plugin", "taken_dir", "--kind", "schedule", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: target directory {str(tmp_path / 'taken_dir')!r} already exists; "
                                     "remove it or choose another NAME or --dir")
    assert list((tmp_path / "taken_dir").iterdir()) == []


def test_a_built_in_name_is_one_error_line_on_the_command_line(tmp_path):
    result = CliRunner().invoke(main, ["new-plugin", "ancestral", "--kind", "sampler", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: sampler name 'ancestral' is taken (a built-in); choose another NAME"
