"""The plugin system: records, building, and every failure mode."""

import importlib
import json
import re
import types
import typing
import warnings
from importlib import metadata
from pathlib import Path
from typing import Annotated

import pytest
import torch
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field

import ddkit
from ddkit.cli import main as cli
from ddkit.params import parameter_names, signature_defaults
from pipeline_helpers import invoke
from plugin_helpers import install_broken_distribution, install_distribution, write_module

ROOT = Path(__file__).resolve().parents[1]

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


def built_schedule_plugin(name, component, schedule_class):
    def register_schedules(register):
        register(component, schedule_class, summary=f"from {name}")

    return make_plugin(name, register_schedules=register_schedules)


class Cubic(ddkit.Schedule):
    def alpha(self, t):
        return 1 - t**3

    def alpha_prime(self, t):
        return -3 * t**2


class Quadratic(Cubic):
    def alpha(self, t):
        return 1 - t**2


def test_a_name_clash_keeps_both_components_selectable_by_qualified_name():
    registry = ddkit.Registry(strict=False, autoload=False)
    registry.add_plugin(built_schedule_plugin("second", "curve", Quadratic), name="second", source="dist-two")
    with pytest.warns(ddkit.PluginWarning, match="'dist-one'.*'dist-two'.*selects 'dist-one:curve'"):
        registry.add_plugin(built_schedule_plugin("first", "curve", Cubic), name="first", source="dist-one")
    # the plain name: distributions in alphabetical order, whatever the loading order
    assert isinstance(registry.build("schedule", "curve"), Cubic)
    assert isinstance(registry.build("schedule", "dist-two:curve"), Quadratic)
    assert isinstance(registry.build("schedule", {"name": "dist-one:curve"}), Cubic)
    assert isinstance(registry.build("schedule", "Dist_Two:curve"), Quadratic)  # normalised like pip
    assert [r.qualified_name for r in registry.records("schedule")] == ["dist-one:curve", "dist-two:curve"]
    assert registry.names("schedule") == ["curve"]
    with pytest.raises(ddkit.UnknownComponentError, match="provided by 'dist-one:curve', 'dist-two:curve'"):
        registry.get("schedule", "dist-three:curve")
    strict = ddkit.Registry(strict=True, autoload=False)
    strict.add_plugin(schedule_plugin("first"), name="first", source="dist-one")
    with pytest.raises(ddkit.DuplicateComponentError, match="dist-two"):
        strict.add_plugin(schedule_plugin("second"), name="second", source="dist-two")


def test_a_builtin_name_reregistered_by_a_plugin_still_selects_the_builtin():
    registry = ddkit.Registry(autoload=False).load_entry_points()
    builtin = registry.get("sampler", "ancestral")

    class Impostor(ddkit.Sampler):
        def sample(self, *args, **kwargs):
            raise RuntimeError("not the built-in")

    def register_samplers(register):
        register("ancestral", Impostor, summary="re-registers a built-in name")

    with pytest.warns(ddkit.PluginWarning, match="selects 'ddkit:ancestral'.*'aaa-plugin:ancestral'"):
        registry.add_plugin(make_plugin("impostor", register_samplers=register_samplers),
                            name="impostor", source="aaa-plugin")  # first by name, still loses
    assert registry.get("sampler", "ancestral") is builtin
    assert registry.get("sampler", "ddkit:ancestral") is builtin
    assert registry.get("sampler", "aaa-plugin:ancestral").factory is Impostor
    record, params = registry.validate("sampler", {"name": "ddkit:ancestral", "steps": 4})
    assert record is builtin and params.steps == 4
    with pytest.raises(ddkit.ParameterError, match="steps"):
        registry.validate("sampler", {"name": "ddkit:ancestral", "steps": 0})
    assert not isinstance(registry.build("sampler", "ancestral"), Impostor)


