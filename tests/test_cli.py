"""``ddkit config validate|show|schema`` and the command line's error handling."""

import json
from pathlib import Path

import torch
from click.testing import CliRunner

import ddkit
from ddkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "pipelines" / "quickstart.yaml")
MARKOV = str(ROOT / "pipelines" / "markov.yaml")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_commands_are_registered_through_the_hook():
    result = invoke("--help")
    for command in ("run", "train", "eval", "sample", "config", "plugins"):
        assert command in result.output


def test_config_validate():
    result = invoke("config", "validate", MARKOV, "data.dataset.train_sequences=10")
    assert result.exit_code == 0 and "valid (vocabulary 8" in result.output
    result = invoke("config", "validate", QUICKSTART, "--no-data")
    assert result.exit_code == 0 and "valid" in result.output


def test_config_validate_reports_every_problem_with_its_path():
    result = invoke("config", "validate", QUICKSTART, "train.stpes=3", "model.name=ditt", "--no-data")
    assert result.exit_code == 2
    assert "invalid configuration" in result.output
    assert "train.stpes: unknown key (got 3); did you mean 'steps'?" in result.output
    assert "model.name: no model named 'ditt'; installed: " in result.output and "Did you mean 'dit'?" in result.output
    small = "data.dataset.train_sequences=100"
    result = invoke("config", "validate", MARKOV, small, "model.vocab_size=5")
    assert result.exit_code == 2 and "model.vocab_size: 5 does not match the tokenizer's vocabulary of 8" in result.output
    result = invoke("config", "validate", MARKOV, small, "data.seq_len=64")
    assert result.exit_code == 2 and "data.seq_len: 64 is above the model's maximum" in result.output


def test_config_show_is_fully_resolved():
    result = invoke("config", "show", MARKOV, "train.steps=5", "data.dataset.train_sequences=10", "--json")
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)
    assert config["train"]["steps"] == 5
    assert config["process"] == {"name": "masked", "schedule": {"name": "linear"}, "vocab_size": 8}
    assert config["model"]["vocab_size"] == 8 and config["model"]["depth"] == 2
    assert config["data"]["tokenizer"] == {"name": "char", "alphabet": "abcdefgh", "unknown": "error"}
    assert config["sampler"]["top_p"] is None  # plugin defaults written in
    yaml_text = invoke("config", "show", QUICKSTART, "--no-data").output
    assert "max_seq_len: 64" in yaml_text  # ${data.seq_len} interpolated


def test_config_schema():
    result = invoke("config", "schema")
    schema = json.loads(result.output)
    assert schema["title"] == "ddkit pipeline"
    names = {o.get("title") for o in schema["properties"]["sampler"]["anyOf"]}
    assert {"sampler ancestral", "sampler first_hitting"} <= names


def test_missing_pipeline_file_and_missing_run():
    result = invoke("run", "nope.yaml")
    assert result.exit_code == 2 and "no pipeline file at nope.yaml" in result.output
    result = invoke("run", "train.steps=3")
    assert result.exit_code == 2 and "give a pipeline file" in result.output
    result = invoke("sample")
    assert result.exit_code == 2 and "exactly one of --run DIR or --ckpt FILE" in result.output


def test_config_validate_catches_what_training_would_find_later():
    small = "data.dataset.train_sequences=100"
    result = invoke("config", "validate", MARKOV, small, "process=uniform", "sampler=first_hitting")
    assert result.exit_code == 2
    assert "sampler: sampler FirstHittingSampler needs a process with ['absorbing']; UniformProcess has none" \
        in result.output
    # without loading the data as well, when the file fixes the vocabulary (the Markov chain's own)
    result = invoke("config", "validate", MARKOV, "--no-data", "process=uniform", "sampler=first_hitting")
    assert result.exit_code == 2 and "needs a process with ['absorbing']" in result.output
    result = invoke("config", "validate", MARKOV, small, "model.time_conditioning=true")
    assert result.exit_code == 2
    assert ("model.time_conditioning: True but parameterization.time_conditioning is False (the network would "
            "receive t = 0); set both to the same value") in result.output


class LegacySampler(ddkit.Sampler):
    """A third-party sampler written against the earlier protocol: its own ``sample`` without
    ``parameterization=`` and no ``parameterization`` parameter."""

    requires = frozenset({"absorbing"})

    def sample(self, denoiser, process, *, num_samples=None, length=None, prompt=None, generator=None,
               device=None, record_trajectory=False):
        x, fixed = self.initial_state(process, num_samples=num_samples, length=length, prompt=prompt,
                                      generator=generator, device=device)
        x = torch.where(fixed, x, 0)
        return ddkit.SampleResult(tokens=x, nfe=0, steps=0, fixed=fixed)


class LegacyPlugin:
    @ddkit.hookimpl
    def register_samplers(self, register):
        register("legacy", LegacySampler, summary="earlier protocol")


def test_config_validate_catches_a_sampler_without_the_pipelines_parameterization():
    ddkit.get_registry().add_plugin(LegacyPlugin(), name="test:legacy", source="test")
    try:
        small = "data.dataset.train_sequences=100"
        result = invoke("config", "validate", MARKOV, small, "sampler=legacy")
        assert result.exit_code == 0, result.output  # the plain default parameterization: nothing lost
        result = invoke("config", "validate", MARKOV, small, "sampler=legacy", "model.time_conditioning=true",
                        "parameterization.time_conditioning=true")
        assert result.exit_code == 2
        assert ("sampler: sampler 'legacy' does not take the pipeline's parameterization; a time-conditioned "
                "model would receive t = 0") in result.output
    finally:
        ddkit.reset_registry()
