"""Configs never run code and stored configs are never interpolated again.

OmegaConf lets a resolver's name be an interpolation (``${${key}:...}``, ``${oc.${key}:...}``),
which reaches any resolver in its process-wide table. Every form below is tried from a YAML
file, from a command-line override and from a checkpoint's metadata, with the global table's
``eval`` (registered the way a library would), ``oc.decode``, ``oc.create``, ``oc.env`` and
``oc.select`` replaced by spies that fail the test when called: ddkit resolves with its own
table and never calls OmegaConf's. A run with a literal ``${`` in its data path and prompt
keeps both through training, ``config.yaml``, the checkpoint, sampling, evaluation and resume.
"""

import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf
from omegaconf.basecontainer import BaseContainer

from ddkit.config import ConfigError, to_yaml
from ddkit.config.interpolation import resolve_interpolations
from ddkit.contrib.checkpoint import load_checkpoint, save_checkpoint
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.pipeline_config import load_pipeline, load_resolved
from ddkit.contrib.runner import load_run
from pipeline_helpers import TINY, invoke

BASE = {
    "name": "eval",  # the name of the forbidden resolver, for ${${name}:...}
    "data": {"dataset": {"name": "markov", "vocab_size": 5, "train_sequences": 64,
                         "validation_sequences": 16, "test_sequences": 0}, "seq_len": 8},
    "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 8},
    "train": {"steps": 2, "batch_size": 4},
    "output": {"dir": "decode"},  # for ${oc.${output.dir}:...}
}

#: ways to reach a resolver outside the allowed set, each in the value of sample.prompt
BYPASSES = [
    "${eval:'1+1'}",
    "${${name}:'1+1'}",
    "${oc.${output.dir}:'1+1'}",
    "${${oc.env:DDKIT_TEST_RESOLVER}:'1+1'}",
    "x${oc.select:${eval:'1'}}",
    "${oc.env:DDKIT_TEST_UNSET,'${eval:1}'}",
    "${data.${eval:'seq_len'}}",
    "${oc.select:data.seq_len,${${name}:1}}",
    "\\\\${eval:'1+1'}",  # an escaped backslash, then a real interpolation
    "${oc.decode:'${eval:1}'}",
    "${oc.decode:'1+1'}",
    "${oc.create:'{a: 1}'}",
]


@pytest.fixture(scope="module")
def markov_net():
    return Pipeline.build(load_pipeline(BASE)).model


@pytest.fixture
def forbidden(monkeypatch):
    """OmegaConf's global resolvers replaced by spies; the test fails if any was called."""
    calls = []

    def spy(name):
        def resolver(*args, **kwargs):
            calls.append(name)
            return "ran"
        return resolver

    register = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver
    register("eval", lambda expr: calls.append(f"eval {expr}") or "ran")  # what an eval-like library adds
    for name in ("oc.decode", "oc.create", "oc.env", "oc.select"):
        monkeypatch.setitem(BaseContainer._resolvers, name, spy(name))
    monkeypatch.setenv("DDKIT_TEST_RESOLVER", "eval")
    monkeypatch.delenv("DDKIT_TEST_UNSET", raising=False)
    yield calls
    OmegaConf.clear_resolver("eval")
    assert calls == [], f"OmegaConf's global resolvers were called: {calls}"


def _prompt_problem(exc_info):
    lines = [line for line in exc_info.value.problems if line.startswith("sample.prompt: ")]
    assert len(lines) == 1, exc_info.value.problems
    return lines[0]


@pytest.mark.parametrize("form", BYPASSES)
def test_bypass_from_a_yaml_file_is_refused(tmp_path, forbidden, form):
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump({**BASE, "sample": {"prompt": form}}))
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    line = _prompt_problem(info)
    assert "\n" not in line and repr(form)[1:-1] in line  # the path and the value, on one line


@pytest.mark.parametrize("form", BYPASSES)
def test_bypass_from_an_override_is_refused(forbidden, form):
    quoted = "'" + form.replace("'", "''") + "'"  # a YAML string, as a shell would pass it
    with pytest.raises(ConfigError) as info:
        load_pipeline(BASE, [f"sample.prompt={quoted}"])
    _prompt_problem(info)


