"""Evaluation reports are valid JSON or an error: NaN weights end in a one-line message and a
non-zero exit without writing ``eval.json``; a standard error that does not exist (one
sequence) and a perplexity beyond the float range are ``null``, never ``NaN`` or ``Infinity``."""

import json
import math

import pytest
import torch

from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.checkpoint import save_checkpoint
from ddkit.contrib.evaluate import ELBOEstimate
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.runner import format_eval, write_json
from pipeline_helpers import invoke

CONFIG = {
    "name": "eval",
    "data": {"dataset": {"name": "markov", "vocab_size": 5, "train_sequences": 64,
                         "validation_sequences": 16, "test_sequences": 0}, "seq_len": 8},
    "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 8},
    "eval": {"time_samples": 2, "max_sequences": 4},
}


def strict_json(text: str):
    """``json.loads`` that refuses the NaN and Infinity extensions of Python's json module."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def make_run(run_dir, poison: float | None = None):
    pipeline = Pipeline.build(load_pipeline(CONFIG))
    if poison is not None:
        with torch.no_grad():
            pipeline.model.head.bias.fill_(poison)
    save_checkpoint(run_dir / "checkpoint.safetensors", step=1, config=pipeline.resolved_config(), model=pipeline.model)
    return run_dir


def test_nan_weights_are_an_error_and_no_eval_json_is_written(tmp_path):
    run = make_run(tmp_path, poison=float("nan"))
    result = invoke("eval", "--run", run)
    assert result.exit_code not in (0, 1, 2)  # neither success, a generic error nor a config error
    message = result.output.strip()
    assert "\n" not in message and "not finite" in message and "Traceback" not in message
    assert not (run / "eval.json").exists()


def test_one_sequence_has_no_standard_error_and_the_report_is_valid_json(tmp_path):
    run = make_run(tmp_path)
    result = invoke("eval", "--run", run, "--max-sequences", 1)
    assert result.exit_code == 0, result.output
    report = strict_json((run / "eval.json").read_text())
    assert report["continuous"]["standard_error"] is None and report["continuous"]["bits_standard_error"] is None
    assert math.isfinite(report["continuous"]["nats_per_token"])
    assert "± n/a nats/token" in result.output


def test_a_perplexity_beyond_the_float_range_is_null():
    estimate = ELBOEstimate(nats_per_token=800.0, standard_error=1.0, sequences=4, tokens_per_sequence=8,
                            time_samples=2)
    assert estimate.perplexity == math.inf
    values = estimate.to_json()
    assert values["perplexity"] is None and values["nats_per_token"] == 800.0
    text = format_eval({"split": "validation", "continuous": values})
    assert "perplexity ≤ n/a" in text


def test_reports_refuse_nan(tmp_path):
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json(tmp_path / "eval.json", {"loss": float("nan")})
    assert list(tmp_path.iterdir()) == []  # neither the report nor a temporary