def test_qualified_names_in_a_pipeline_file(tmp_path):
    text = (ROOT / "pipelines" / "markov.yaml").read_text()
    for plain, qualified in [("sampler: {name: ancestral,", 'sampler: {name: "ddkit:ancestral",'),
                             ("schedule: linear}", 'schedule: "ddkit:linear"}')]:
        assert plain in text
        text = text.replace(plain, qualified)
    path = tmp_path / "qualified.yaml"
    path.write_text(text)
    result = invoke("config", "show", "--json", "--no-data", path)
    assert result.exit_code == 0, result.output
    resolved = json.loads(result.stdout)
    assert resolved["sampler"]["name"] == "ddkit:ancestral" and resolved["sampler"]["steps"] == 32
    assert resolved["process"]["schedule"] in ("ddkit:linear", {"name": "ddkit:linear"})
    result = invoke("config", "validate", "--no-data", path, "sampler.name=nope:ancestral")
    assert result.exit_code == 2
    assert "sampler.name" in result.output and "no sampler 'ancestral' from distribution 'nope'" in result.output


def test_a_distribution_registering_one_name_twice_keeps_the_first():
    registry = ddkit.Registry(autoload=False)
    registry.add_plugin(built_schedule_plugin("a", "curve", Cubic), name="a", source="dist")
    with pytest.warns(ddkit.PluginWarning, match="registered twice by distribution 'dist'.*first is kept"):
        registry.add_plugin(built_schedule_plugin("b", "curve", Quadratic), name="b", source="dist")
    assert registry.get("schedule", "dist:curve").factory is Cubic


def test_a_component_name_cannot_contain_the_qualifier():
    with pytest.warns(ddkit.PluginWarning, match="named 'a:b'"):
        registry = ddkit.Registry(autoload=False).add_plugin(schedule_plugin("p", "a:b"), name="p", source="d")
    assert registry.names("schedule") == []


def test_a_hook_matching_no_spec_is_skipped_with_a_warning_and_strict_makes_it_an_error():
    def register_schedulez(register):
        pass

    registry = ddkit.Registry(strict=False, autoload=False)
    registry.add_plugin(schedule_plugin("fine", "fine-schedule"), name="fine", source="fine-dist")
    typo = make_plugin("typo", register_schedulez=register_schedulez)
    with pytest.warns(ddkit.PluginWarning, match="typo-plugin.*typo-dist.*register_schedulez"):
        registry.add_plugin(typo, name="typo-plugin", source="typo-dist")
    assert registry.names("schedule") == ["fine-schedule"]

    def register_samplers(register, extra):  # an argument the spec does not have
        register("extra-sampler", object)

    bad_args = make_plugin("args", register_samplers=register_samplers)
    with pytest.warns(ddkit.PluginWarning, match="bad-args.*extra"):
        registry.add_plugin(bad_args, name="bad-args", source="dist")
    assert registry.names("sampler") == []
    with pytest.raises(ddkit.UnknownComponentError, match="bad-args.*invalid") as err:
        registry.get("sampler", "extra-sampler")
    assert "Did you mean" not in str(err.value)
    assert registry.get("schedule", "fine-schedule").source == "fine-dist"  # the others keep working

    strict = ddkit.Registry(strict=True, autoload=False)
    with pytest.raises(ddkit.PluginValidationError, match="typo-plugin.*register_schedulez"):
        strict.add_plugin(typo, name="typo-plugin", source="typo-dist")
    with pytest.raises(ddkit.PluginValidationError, match="bad-args"):
        strict.add_plugin(bad_args, name="bad-args", source="dist")


