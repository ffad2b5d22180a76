"""The main job end to end: a tiny version of the quickstart (a few steps) through
``ddkit run``, then the parts (``eval``, ``sample``, ``train --resume``) on its run
directory; and the Markov pipeline's bound against the exact entropy."""

import json

import pytest
import torch

from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.evaluate import estimate_elbo
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.runner import run_pipeline
from pipeline_helpers import ROOT, TINY, invoke

QUICKSTART = str(ROOT / "pipelines" / "quickstart.yaml")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "quick"
    result = invoke("run", QUICKSTART, *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert "ELBO on validation" in result.output and "denoising trajectory" in result.output
    return out


def test_run_writes_the_run_directory(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "training_curve.png", "checkpoint.safetensors", "eval.json",
            "samples.txt", "samples.json", "trajectory.txt", "report.md"} <= names
    config = load_pipeline(run_dir / "config.yaml")  # the resolved config is a valid pipeline
    assert config.train.steps == 4 and config.model["vocab_size"] == config.process["vocab_size"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4]
    assert [r["step"] for r in records if r["split"] == "validation"] == [2, 4]
    evaluation = json.loads((run_dir / "eval.json").read_text())
    c = evaluation["continuous"]
    assert c["sequences"] == 8 and c["bits_per_token"] == pytest.approx(c["nats_per_token"] / 0.6931471805599453)
    assert evaluation["discrete"]["steps"] == 8
    samples = json.loads((run_dir / "samples.json").read_text())
    assert len(samples["samples"]) == 2 and samples["nfe"] >= 1 and samples["config"]["name"] == "quickstart"
    assert (run_dir / "samples.txt").read_text().startswith(samples["samples"][0])
    assert (run_dir / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    report = (run_dir / "report.md").read_text()
    assert "continuous-time NELBO" in report and "bits/token" in report and "█" in report


def test_sample_command_with_prompt_infill_and_other_sampler(run_dir, tmp_path):
    result = invoke("sample", "--run", run_dir, "--prompt", "The ", "-n", 3, "--seed", 1, "--show",
                    "--out", tmp_path / "s.txt")
    assert result.exit_code == 0, result.output
    assert "NFE" in result.output and "tokens/s" in result.output and "█" in result.output
    data = json.loads((tmp_path / "s.json").read_text())
    assert len(data["samples"]) == 3 and all(s.startswith("The ") for s in data["samples"])
    result = invoke("sample", "--run", run_dir, "--infill", "if x__ is", "--sampler", "first_hitting",
                    "-p", "temperature=0.5", "-n", 2, "--no-show", "--out", tmp_path / "f.txt")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "f.json").read_text())
    for text in data["samples"]:
        assert len(text) == 9 and text.startswith("if x") and text.endswith(" is")
    assert data["sampler"] == {"name": "first_hitting", "temperature": 0.5}
    assert data["nfe"] == 2  # first-hitting: one call per generated token
    bad = invoke("sample", "--run", run_dir, "--sampler", "ancestal")
    assert bad.exit_code == 2 and "Did you mean 'ancestral'?" in bad.output


def test_sample_parameters_are_checked_like_the_config(run_dir):
    def error_lines(*params):
        result = invoke("sample", "--run", run_dir, "--no-show", *[a for p in params for a in ("-p", p)])
        assert result.exit_code == 2, result.output
        return [line.strip() for line in result.output.splitlines()[1:]]

    assert error_lines("temperature=-1") == [
        "- sampler.temperature (sampler 'ancestral'): Input should be greater than or equal to 0 (got -1)"]
    [line] = error_lines("tempreature=0.5")
    assert line.startswith("- sampler.tempreature (sampler 'ancestral'): unknown key (got 0.5); "
                           "did you mean 'temperature'?")
    assert error_lines("parameterization={name: score}") == [
        "- sampler.parameterization: set by the pipeline from its 'parameterization' section; remove it here"]


def test_same_seed_same_samples(run_dir, tmp_path):
    outs = []
    for name in ("a", "b"):
        assert invoke("sample", "--ckpt", run_dir / "checkpoint.safetensors", "--seed", 7, "--no-show",
                      "--out", tmp_path / f"{name}.txt").exit_code == 0
        outs.append((tmp_path / f"{name}.txt").read_text())
    assert outs[0] == outs[1]


