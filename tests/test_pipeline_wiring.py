"""What a pipeline passes to its components: one parameterization object shared by the loss
and the sampler (through ``sample(parameterization=...)`` where the sampler takes it), the
real vocabulary size for every component (a ``matrix`` process with custom rates needs it),
validated once: at load time when the file fixes the vocabulary, when the data is loaded
when the tokenizer is fitted on the corpus."""

import pytest
import torch

import ddkit
from ddkit.config import ConfigError
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.runner import sample_pipeline
from pipeline_helpers import ROOT, TINY, invoke

MARKOV = ROOT / "pipelines" / "markov.yaml"
SMALL = ["data.dataset.train_sequences=64", "data.dataset.validation_sequences=16", "model.width=16",
         "model.depth=1", "model.heads=2"]


def uniform_rates(size):
    return [[-(size - 1.0) if i == j else 1.0 for j in range(size)] for i in range(size)]


def test_one_parameterization_object_per_pipeline():
    pipeline = Pipeline.build(load_pipeline(MARKOV, [*SMALL, "parameterization.time_conditioning=true",
                                                     "model.time_conditioning=true"]), load_data=False)
    assert pipeline.parameterization.time_conditioning
    assert pipeline.loss.parameterization is pipeline.parameterization
    assert pipeline.sampler.parameterization is pipeline.parameterization
    assert pipeline.eval_loss(discrete_steps=4).parameterization is pipeline.parameterization
    assert pipeline.parameterization_for(pipeline.sampler) is pipeline.parameterization


class RecordingSampler(ddkit.Sampler):
    """Takes the parameterization only through ``sample``; remembers what it got."""

    received = []

    def sample(self, denoiser, process, *, num_samples=None, length=None, prompt=None, generator=None,
               device=None, record_trajectory=False, parameterization=None):
        self.received.append(parameterization)
        x, fixed = self.initial_state(process, num_samples=num_samples, length=length, prompt=prompt,
                                      generator=generator, device=device)
        return ddkit.SampleResult(tokens=torch.where(fixed, x, 0), nfe=0, steps=0, fixed=fixed)


class RecordingPlugin:
    @ddkit.hookimpl
    def register_samplers(self, register):
        register("recording", RecordingSampler, summary="records its parameterization")


def test_a_sampler_that_takes_the_parameterization_in_sample_gets_the_pipelines():
    ddkit.get_registry().add_plugin(RecordingPlugin(), name="test:recording", source="test")
    try:
        config = load_pipeline(MARKOV, [*SMALL, "sampler=recording", "parameterization.time_conditioning=true",
                                        "model.time_conditioning=true", "sample.num_samples=1"])
        pipeline = Pipeline.build(config, load_data=False)  # no problem: the sampler takes it in sample()
        sample_pipeline(pipeline, show=False)
        assert RecordingSampler.received == [pipeline.parameterization]
    finally:
        ddkit.reset_registry()
        RecordingSampler.received.clear()


def test_matrix_process_with_custom_rates_runs_end_to_end(tmp_path):
    process = f"process={{name: matrix, generator: custom, rates: {uniform_rates(4)}}}"
    result = invoke("run", MARKOV, *TINY, "data.dataset.vocab_size=4", "data.dataset.train_sequences=64",
                    "data.dataset.validation_sequences=16", process, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    config = load_pipeline(tmp_path / "run" / "config.yaml")
    assert config.process["vocab_size"] == 4 and config.process["rates"] == uniform_rates(4)


QUICK = {"name": "q", "data": {"dataset": {"name": "pydoc_topics", "content": "prose"}, "tokenizer": "char",
                               "seq_len": 8},
         "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 8}}


def test_a_vocabulary_fitted_on_the_corpus_is_checked_once_the_data_is_loaded():
    V = Pipeline.build(load_pipeline(QUICK)).vocab_size
    assert V > 40  # characters of the documentation's prose
    # the file alone does not fix the vocabulary: the process waits for the data, no placeholder
    wrong = load_pipeline({**QUICK, "process": {"name": "matrix", "generator": "custom", "rates": uniform_rates(4)}})
    with pytest.raises(ConfigError) as info:
        Pipeline.build(wrong)
    assert info.value.problems[0].startswith(
        f"process (process 'matrix'): rates must be {V} x {V} (one state per token) or {V + 1} x {V + 1}")
    right = load_pipeline({**QUICK, "process": {"name": "matrix", "generator": "custom", "rates": uniform_rates(V)}})
    pipeline = Pipeline.build(right)
    assert pipeline.process.vocab_size == V and pipeline.resolved_config()["process"]["vocab_size"] == V
    assert pipeline.loss.process is pipeline.process