def test_a_hook_that_raises_is_a_warning_and_strict_makes_it_an_error():
    def register_samplers(register):
        register("my-sampler", object)
        raise RuntimeError("boom")

    registry = ddkit.Registry(autoload=False)
    registry.add_plugin(schedule_plugin("fine", "fine-schedule"), name="fine", source="fine-dist")
    with pytest.warns(ddkit.PluginWarning, match="broken-plugin.*boom"):
        registry.add_plugin(make_plugin("broken", register_samplers=register_samplers),
                            name="broken-plugin", source="broken-dist")
    assert registry.names("schedule") == ["fine-schedule"]
    # a lookup of a name the failed hook registers says why it is missing, not a close name
    registry.add_plugin(schedule_plugin("samplers", "my-samplers"), name="samplers", source="other")
    with pytest.raises(ddkit.UnknownComponentError,
                       match="no usable sampler named 'my-sampler': plugin 'broken-plugin'.*register_samplers.*boom") as err:
        registry.get("sampler", "my-sampler")
    assert "Did you mean" not in str(err.value)
    with pytest.raises(ddkit.UnknownComponentError, match="Did you mean 'fine-schedule'") as err:
        registry.get("schedule", "fine-schedul")  # the failure was in another kind
    assert "boom" not in str(err.value)
    strict = ddkit.Registry(strict=True, autoload=False)
    with pytest.raises(ddkit.PluginError, match="boom"):
        strict.add_plugin(make_plugin("broken", register_samplers=register_samplers),
                          name="broken-plugin", source="broken-dist")


def test_a_hook_that_raises_registers_none_of_its_components():
    def register_schedules(register):
        register("first-half", lambda: None)
        raise RuntimeError("halfway")

    with pytest.warns(ddkit.PluginWarning, match="halfway"):
        registry = ddkit.Registry(autoload=False).add_plugin(
            make_plugin("half", register_schedules=register_schedules), name="half", source="half-dist")
    assert registry.names("schedule") == []


class Decay(ddkit.Schedule):
    def __init__(self, rate: Annotated[float, Field(gt=0)] = 2.0, floor: float = 0.0):
        super().__init__()
        self.rate, self.floor = rate, floor

    def alpha(self, t):
        return (1 - t) ** self.rate

    def alpha_prime(self, t):
        return -self.rate * (1 - t) ** (self.rate - 1)


def params_class(**fields):
    return type("DecayParams", (BaseModel,), {
        "model_config": ConfigDict(extra="forbid"),
        "__annotations__": {name: float for name in fields},
        **{name: default for name, default in fields.items() if default is not ...}})


@pytest.mark.parametrize("fields,problem", [
    ({"rate": 3.0, "floor": 0.0}, "'rate' defaults to 3.0 in the params model but to 2.0 in the factory"),
    ({"rate": 2.0}, "parameter 'floor' of the factory is not a field"),
    ({"rate": 2.0, "floor": 0.0, "ceiling": 1.0}, "field 'ceiling' of the params model is not a parameter"),
])
def test_a_params_model_that_disagrees_with_its_factory_is_reported_at_registration(fields, problem):
    model = params_class(**fields)

    def register_schedules(register):
        register("decay", Decay, params=model)
        register("cubic", Cubic)

    plugin = make_plugin("decay", register_schedules=register_schedules)
    with pytest.warns(ddkit.PluginWarning, match=r"schedule 'decay' \(plugin 'decay-plugin', distribution "
                                                 r"'decay-dist'\) was skipped: .*" + problem):
        registry = ddkit.Registry(autoload=False).add_plugin(plugin, name="decay-plugin", source="decay-dist")
    assert registry.names("schedule") == ["cubic"]  # the component is skipped, not the hook
    with pytest.raises(ddkit.UnknownComponentError, match=problem):
        registry.get("schedule", "decay")
    with pytest.raises(ddkit.PluginError, match=problem):
        ddkit.Registry(strict=True, autoload=False).add_plugin(plugin, name="decay-plugin", source="decay-dist")


def test_a_params_model_that_agrees_with_its_factory_is_accepted():
    def register_schedules(register):
        register("decay", Decay, params=params_class(rate=..., floor=0.0))  # stricter: rate required

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry = ddkit.Registry(autoload=False).add_plugin(
            make_plugin("decay", register_schedules=register_schedules), name="decay", source="dist")
    assert registry.build("schedule", "decay", rate=3.0).rate == 3.0


