"""The plugin system: records, building, and every failure mode."""

import importlib
import json
import textwrap
import types
import warnings

import pytest
from click.testing import CliRunner

import ddkit
from ddkit.cli import main as cli

REQUIRED = {
    ("process", "masked"),
    ("schedule", "linear"), ("schedule", "cosine"), ("schedule", "polynomial"),
    ("schedule", "geometric"), ("schedule", "loglinear"),
    ("parameterization", "mean"),
    ("loss", "continuous_elbo"), ("loss", "discrete_elbo"),
    ("sampler", "ancestral"), ("sampler", "first_hitting"),
}


def make_plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, ddkit.hookimpl(fn))
    return module


def schedule_plugin(name, component="linear"):
    def register_schedules(register):
        register(component, lambda: None, summary="a test schedule")

    return make_plugin(name, register_schedules=register_schedules)


def test_builtins_are_listed_with_their_source():
    records = {(r.kind, r.name): r for r in ddkit.list_components()}
    assert REQUIRED <= set(records)
    assert all(records[key].source == "ddkit" for key in REQUIRED)
    assert all(records[key].summary for key in REQUIRED)


def test_plugins_json_command():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert REQUIRED <= {(r["kind"], r["name"]) for r in rows}
    assert all({"kind", "name", "source", "summary"} <= set(r) for r in rows)


def test_plugins_table_command():
    result = CliRunner().invoke(cli, ["plugins", "--kind", "sampler"])
    assert result.exit_code == 0
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert {row[0] for row in rows} == {"sampler"}
    assert {"ancestral", "first_hitting"} <= {row[1] for row in rows}


def test_build_validates_with_the_plugins_own_model():
    schedule = ddkit.build("schedule", {"name": "polynomial", "exponent": 3})
    assert schedule.exponent == 3.0
    with pytest.raises(ddkit.ParameterError, match="exponent"):
        ddkit.build("schedule", "polynomial", exponent="steep")
    with pytest.raises(ddkit.ParameterError, match="Extra inputs"):
        ddkit.build("schedule", "linear", exponent=2)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ddkit.UnknownComponentError, match="Did you mean 'cosine'") as err:
        ddkit.build("schedule", "cosin")
    assert "linear" in str(err.value)  # the installed names are listed
    with pytest.raises(ddkit.UnknownComponentError, match="unknown component kind"):
        ddkit.build("schedul", "cosine")


def test_nested_component_parameters_are_validated():
    process = ddkit.build("process", "masked", vocab_size=3, schedule={"name": "polynomial", "exponent": 4})
    assert process.schedule.exponent == 4.0
    with pytest.raises(ddkit.ParameterError, match="exponent"):
        ddkit.build("process", "masked", vocab_size=3, schedule={"name": "polynomial", "exponent": -4})
    with pytest.raises(ddkit.ParameterError, match="Did you mean 'geometric'"):
        ddkit.build("process", "masked", vocab_size=3, schedule="geometrik")
    built = ddkit.build("schedule", "cosine")
    assert ddkit.build("process", "masked", vocab_size=3, schedule=built).schedule is built


def test_duplicate_names_name_both_sources():
    registry = ddkit.Registry(strict=False, autoload=False)
    registry.add_plugin(schedule_plugin("first"), name="first", source="dist-one")
    with pytest.warns(ddkit.PluginWarning, match="dist-one.*dist-two"):
        registry.add_plugin(schedule_plugin("second"), name="second", source="dist-two")
    with pytest.raises(ddkit.DuplicateComponentError, match="'dist-one'.*'dist-two'"):
        registry.get("schedule", "linear")
    strict = ddkit.Registry(strict=True, autoload=False)
    strict.add_plugin(schedule_plugin("first"), name="first", source="dist-one")
    with pytest.raises(ddkit.DuplicateComponentError, match="dist-two"):
        strict.add_plugin(schedule_plugin("second"), name="second", source="dist-two")