def test_eval_command(run_dir, tmp_path):
    result = invoke("eval", "--run", run_dir, "--time-samples", 2, "--max-sequences", 4, "--discrete-steps", 4,
                    "--out", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["continuous"]["sequences"] == 4 and data["discrete"]["steps"] == 4
    assert data["checkpoint_step"] == 4 and data["continuous"]["standard_error"] > 0


def _nan_network(monkeypatch):
    """Every DiT output becomes NaN (still attached to the graph, so training reaches its check)."""
    from ddkit.contrib.models.dit import DiT

    forward = DiT.forward
    monkeypatch.setattr(DiT, "forward", lambda self, x_t, t: forward(self, x_t, t) * float("nan"))


def test_numerical_failures_exit_with_their_own_status(run_dir, tmp_path, monkeypatch):
    _nan_network(monkeypatch)
    result = invoke("sample", "--run", run_dir, "-n", 1, "--no-show", "--out", tmp_path / "s.txt")
    assert result.exit_code == 3, result.output
    assert "Error: numerical failure: logits contain NaN" in result.output
    assert "invalid configuration" not in result.output
    result = invoke("train", QUICKSTART, *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 3 and "numerical failure: the loss is nan at step" in result.output


def test_train_resume_extends_a_run(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    result = invoke("train", "--out", copy, "--resume", "train.steps=6", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "trained 6 steps" in result.output
    steps = [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6
    refused = invoke("train", QUICKSTART, *TINY, "model.width=32", "--out", copy, "--resume")
    assert refused.exit_code == 1 and "model section" in refused.output


def test_fresh_run_never_overwrites(run_dir, tmp_path):
    result = invoke("train", QUICKSTART, *TINY, "train.steps=1", "--out", run_dir)
    assert result.exit_code == 0, result.output
    assert f"{run_dir} exists; writing this run to {run_dir}-2" in result.output


def test_markov_bound_is_above_the_exact_entropy(tmp_path):
    config = load_pipeline(ROOT / "pipelines" / "markov.yaml",
                           ["train.steps=20", "train.progress=false", "eval.max_sequences=200", "train.batch_size=16",
                            "model.width=32", "model.depth=1", "train.eval_every=null",
                            "eval.time_samples=4", "eval.discrete_steps=null", "sampler.steps=8",
                            "data.dataset.train_sequences=2000", "data.dataset.validation_sequences=200"])
    result = run_pipeline(config, tmp_path / "markov", log=lambda *_: None)
    c, exact = result.evaluation["continuous"], result.evaluation["exact_entropy"]
    assert c["nats_per_token"] > exact["nats_per_token"] - 5 * c["standard_error"]
    assert "exact data entropy" in (tmp_path / "markov" / "report.md").read_text()


def test_elbo_estimate_of_a_uniform_denoiser_is_exact_and_its_error_calibrated():
    """With uniform logits every masked token costs log V nats, so the continuous NELBO per
    token is exactly (alpha(t_min) - alpha(1)) log V = (1 - t_min) log V (linear schedule);
    the estimate must agree within 5 standard errors (p < 1e-6), and over independent
    repetitions its spread must match the reported standard error."""
    import ddkit

    V, M, N = 6, 48, 16
    process = ddkit.build("process", "masked", vocab_size=V)
    loss = ddkit.build("loss", "continuous_elbo", process=process)
    uniform = lambda x, t: torch.zeros(*x.shape, V)  # noqa: E731
    x = torch.randint(0, V, (M, N), generator=torch.Generator().manual_seed(0))
    exact = (1 - loss.t_min) * torch.log(torch.tensor(float(V))).item()
    means, errors = [], []
    for seed in range(60):
        est = estimate_elbo(uniform, loss, x, time_samples=4, batch_size=32, seed=seed)
        means.append(est.nats_per_token)
        errors.append(est.standard_error)
    means, errors = torch.tensor(means, dtype=torch.float64), torch.tensor(errors, dtype=torch.float64)
    assert abs(float(means[0]) - exact) < 5 * float(errors[0])
    # spread across repetitions vs the mean reported standard error; with 60 repetitions the
    # sample std is within ~+-40% of the truth far beyond 5 sigma of its own sampling error
    ratio = float(means.std()) / float(errors.mean())
    assert 0.6 < ratio < 1.5, ratio
    assert abs(float(means.mean()) - exact) < 5 * float(means.std()) / 60 ** 0.5


def test_pipeline_builds_from_a_resolved_config_without_data(run_dir):
    config = load_pipeline(run_dir / "config.yaml")
    pipeline = Pipeline.build(config, load_data=False)
    assert pipeline.data is None and pipeline.tokenizer.vocab_size == config.model["vocab_size"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiny_run_on_cuda_with_bf16_autocast(tmp_path):
    config = load_pipeline(QUICKSTART, [*TINY, "train.device=cuda", "train.precision=bf16"])
    result = run_pipeline(config, tmp_path / "cuda", log=lambda *_: None)
    assert result.train.step == 4 and all(map(lambda v: v == v, result.train.losses))
    assert next(Pipeline.build(config).model.parameters()).is_cuda
    c = result.evaluation["continuous"]
    assert 0 < c["nats_per_token"] < 10 and len(result.samples.texts) == 2
    again = invoke("sample", "--run", tmp_path / "cuda", "--seed", 3, "--no-show", "--out", tmp_path / "a.txt")
    assert again.exit_code == 0, again.output
    invoke("sample", "--run", tmp_path / "cuda", "--seed", 3, "--no-show", "--out", tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text()