def test_a_factory_returning_the_wrong_kind_of_object_is_reported_by_build():
    def register_samplers(register):
        register("no-sample", lambda steps=4: object(), summary="returns an object without sample()")

    def register_processes(register):
        register("not-a-process", lambda vocab_size: ddkit.build("schedule", "linear"))

    registry = ddkit.Registry(autoload=False).add_plugin(
        make_plugin("wrong", register_samplers=register_samplers, register_processes=register_processes),
        name="wrong-plugin", source="wrong-dist")
    with pytest.raises(ddkit.PluginError, match=r"sampler 'no-sample' from plugin 'wrong-plugin' "
                                                r"\(distribution 'wrong-dist'\).*without sample; expected a ddkit.Sampler"):
        registry.build("sampler", "no-sample")
    with pytest.raises(ddkit.PluginError, match="LinearSchedule without .*expected a ddkit.Process"):
        registry.build("process", "not-a-process", vocab_size=3)


def test_every_component_declares_each_parameter_once_and_its_model_agrees():
    """The params model of every installed component has the factory's parameters and
    defaults, and the factory's annotations resolve (else the derived model checks nothing)."""
    for record in ddkit.list_components():
        fields = record.params.model_fields
        where = f"{record.kind} {record.name}"
        assert list(fields) == parameter_names(record.factory), where
        for name, default in signature_defaults(record.factory).items():
            assert fields[name].is_required() or fields[name].get_default(call_default_factory=True) == default, \
                f"{where}: {name}"
        init = record.factory.__init__ if isinstance(record.factory, type) else record.factory
        typing.get_type_hints(init, include_extras=True)


def test_builtin_modules_are_found_without_one_entry_point_each():
    ours = [ep for ep in metadata.entry_points(group="ddkit") if ep.dist is not None and ep.dist.name == "ddkit"]
    assert sorted((ep.name, ep.value) for ep in ours) == [("contrib", "ddkit.contrib"), ("plugins", "ddkit.plugins")]
    registry = ddkit.get_registry()
    plugins = {r.plugin for r in registry.records()}
    assert {"ddkit.plugins.samplers.ancestral", "ddkit.plugins.schedules.cosine",
            "ddkit.contrib.models.dit", "ddkit.contrib.data.markov"} <= plugins
    assert registry.problems == []


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
    """An installed distribution on sys.path, ``fakeplug``, with one good and one broken
    entry point in group 'ddkit'."""
    install_distribution(tmp_path, "fakeplug", {"good": "fakeplug_good", "broken": "fakeplug_broken"}, {
        "fakeplug_broken": "raise ImportError('missing dependency xyz')\n",
        "fakeplug_good": """
            import torch

            class FakeLinear(ddkit.Schedule):
                def alpha(self, t):
                    return 1 - t

                def alpha_prime(self, t):
                    return -torch.ones_like(t)

            @ddkit.hookimpl
            def register_schedules(register):
                register("fake-linear", FakeLinear, summary="from a fake distribution")
        """})
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path


@pytest.fixture
def broken_distribution(fake_distribution):
    """``fakeplug``, and ``broken-plugins`` with the usual mistakes: hook name and argument
    typos, a missing dependency, built-in names registered again."""
    install_broken_distribution(fake_distribution)
    importlib.invalidate_caches()
    yield fake_distribution


def test_import_failure_is_a_warning_naming_the_plugin(fake_distribution):
    with pytest.warns(ddkit.PluginWarning, match="'fakeplug:broken' from distribution 'fakeplug'.*xyz"):
        registry = ddkit.Registry(strict=False, autoload=True).load_entry_points()
    assert registry.get("schedule", "fake-linear").source == "fakeplug"
    assert type(registry.build("schedule", "fake-linear")).__name__ == "FakeLinear"
    assert registry.get("process", "masked").source == "ddkit"  # everything else still works
    with pytest.raises(ddkit.PluginError, match="xyz"):
        ddkit.Registry(strict=True, autoload=True).load_entry_points()


