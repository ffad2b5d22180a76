"""Pipeline configs: loading, overrides, safe interpolation, and the error messages for a
list of broken configs (each must name the dotted path, the bad value and what was expected)."""

import json
from pathlib import Path

import pytest

from ddkit.config import ConfigError, parse_override
from ddkit.contrib.pipeline_config import load_pipeline, pipeline_json_schema

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"

BASE = {
    "name": "t",
    "data": {"dataset": {"name": "markov", "vocab_size": 5, "train_sequences": 64,
                         "validation_sequences": 16, "test_sequences": 0}, "seq_len": 8},
    "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 8},
    "train": {"steps": 2, "batch_size": 4},
}


def with_(overrides):
    return load_pipeline(BASE, overrides)


def problems(overrides, source=BASE):
    with pytest.raises(ConfigError) as info:
        load_pipeline(source, overrides)
    return info.value.problems


def test_defaults_and_overrides():
    cfg = with_(["train.steps=7", "train.lr=3e-4", "sampler={name: first_hitting, temperature: 0.5}"])
    assert cfg.train.steps == 7 and cfg.train.lr == pytest.approx(3e-4)
    # a mapping replaces the whole component; parameters are validated and defaults filled
    assert cfg.sampler.items() >= {"name": "first_hitting", "temperature": 0.5, "top_k": None, "top_p": None}.items()
    assert "steps" not in cfg.sampler  # the ancestral sampler's parameters are gone
    assert cfg.process == {"name": "masked", "schedule": {"name": "linear"}}
    assert cfg.loss["name"] == "continuous_elbo" and "process" not in cfg.loss


def test_override_parsing():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=") == ("a", None)
    assert parse_override("x.y=[1, 2]") == ("x.y", [1, 2])
    assert parse_override("s=hello world") == ("s", "hello world")
    for bad in ["train.steps", "=3", "train..steps=1", "1abc=2"]:
        with pytest.raises(ConfigError, match="override"):
            parse_override(bad)


# (override, expected fragments of one problem line)
BROKEN = [
    # wrong types
    ("train.steps=abc", ["train.steps:", "valid integer", "'abc'"]),
    ("train.lr=fast", ["train.lr:", "valid number", "'fast'"]),
    ("model.width=wide", ["model.width (model 'dit'):", "valid integer", "'wide'"]),
    ("sample.show=maybe", ["sample.show:", "boolean", "'maybe'"]),
    # unknown keys, with "did you mean"
    ("train.setps=3", ["train.setps: unknown key", "did you mean 'steps'?"]),
    ("trian={steps: 3}", ["trian: unknown key", "did you mean 'train'?"]),
    ("model.widht=32", ["model.widht (model 'dit'): unknown key", "did you mean 'width'?"]),
    ("sampler.stepz=4", ["sampler.stepz (sampler 'ancestral'): unknown key", "did you mean 'steps'?"]),
    # unknown plugin names: installed names and "did you mean"
    ("model.name=ditt", ["model.name: no model named 'ditt'", "installed: ", "dit", "Did you mean 'dit'?"]),
    ("sampler={name: ancestrl}", ["sampler.name: no sampler named 'ancestrl'", "first_hitting",
                                  "Did you mean 'ancestral'?"]),
    ("process.schedule=cosin", ["process.schedule.name: no schedule named 'cosin'", "Did you mean 'cosine'?"]),
    ("data.dataset.name=markv", ["data.dataset.name: no dataset named 'markv'", "pydoc_topics",
                                 "Did you mean 'markov'?"]),
    # missing required values
    ("model.width=???", ["model.width: missing required value"]),
    ("data={seq_len: 8}", ["data.dataset: missing required value"]),
    ("data.dataset={name: textfile}", ["data.dataset.path (dataset 'textfile'): missing required value"]),
    # negative or zero sizes
    ("train.batch_size=-4", ["train.batch_size:", "greater than or equal to 1", "-4"]),
    ("data.seq_len=0", ["data.seq_len:", "greater than or equal to 1", "0"]),
    ("model.depth=-1", ["model.depth (model 'dit'):", "greater than or equal to 1", "-1"]),
    ("model.heads=3", ["model (model 'dit'):", "width 16 must split into 3 heads"]),
    ("eval.time_samples=0", ["eval.time_samples:", "greater than or equal to 1"]),
    # values the pipeline owns
    ("loss.process=masked", ["loss.process: set by the pipeline", "remove it here"]),
    ("sampler.parameterization=mean", ["sampler.parameterization: set by the pipeline"]),
    # bad enumerations and ranges
    ("train.lr_schedule=linear", ["train.lr_schedule:", "'constant' or 'cosine'", "'linear'"]),
    ("train.device=gpu", ["train.device: not a device; expected auto, cpu, cuda, cuda:N or mps", "'gpu'"]),
    ("loss.t_min=1.5", ["loss.t_min (loss 'continuous_elbo'):", "less than 1", "1.5"]),
    ("sample.prompt=ab", None),  # valid on its own ...
    # inside a nested component: the same one-line format, at the nested path
    ("process.schedule={name: polynomial, exponent: -1}",
     ["process.schedule.exponent (schedule 'polynomial'):", "greater than 0", "(got -1)"]),
    ("process.schedule={name: polynomial, expnent: 2}",
     ["process.schedule.expnent (schedule 'polynomial'): unknown key (got 2); did you mean 'exponent'?"]),
    ("process.schedule.exponent=2", ["process.schedule.exponent (schedule 'linear'): unknown key (got 2)",
                                     "takes no parameters"]),
]


