"""The autoregressive and block-diffusion pipelines end to end (tiny): ``ddkit run`` trains
with the two-stream pass, reports the bound (exact for the autoregressive model), samples
with the KV cache, and ``eval`` / ``sample`` work on the run directory."""

import json

import pytest

from pipeline_helpers import ROOT, invoke

TINY = ["train.steps=6", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=3", "train.eval_every=3",
        "train.eval_batches=1", "model.width=16", "model.depth=1", "model.heads=2", "data.seq_len=16",
        "eval.max_sequences=8", "eval.time_samples=2", "sample.num_samples=2", "train.progress=false"]


@pytest.mark.parametrize("name", ["ar", "bd3"])
def test_block_pipeline_runs_samples_with_the_cache_and_evaluates(name, tmp_path):
    out = tmp_path / name
    result = invoke("run", ROOT / "pipelines" / f"{name}.yaml", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["continuous"]["bits_per_token"] > 0
    samples = json.loads((out / "samples.json").read_text())
    assert len(samples["samples"]) == 2 and samples["sampler"]["kv_cache"] is True
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