def test_hook_matching_no_spec_is_an_error():
    def register_schedulez(register):
        pass

    registry = ddkit.Registry(autoload=False)
    with pytest.raises(ddkit.PluginValidationError, match="typo-plugin.*register_schedulez"):
        registry.add_plugin(make_plugin("typo", register_schedulez=register_schedulez),
                            name="typo-plugin", source="typo-dist")

    def register_samplers(register, extra):  # an argument the spec does not have
        pass

    with pytest.raises(ddkit.PluginValidationError, match="bad-args"):
        registry.add_plugin(make_plugin("args", register_samplers=register_samplers),
                            name="bad-args", source="dist")


def test_a_hook_that_raises_is_a_warning_and_strict_makes_it_an_error():
    def register_samplers(register):
        raise RuntimeError("boom")

    registry = ddkit.Registry(autoload=False)
    registry.add_plugin(schedule_plugin("fine", "fine-schedule"), name="fine", source="fine-dist")
    with pytest.warns(ddkit.PluginWarning, match="broken-plugin.*boom"):
        registry.add_plugin(make_plugin("broken", register_samplers=register_samplers),
                            name="broken-plugin", source="broken-dist")
    assert registry.names("schedule") == ["fine-schedule"]
    strict = ddkit.Registry(strict=True, autoload=False)
    with pytest.raises(ddkit.PluginError, match="boom"):
        strict.add_plugin(make_plugin("broken", register_samplers=register_samplers),
                          name="broken-plugin", source="broken-dist")


def test_params_must_be_a_pydantic_model():
    def register_schedules(register):
        register("odd", lambda: None, params=dict)

    with pytest.warns(ddkit.PluginWarning, match="odd-dist.*pydantic"):
        ddkit.Registry(autoload=False).add_plugin(make_plugin("odd", register_schedules=register_schedules),
                                                  name="odd", source="odd-dist")
    with pytest.raises(ddkit.PluginError, match="pydantic"):
        ddkit.Registry(strict=True, autoload=False).add_plugin(
            make_plugin("odd", register_schedules=register_schedules), name="odd", source="odd-dist")


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """A distribution on sys.path with one good and one broken entry point in group 'ddkit'."""
    dist = tmp_path / "fakeplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[ddkit]\ngood = fakeplug_good\nbroken = fakeplug_broken\n")
    (tmp_path / "fakeplug_broken.py").write_text("raise ImportError('missing dependency xyz')\n")
    (tmp_path / "fakeplug_good.py").write_text(textwrap.dedent("""
        import ddkit
        from pydantic import BaseModel

        @ddkit.hookimpl
        def register_schedules(register):
            register("fake-linear", lambda: "built", summary="from a fake distribution")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield


def test_import_failure_is_a_warning_naming_the_plugin(fake_distribution):
    with pytest.warns(ddkit.PluginWarning, match="'broken' from distribution 'fakeplug'.*xyz"):
        registry = ddkit.Registry(strict=False, autoload=True).load_entry_points()
    assert registry.get("schedule", "fake-linear").source == "fakeplug"
    assert registry.build("schedule", "fake-linear") == "built"
    assert registry.get("process", "masked").source == "ddkit"  # everything else still works
    with pytest.raises(ddkit.PluginError, match="xyz"):
        ddkit.Registry(strict=True, autoload=True).load_entry_points()


def test_environment_variable_disables_autoload(fake_distribution, monkeypatch):
    monkeypatch.setenv("DDKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry = ddkit.Registry().load_entry_points()
    assert "fake-linear" not in registry.names("schedule")
    assert "masked" in registry.names("process")  # built-ins are not third-party plugins


def test_strict_mode_from_the_environment(monkeypatch):
    monkeypatch.setenv("DDKIT_STRICT_PLUGINS", "1")
    assert ddkit.Registry().strict
    monkeypatch.setenv("DDKIT_STRICT_PLUGINS", "0")
    assert not ddkit.Registry().strict


def test_record_json_has_the_parameter_schema():
    record = ddkit.get_registry().get("schedule", "polynomial")
    data = record.to_json()
    assert data["params"]["properties"]["exponent"]["default"] == 2.0


def test_a_built_object_passes_through_build():
    obj = object()
    assert ddkit.build("sampler", obj) is obj
    with pytest.raises(ddkit.ParameterError, match="built"):
        ddkit.build("sampler", obj, steps=3)