def test_an_installed_broken_distribution_breaks_nothing_else(broken_distribution):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = ddkit.Registry(strict=False, autoload=True).load_entry_points()
    messages = [str(w.message) for w in caught if issubclass(w.category, ddkit.PluginWarning)]
    for plugin, why in [("typo_hook_name", "register_sampler"), ("typo_hook_args", "regster"),
                        ("missing_dependency", "a_dependency_that_is_not_installed"),
                        ("clash", "selects 'ddkit:ancestral'")]:
        assert any(f"broken-plugins:{plugin}" in m for m in messages if why in m), (plugin, messages)
    assert registry.problems == messages
    assert registry.get("sampler", "ancestral").source == "ddkit"
    assert registry.get("sampler", "broken-plugins:ancestral").source == "broken-plugins"
    assert registry.get("schedule", "linear").source == "ddkit"
    for kind, name, why in [("sampler", "needs-dependency", "failed to import.*a_dependency_that_is_not_installed"),
                            ("sampler", "typo-hook-sampler", "unknown hook 'register_sampler'"),
                            ("schedule", "typo-args-schedule", "regster")]:
        with pytest.raises(ddkit.UnknownComponentError, match=f"no usable {kind} named '{name}': .*{why}") as err:
            registry.get(kind, name)
        assert "Did you mean" not in str(err.value)
    with pytest.raises(ddkit.UnknownComponentError, match="Did you mean 'ancestral'") as err:
        registry.get("sampler", "ancestrl")  # a plain typo: no failed plugin declares that name
    assert "failed" not in str(err.value)
    assert type(registry.build("schedule", "fake-linear")).__name__ == "FakeLinear"
    with pytest.raises(ddkit.PluginError):
        ddkit.Registry(strict=True, autoload=True).load_entry_points()


def test_an_entry_point_naming_a_package_registers_its_public_modules(tmp_path, monkeypatch):
    def schedule_module(name):
        return f"""
            @ddkit.hookimpl
            def register_schedules(register):
                register("{name}", lambda: None, summary="{name}")
        """
    install_distribution(tmp_path, "layered", {"all": "layered"}, {
        "layered/__init__": "", "layered/first": schedule_module("first"),
        "layered/_private": schedule_module("private"), "layered/sub/__init__": "",
        "layered/sub/second": schedule_module("second"),
        "layered/broken": "raise ImportError('broken submodule')"})
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.warns(ddkit.PluginWarning, match="'layered.broken' from distribution 'layered'.*broken submodule"):
        registry = ddkit.Registry(autoload=True).load_entry_points()
    assert {r.name: r.plugin for r in registry.records("schedule") if r.source == "layered"} == {
        "first": "layered.first", "second": "layered.sub.second"}
    # a module added later is registered by the next load, with no change to the installed metadata
    write_module(tmp_path, "layered/third", schedule_module("third"))
    importlib.invalidate_caches()
    with pytest.warns(ddkit.PluginWarning, match="broken submodule"):
        registry = ddkit.Registry(autoload=True).load_entry_points()
    assert "third" in registry.names("schedule")


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


def test_the_plugin_example_in_the_docs_registers_and_validates():
    text = (ROOT / "docs" / "plugins.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    module = types.ModuleType("my_plugin")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry = ddkit.Registry(autoload=False).add_plugin(module, name="my_plugin", source="my-plugin")
    assert registry.build("schedule", "my-plugin:power", exponent=2).exponent == 2
    with pytest.raises(ddkit.ParameterError, match="exponent"):
        registry.build("schedule", "power", exponent=-1)


def test_a_kernel_backend_setting_takes_a_qualified_name():
    sampler = ddkit.build("sampler", "ancestral", steps=2, backend="ddkit:torch")
    process = ddkit.build("process", "masked", vocab_size=3)
    result = sampler.sample(lambda x, t: torch.zeros(*x.shape, 3), process, num_samples=2, length=3,
                            generator=torch.Generator().manual_seed(0))
    assert bool((result.tokens < 3).all())
    with pytest.raises(ddkit.ParameterError, match="no kernel backend named 'nope:torch'"):
        ddkit.build("sampler", "ancestral", backend="nope:torch")
