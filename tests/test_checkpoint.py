"""Checkpoints: round trip of weights, EMA, optimizer and RNG state; atomic replacement;
refusal of files that are not ddkit checkpoints."""

import json

import pytest
import torch
from safetensors.torch import save_file

from ddkit.contrib.pipeline_config import load_pipeline
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
    assert (ckpt.meta["processes"], ckpt.meta["micro_batches"], ckpt.meta["batch_size"]) == (1, 1, 4)
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


def _flip_byte_of(path, tensor):
    """Flip one bit in the middle of ``tensor``'s bytes in a safetensors file (8-byte header
    length, JSON header, then the data region with each tensor's ``data_offsets``)."""
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8:8 + header_len])[tensor]["data_offsets"]
    data[8 + header_len + (start + end) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_every_tensor_is_hashed_and_a_flipped_byte_names_the_tensor(trained):
    path = trained.checkpoint_path
    ckpt = load_checkpoint(path)
    assert set(ckpt.meta["sha256"]) == set(ckpt.tensors) and all(len(h) == 64 for h in ckpt.meta["sha256"].values())
    for tensor in ("ema.embed.weight" if "ema.embed.weight" in ckpt.tensors else sorted(ckpt.group("ema"))[0],
                   "optimizer.0.exp_avg", "optimizer.1.exp_avg_sq"):
        tensor = tensor if tensor in ckpt.tensors else "ema." + tensor
        before = path.read_bytes()
        _flip_byte_of(path, tensor)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert f"tensor {tensor!r} does not match the SHA-256" in message and str(path) in message
        assert "\n" not in message
        path.write_bytes(before)
    assert load_checkpoint(path).step == 3


def test_hashes_must_cover_exactly_the_tensors(tmp_path):
    meta = {"format": ckpt_module.FORMAT, "step": 1, "config": {}}
    extra = tmp_path / "extra.safetensors"
    save_file({"w": torch.zeros(2), "added": torch.ones(1)}, str(extra),
              metadata={"ddkit": json.dumps({**meta, "sha256": {"w": ckpt_module.tensor_sha256(torch.zeros(2))}})})
    with pytest.raises(CheckpointError, match="tensor 'added' has no recorded SHA-256"):
        load_checkpoint(extra)
    removed = tmp_path / "removed.safetensors"
    hashes = {"w": ckpt_module.tensor_sha256(torch.zeros(2)), "gone": "0" * 64}
    save_file({"w": torch.zeros(2)}, str(removed), metadata={"ddkit": json.dumps({**meta, "sha256": hashes})})
    with pytest.raises(CheckpointError, match="tensor 'gone' is recorded in the metadata but missing"):
        load_checkpoint(removed)


def test_a_checkpoint_without_hashes_loads_with_a_warning(tmp_path):
    old = tmp_path / "old.safetensors"
    save_file({"model.w": torch.arange(3.0)}, str(old),
              metadata={"ddkit": json.dumps({"format": ckpt_module.FORMAT, "step": 2, "config": {"a": 1}})})
    with pytest.warns(ckpt_module.UnverifiedCheckpointWarning, match="no tensor hashes"):
        ckpt = load_checkpoint(old)
    assert ckpt.step == 2 and torch.equal(ckpt.group("model")["w"], torch.arange(3.0))


@pytest.mark.parametrize("meta, message", [
    ("{not json", "metadata is not valid JSON"),
    ("[1, 2]", "metadata is a list, expected a JSON object"),
    ('{"format": "ddkit-checkpoint/1", "step": "3", "config": {}}', "field 'step' is '3', expected an integer"),
    ('{"format": "ddkit-checkpoint/1", "step": 3, "config": "x"}', "field 'config' is 'x', expected a JSON object"),
    ('{"format": "ddkit-checkpoint/1", "step": 3, "config": {}, "sha256": []}', r"field 'sha256' is \[\], expected a JSON object"),
])
def test_malformed_metadata_is_a_checkpoint_error(tmp_path, meta, message):
    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"ddkit": meta})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
