"""The command line with a broken third-party distribution installed (hook name typo, hook
argument typo, a missing dependency, built-in names registered again): everything built in
keeps working, each problem is one warning line, and strict loading is one error line."""

import json
import os
import subprocess
import sys

import pytest

from pipeline_helpers import ROOT, TINY
from plugin_helpers import BROKEN_MODULES, install_broken_distribution


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory):
    site = install_broken_distribution(tmp_path_factory.mktemp("site"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    env.pop("DDKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    env.pop("DDKIT_STRICT_PLUGINS", None)
    return env


def ddkit(*args, env):
    return subprocess.run([sys.executable, "-m", "ddkit.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=ROOT)


def assert_warned_about_every_broken_plugin(result):
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    for plugin in BROKEN_MODULES:
        assert any(plugin in line and "broken-plugins" in line for line in warnings), (plugin, result.stderr)


def test_help_works_and_lists_the_builtin_commands(broken_env):
    result = ddkit("--help", env=broken_env)
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout and "plugins" in result.stdout
    assert_warned_about_every_broken_plugin(result)


def test_plugins_lists_both_namesakes_and_the_builtins(broken_env):
    result = ddkit("plugins", env=broken_env)
    assert result.returncode == 0, result.stderr
    rows = {tuple(line.split()[:3]) for line in result.stdout.splitlines()[1:]}
    assert {("sampler", "ancestral", "ddkit"), ("sampler", "broken-plugins:ancestral", "broken-plugins"),
            ("schedule", "linear", "ddkit"), ("process", "masked", "ddkit")} <= rows
    assert_warned_about_every_broken_plugin(result)
    listed = json.loads(ddkit("plugins", "--json", env=broken_env).stdout)
    ancestral = {r["qualified_name"]: r["selected_by_plain_name"] for r in listed if r["name"] == "ancestral"}
    assert ancestral == {"ddkit:ancestral": True, "broken-plugins:ancestral": False}


def test_config_validation_takes_plain_and_qualified_names(broken_env):
    for overrides in ([], ["sampler.name=ddkit:ancestral", "process.schedule=ddkit:linear"]):
        result = ddkit("config", "validate", "pipelines/markov.yaml", *overrides, env=broken_env)
        assert result.returncode == 0, (overrides, result.stderr)
        assert "Traceback" not in result.stderr
    # the plugin's namesake is validated against its own (empty) parameters
    result = ddkit("config", "validate", "pipelines/markov.yaml", "sampler.name=broken-plugins:ancestral",
                   env=broken_env)
    assert result.returncode == 2
    assert "broken-plugins:ancestral" in result.stderr and "steps" in result.stderr
    result = ddkit("config", "validate", "pipelines/markov.yaml", "sampler.name=needs-dependency", env=broken_env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "no usable sampler named 'needs-dependency'" in result.stderr and "a_dependency_that_is_not_installed" \
        in result.stderr and "Did you mean" not in result.stderr


def test_a_builtin_run_uses_the_builtin_sampler_its_config_names(broken_env, tmp_path):
    small = ["data.dataset.train_sequences=64", "data.dataset.validation_sequences=16",
             "data.dataset.test_sequences=16"]
    result = ddkit("run", "pipelines/markov.yaml", *TINY, *small, "--out", tmp_path / "run", env=broken_env)
    assert result.returncode == 0, result.stderr  # the clashing plugin's ancestral would raise
    assert (tmp_path / "run" / "report.md").is_file()


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["config", "validate", "pipelines/markov.yaml"]])
def test_strict_loading_is_one_error_line_and_a_failing_exit_status(broken_env, args):
    result = ddkit(*args, env=dict(broken_env, DDKIT_STRICT_PLUGINS="1"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "broken-plugins" in lines[0], result.stderr
