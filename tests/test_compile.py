"""``train.compile``: the network compiled by torch.compile (inductor, C++ on the CPU) trains
like the eager one, and checkpoints keep the network's own parameter names."""

import shutil

import pytest
import torch

from ddkit.contrib.checkpoint import load_checkpoint
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.training import Trainer

CONFIG = {
    "name": "compiled",
    "data": {"dataset": {"name": "markov", "vocab_size": 5, "train_sequences": 64,
                         "validation_sequences": 8, "test_sequences": 0}, "seq_len": 8},
    "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 8},
    "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "progress": False,
              "precision": "fp32"},
}


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile's inductor backend needs a C++ compiler on the CPU")
def test_compiled_training_takes_the_eager_steps(tmp_path):
    compiled = Trainer(Pipeline.build(load_pipeline(CONFIG, ["train.compile=true"])), tmp_path / "compiled")
    assert isinstance(compiled.denoiser, torch._dynamo.eval_frame.OptimizedModule)
    eager = Trainer(Pipeline.build(load_pipeline(CONFIG)), tmp_path / "eager")
    got, expected = compiled.fit(), eager.fit()
    # generated kernels sum in another order: float32 rounding only
    torch.testing.assert_close(torch.tensor(got.losses), torch.tensor(expected.losses), atol=1e-5, rtol=1e-5)
    a, b = load_checkpoint(tmp_path / "compiled"), load_checkpoint(tmp_path / "eager")
    assert a.tensors.keys() == b.tensors.keys()
    for key in b.group("model"):
        torch.testing.assert_close(a.group("model")[key], b.group("model")[key], atol=1e-5, rtol=1e-4)
