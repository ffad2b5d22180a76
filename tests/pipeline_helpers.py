"""Shared by the end-to-end pipeline tests: overrides that shrink any pipeline to a run of a
few seconds, and the CLI called in-process."""

from pathlib import Path

from click.testing import CliRunner

from ddkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.steps=4", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=2", "train.eval_every=2",
        "train.eval_batches=1", "model.width=16", "model.depth=1", "model.heads=2", "data.seq_len=16",
        "eval.max_sequences=8", "eval.time_samples=2", "eval.discrete_steps=8", "sampler.steps=8",
        "sample.num_samples=2", "train.progress=false"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
