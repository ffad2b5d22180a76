"""The autoregressive and block-diffusion pipelines end to end (tiny): ``ddkit run`` trains
with the two-stream pass, reports the bound (exact for the autoregressive model), samples
with the KV cache, and ``eval`` / ``sample`` work on the run directory."""

import json
import math

import pytest
import torch

from pipeline_helpers import ROOT, invoke

TINY = ["train.steps=6", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=3", "train.eval_every=3",
        "train.eval_batches=1", "model.width=16", "model.depth=1", "model.heads=2", "data.seq_len=16",
        "eval.max_sequences=8", "eval.time_samples=2", "sample.num_samples=2", "train.progress=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    made = {}
    for name in ("ar", "bd3"):
        out = tmp_path_factory.mktemp("runs") / name
        result = invoke("run", ROOT / "pipelines" / f"{name}.yaml", *TINY, "--out", out)
        assert result.exit_code == 0, result.output
        made[name] = out
    return made


@pytest.mark.parametrize("name", ["ar", "bd3"])
def test_block_pipeline_runs_samples_with_the_cache_and_evaluates(name, runs):
    out = runs[name]
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["continuous"]["bits_per_token"] > 0
    samples = json.loads((out / "samples.json").read_text())
    assert len(samples["samples"]) == 2 and samples["sampler"]["kv_cache"] is True
    assert samples["sampler_info"]["commit_passes"] == 16 // {"ar": 1, "bd3": 4}[name] - 1
    again = invoke("sample", "--run", out, "-n", "2")
    assert again.exit_code == 0, again.output
    evaluated = invoke("eval", "--run", out)
    assert evaluated.exit_code == 0, evaluated.output


def test_block_pipelines_validate_with_their_block_lengths_tied():
    for name in ("ar", "bd3"):
        result = invoke("config", "validate", ROOT / "pipelines" / f"{name}.yaml")
        assert result.exit_code == 0, result.output
    result = invoke("config", "validate", ROOT / "pipelines" / "bd3.yaml", "model.block_length=8")
    assert result.exit_code == 0, result.output  # loss and sampler follow model.block_length


@pytest.mark.parametrize("override, named", [("loss.block_length=8", "loss.block_length: 8"),
                                             ("sampler.block_length=8", "sampler: the model's block_length 4")])
def test_block_lengths_that_differ_are_refused_before_training(override, named):
    result = invoke("config", "validate", ROOT / "pipelines" / "bd3.yaml", override)
    assert result.exit_code != 0 and named in result.output, result.output


def test_judge_scores_samples_with_the_autoregressive_run(runs):
    result = invoke("eval", "--run", runs["bd3"], "--judge", runs["ar"])
    assert result.exit_code == 0, result.output
    judged = json.loads((runs["bd3"] / "eval.json").read_text())["judge"]
    for part in ("samples", "reference"):
        row = judged[part]
        assert row["tokens"] > 0 and row["gen_perplexity"] == pytest.approx(math.exp(row["nats_per_token"]))
    refused = invoke("eval", "--run", runs["ar"], "--judge", runs["bd3"])
    assert refused.exit_code == 2 and "must be an autoregressive run" in refused.output


def test_judge_nll_is_the_autoregressive_cross_entropy(runs):
    from ddkit.contrib.judge import token_nll, unigram_entropy
    from ddkit.contrib.runner import load_run

    judge, _ = load_run(runs["ar"])
    seq = torch.tensor([3, 5, 7, 9, 11, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 2, 4, 6, 8])  # longer than one window (16)
    (nll,) = token_nll(judge, [seq])
    expected = []
    for piece in (seq[:16], seq[16:]):
        for n in range(len(piece)):
            view = torch.cat([piece[:n], torch.full((len(piece) - n,), judge.process.mask_id)])[None]
            with torch.no_grad():
                logp = torch.log_softmax(judge.model(view, torch.zeros(1))[0, n].double(), -1)
            expected.append(-float(logp[piece[n]]))
    torch.testing.assert_close(nll, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-5)
    assert unigram_entropy([1, 1, 2, 2]) == pytest.approx(math.log(2)) and unigram_entropy([4, 4, 4]) == 0.0
