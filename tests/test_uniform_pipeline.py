"""pipelines/uniform.yaml end to end (a tiny version): the uniform process trains, is
evaluated with both bounds and samples with ancestral, Euler and analytic sampling; on Markov
data its bound stays above the exact entropy."""

import json

import pytest

from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.runner import run_pipeline
from pipeline_helpers import ROOT, TINY, invoke

UNIFORM = str(ROOT / "pipelines" / "uniform.yaml")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "uniform"
    result = invoke("run", UNIFORM, *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert "ELBO on validation" in result.output
    return out


def test_run_uses_the_uniform_process_with_time_conditioning(run_dir):
    config = load_pipeline(run_dir / "config.yaml")
    assert config.process["name"] == "uniform"
    assert config.parameterization["time_conditioning"] is True and config.model["time_conditioning"] is True
    evaluation = json.loads((run_dir / "eval.json").read_text())
    for bound in ("continuous", "discrete"):
        assert evaluation[bound]["nats_per_token"] > 0
    samples = json.loads((run_dir / "samples.json").read_text())
    assert len(samples["samples"]) == 2 and samples["nfe"] == 8  # every step calls the t-dependent denoiser


@pytest.mark.parametrize("sampler", ["euler", "analytic"])
def test_other_samplers_with_a_prompt(run_dir, tmp_path, sampler):
    out = tmp_path / f"{sampler}.txt"
    result = invoke("sample", "--run", run_dir, "--prompt", "The ", "--sampler", sampler, "-p", "steps=6",
                    "-n", 2, "--seed", 1, "--no-show", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert all(text.startswith("The ") and len(text) == 16 for text in data["samples"])
    assert data["nfe"] == 6


def test_markov_bound_with_the_uniform_process_is_above_the_exact_entropy(tmp_path):
    config = load_pipeline(ROOT / "pipelines" / "markov.yaml",
                           ["process.name=uniform", "parameterization={name: mean, time_conditioning: true}",
                            "model.time_conditioning=true", "train.steps=20", "train.progress=false",
                            "eval.max_sequences=200", "train.batch_size=16", "model.width=32", "model.depth=1",
                            "train.eval_every=null", "eval.time_samples=4", "eval.discrete_steps=null",
                            "sampler.steps=8", "data.dataset.train_sequences=2000",
                            "data.dataset.validation_sequences=200"])
    result = run_pipeline(config, tmp_path / "markov-uniform", log=lambda *_: None)
    c, exact = result.evaluation["continuous"], result.evaluation["exact_entropy"]
    assert c["nats_per_token"] > exact["nats_per_token"] - 5 * c["standard_error"]