def test_bypass_in_a_component_section_is_refused(forbidden):
    # component sections are expanded (defaults, names) before resolution: nothing may resolve there
    for key, value in (("process", "${eval:'masked'}"), ("sampler", "${${name}:'x'}"), ("data", "${eval:'d'}")):
        with pytest.raises(ConfigError, match=rf"{key}: interpolation resolver|{key}: the resolver name"):
            load_pipeline({**BASE, key: value})


def test_forbidden_resolvers_get_one_line_naming_path_and_value(forbidden):
    for form, resolver in (("${oc.decode:'1+1'}", "oc.decode"), ("${oc.create:'{a: 1}'}", "oc.create")):
        with pytest.raises(ConfigError) as info:
            load_pipeline({**BASE, "sample": {"prompt": form}})
        line = _prompt_problem(info)
        assert f"interpolation resolver {resolver!r} is not allowed" in line and repr(form) in line
    with pytest.raises(ConfigError) as info:
        load_pipeline({**BASE, "sample": {"prompt": "${oc.${output.dir}:'1'}"}})
    assert "resolver name 'oc.${output.dir}' is itself an interpolation" in _prompt_problem(info)


def test_escaped_interpolations_are_text(forbidden):
    cfg = load_pipeline({**BASE, "sample": {"prompt": "\\${eval:'1+1'} costs \\${oc.env:HOME}"}})
    assert cfg.sample.prompt == "${eval:'1+1'} costs ${oc.env:HOME}"
    cfg = load_pipeline(BASE, ["sample.prompt='a\\${data.seq_len}'"])
    assert cfg.sample.prompt == "a${data.seq_len}"


def test_allowed_interpolations_do_not_use_the_global_table(forbidden, monkeypatch):
    monkeypatch.setenv("DDKIT_TEST_PROMPT", "from-env")
    cfg = load_pipeline({**BASE, "sample": {"prompt": "${oc.env:DDKIT_TEST_PROMPT}:${data.seq_len}",
                                            "length": "${oc.select:data.seq_len,4}"},
                         "model": {**BASE["model"], "max_seq_len": "${data.seq_len}"}})
    assert cfg.sample.prompt == "from-env:8" and cfg.sample.length == 8 and cfg.model["max_seq_len"] == 8


@pytest.mark.parametrize("form", BYPASSES)
def test_bypass_from_checkpoint_metadata_stays_text(tmp_path, forbidden, markov_net, form):
    config = load_pipeline(BASE).model_dump(mode="json")
    config["sample"]["prompt"] = form
    path = save_checkpoint(tmp_path / "c.safetensors", step=1, config=config, model=markov_net)
    loaded = load_resolved(load_checkpoint(path).config)
    assert loaded.sample.prompt == form and loaded.output.dir == "decode"
    assert load_resolved(load_checkpoint(path).config, ["sample.num_samples=3"]).sample.prompt == form


def test_a_foreign_checkpoint_cannot_read_the_environment(tmp_path, forbidden, markov_net, monkeypatch):
    monkeypatch.setenv("DDKIT_TEST_SECRET", "leaked")
    config = Pipeline.build(load_pipeline(BASE)).resolved_config()
    config["sample"]["prompt"] = "${oc.env:DDKIT_TEST_SECRET}"
    config["output"]["dir"] = "runs/${oc.env:DDKIT_TEST_SECRET,x}"
    save_checkpoint(tmp_path / "c.safetensors", step=1, config=config, model=markov_net)
    pipeline, _ = load_run(tmp_path / "c.safetensors")
    assert pipeline.config.sample.prompt == "${oc.env:DDKIT_TEST_SECRET}"
    assert pipeline.config.output.dir == "runs/${oc.env:DDKIT_TEST_SECRET,x}"
    assert "leaked" not in json.dumps(pipeline.resolved_config())