@pytest.mark.parametrize("override,fragments", [b for b in BROKEN if b[1] is not None],
                         ids=[b[0] for b in BROKEN if b[1] is not None])
def test_broken_config_messages(override, fragments):
    lines = problems([override])
    assert any(all(f in line for f in fragments) for line in lines), lines


def test_nested_component_problems_are_single_lines():
    lines = problems(["process.schedule=polynomial", "process.schedule.exponent=-1"])
    assert lines == ["process.schedule.exponent (schedule 'polynomial'): Input should be greater than 0 (got -1)"]
    lines = problems(["loss.parameterization.time_conditioning=maybe"])
    assert lines == ["loss.parameterization: set by the pipeline from its 'parameterization' section; "
                     "remove it here (got {'time_conditioning': 'maybe'})"]
    lines = problems(["parameterization.time_conditioning=maybe"])
    assert lines == ["parameterization.time_conditioning (parameterization 'mean'): Input should be a valid "
                     "boolean, unable to interpret input (got 'maybe')"]


UNIFORM_RATES = [[-3.0 if i == j else 1.0 for j in range(4)] for i in range(4)]


def test_matrix_process_with_custom_rates_gets_the_data_vocabulary():
    # the vocabulary (4 symbols of the Markov chain) is known from the file: validated at load time
    cfg = with_(["data.dataset.vocab_size=4", f"process={{name: matrix, generator: custom, rates: {UNIFORM_RATES}}}"])
    assert cfg.process["rates"] == UNIFORM_RATES and "vocab_size" not in cfg.process
    # ... and a matrix of the wrong size is measured against that vocabulary (5 symbols), not a placeholder
    lines = problems([f"process={{name: matrix, generator: custom, rates: {UNIFORM_RATES}}}"])
    assert len(lines) == 1 and lines[0].startswith(
        "process (process 'matrix'): rates must be 5 x 5 (one state per token) or 6 x 6 (with an absorbing "
        "extra state), got 4 x 4"), lines


def test_all_problems_are_reported_together():
    lines = problems(["train.steps=-1", "model.widht=3", "sampler.name=nope"])
    assert len(lines) == 3
    message = str(ConfigError(lines))
    assert message.startswith("invalid configuration (3 problems)")


def test_prompt_and_infill_are_exclusive():
    lines = problems(["sample.prompt=ab", "sample.infill=a_b"])
    assert any("sample" in line and "either prompt" in line for line in lines)


def test_yaml_cannot_execute_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="cannot parse YAML"):
        load_pipeline(path)
    assert not marker.exists()


def test_only_safe_interpolations(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    OmegaConf.register_resolver("unsafe_eval", lambda expr: eval(expr), replace=True)  # noqa: S307
    try:
        lines = problems(["name=${unsafe_eval:'1+1'}"])
        assert any("name: interpolation resolver 'unsafe_eval' is not allowed" in line for line in lines)
    finally:
        OmegaConf.clear_resolver("unsafe_eval")
    monkeypatch.setenv("DDKIT_TEST_NAME", "from-env")
    cfg = with_(["name=${oc.env:DDKIT_TEST_NAME}", "sample.length=${data.seq_len}"])
    assert cfg.name == "from-env" and cfg.sample.length == 8
    assert any("missing.key" in line or "not found" in line for line in problems(["name=${missing.key}"]))


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no pipeline file"):
        load_pipeline(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_pipeline(path)


@pytest.mark.parametrize("name", ["quickstart.yaml", "text8.yaml", "markov.yaml", "remdm.yaml"])
def test_example_pipelines_validate(name):
    cfg = load_pipeline(PIPELINES / name)
    assert cfg.model["name"] == "dit" and cfg.train.steps >= 1


def test_json_schema_lists_plugins_and_parameters():
    schema = pipeline_json_schema()
    json.dumps(schema)  # serialisable
    model = schema["properties"]["model"]["anyOf"]
    assert any(o.get("type") == "string" and "dit" in o["enum"] for o in model)
    dit = next(o for o in model if o.get("title") == "model dit")
    assert "width" in dit["properties"] and dit["additionalProperties"] is False
    assert "vocab_size" not in dit["required"]  # provided by the pipeline
    loss = next(o for o in schema["properties"]["loss"]["anyOf"] if o.get("title") == "loss continuous_elbo")
    assert "process" not in loss["properties"]
    assert set(schema["required"]) == {"data", "model"}
