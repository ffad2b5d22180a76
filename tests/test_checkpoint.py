"""Checkpoints: round trip of weights, EMA, optimizer and RNG state; atomic replacement;
refusal of files that are not ddkit checkpoints."""

import json

import pytest
import torch
from safetensors.torch import save_file

from ddkit.config import load_pipeline
from ddkit.contrib import checkpoint as ckpt_module
from ddkit.contrib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.training import Trainer

CONFIG = {
    "name": "ckpt",
    "data": {"dataset": {"name": "markov", "vocab_size": 5, "train_sequences": 64,
                         "validation_sequences": 16, "test_sequences": 0}, "seq_len": 8},
    "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 8},
    "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "progress": False},
}


@pytest.fixture
def trained(tmp_path):
    pipeline = Pipeline.build(load_pipeline(CONFIG))
    trainer = Trainer(pipeline, tmp_path / "run")
    trainer.fit()
    return trainer


def test_round_trip(trained):
    ckpt = load_checkpoint(trained.run_dir)
    assert ckpt.step == 3 and ckpt.config == trained.pipeline.resolved_config()
    assert ckpt.config["model"]["vocab_size"] == 5 and ckpt.config["data"]["tokenizer"]["alphabet"] == "abcde"
    for name, value in trained.model.state_dict().items():
        assert torch.equal(ckpt.group("model")[name], value.cpu())  # checkpoints load on the CPU
    for name, value in trained.ema.module.state_dict().items():
        assert torch.equal(ckpt.group("ema")[name], value.cpu())
    assert ckpt.weights().keys() == trained.model.state_dict().keys()
    assert torch.equal(ckpt.group("rng")["data"], trained.data_generator.get_state())
    # optimizer state survives exactly
    fresh = Trainer(Pipeline.build(load_pipeline(CONFIG)), trained.run_dir)
    fresh.resume()
    a, b = trained.optimizer.state_dict(), fresh.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for index, state in a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["state"][index][key]), (index, key)
    assert fresh.step == 3 and fresh.ema.updates == trained.ema.updates


def test_interrupted_save_keeps_the_previous_checkpoint(trained, monkeypatch):
    path = trained.checkpoint_path
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")  # a half-written file, then the process dies
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module, "save_file", crash)
    trained.step += 1
    with pytest.raises(OSError, match="disk full"):
        trained.save()
    assert path.read_bytes() == before and load_checkpoint(path).step == 3
    assert [p.name for p in path.parent.iterdir() if ".tmp" in p.name] == []


def test_not_a_ddkit_checkpoint(tmp_path):
    plain = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a ddkit checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(garbage)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"ddkit": json.dumps({"format": "ddkit-checkpoint/99"})})
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(other)


def test_save_load_without_optimizer(tmp_path):
    net = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "c.safetensors", step=5, config={"a": 1}, model=net)
    ckpt = load_checkpoint(path)
    assert ckpt.step == 5 and ckpt.config == {"a": 1} and "optimizer" not in ckpt.meta
    torch.testing.assert_close(ckpt.weights()["weight"], net.weight.detach())