def test_a_literal_interpolation_survives_a_run(tmp_path, forbidden, monkeypatch):
    """A prompt ``a${data.seq_len}`` came back as ``a32``; a data path with an ``oc.env``
    interpolation in a folder's name was read from the environment."""
    monkeypatch.setenv("DDKIT_TEST_DIR", "elsewhere")
    folder = tmp_path / "data${oc.env:DDKIT_TEST_DIR}"
    folder.mkdir()
    (folder / "corpus.txt").write_text("a${data.seq_len} said the {cat} for $5; " * 120)
    source = str(folder / "corpus.txt").replace("${", "\\${")
    pipeline_file = tmp_path / "literal.yaml"
    pipeline_file.write_text(
        "name: literal\n"
        f"data: {{dataset: {{name: textfile, path: '{source}'}}, seq_len: 32}}\n"
        "model:\n  name: dit\n  max_seq_len: ${data.seq_len}\n"
        "sample: {prompt: 'a\\${data.seq_len}'}\n")
    out = tmp_path / "run"
    result = invoke("train", pipeline_file, *TINY, "data.seq_len=32", "--out", out)
    assert result.exit_code == 0, result.output
    stored = load_checkpoint(out).config
    assert stored["sample"]["prompt"] == "a${data.seq_len}" and "${" in stored["data"]["dataset"]["path"]
    assert {"$", "{", "}"} <= set(stored["data"]["tokenizer"]["alphabet"])
    # config.yaml escapes the literal, so it loads back, as a pipeline file, to the same values
    assert "a\\${data.seq_len}" in (out / "config.yaml").read_text()
    again = load_pipeline(out / "config.yaml")
    assert again.sample.prompt == "a${data.seq_len}" and again.data.dataset["path"] == str(folder / "corpus.txt")
    alphabet = stored["data"]["tokenizer"]["alphabet"]
    assert again.model_dump(mode="json")["data"]["tokenizer"]["alphabet"] == alphabet

    result = invoke("sample", "--run", out, "-n", 1, "--no-show", "--out", tmp_path / "s.txt")
    assert result.exit_code == 0, result.output
    samples = json.loads((tmp_path / "s.json").read_text())
    assert samples["samples"][0].startswith("a${data.seq_len}")
    assert samples["config"]["sample"]["prompt"] == "a${data.seq_len}"
    result = invoke("eval", "--run", out, "--max-sequences", 2, "--time-samples", 1, "--out", tmp_path / "e.json")
    assert result.exit_code == 0, result.output  # the data path was not read from the environment
    result = invoke("train", "--resume", "--out", out, "train.steps=5", "--no-progress")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out).step == 5 and load_checkpoint(out).config["sample"]["prompt"] == "a${data.seq_len}"


def test_cycles_missing_keys_and_bad_syntax_are_one_line_each():
    with pytest.raises(ConfigError) as info:
        resolve_interpolations({"a": "${b}", "b": "${a}", "c": "${nope.x}", "d": "x${", "e": {"f": "${e}"}})
    problems = info.value.problems
    assert any(line.startswith("a: the interpolation refers back to itself (a -> b -> a)") for line in problems)
    assert any(line.startswith("c: interpolation key 'nope.x' not found") for line in problems)
    assert any(line.startswith("d: not a valid interpolation") and "\\${" in line for line in problems)
    assert any(line.startswith("e.f: the interpolation refers back to itself") for line in problems)
    assert all("\n" not in line for line in problems)


#: configs using only what ddkit allows, resolved by OmegaConf and by ddkit
SAME_AS_OMEGACONF = [
    {"a": {"b": 3, "c": "${a.b}", "d": "${.b}", "e": "x${a.b}y"}, "f": "${a}"},
    {"n": {"m": {"k": "${..v}"}, "v": [1, "${n.v[0]}"]}, "w": "${n.m.k}"},
    {"key": "b", "a": {"b": 7}, "c": "${a.${key}}", "d": "${oc.select:a.zz,def}", "e": "${oc.select:a.b}"},
    {"g": "${i}", "i": {"h": "\\${lit}", "k": 2}, "f": "${g.k}", "j": "${g.h}", "l": "\\\\${i.k}"},
    {"e": "${oc.env:DDKIT_TEST_UNSET,fallback}", "q": "'${e}' and \"${e}\"", "n": "${oc.env:DDKIT_TEST_UNSET,null}"},
]


@pytest.mark.parametrize("data", SAME_AS_OMEGACONF)
def test_allowed_forms_resolve_as_omegaconf_does(data, monkeypatch):
    monkeypatch.delenv("DDKIT_TEST_UNSET", raising=False)
    assert resolve_interpolations(data) == OmegaConf.to_container(OmegaConf.create(data), resolve=True)


@given(text=st.text(alphabet="a${}\\:.'\" ", min_size=1, max_size=12))
def test_any_resolved_text_survives_to_yaml_and_back(tmp_path_factory, text):
    config = load_pipeline(BASE).model_dump(mode="json")
    config["sample"]["prompt"] = text
    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_text(to_yaml(config))
    assert load_pipeline(path).sample.prompt == text
    assert load_resolved(json.loads(json.dumps(config))).sample.prompt == text
