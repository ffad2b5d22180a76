"""The training loop: exact resume on CPU, NaN detection, Ctrl-C, the learning-rate
schedule, the EMA and gradient accumulation."""

import math

import pytest
import torch

from ddkit.config import ConfigError, load_pipeline
from ddkit.contrib.checkpoint import load_checkpoint
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.training import EMA, Trainer, TrainingDiverged, learning_rate

CONFIG = {
    "name": "train",
    "data": {"dataset": {"name": "markov", "vocab_size": 5, "train_sequences": 128,
                         "validation_sequences": 16, "test_sequences": 0}, "seq_len": 8},
    "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 8, "dropout": 0.1},
    "train": {"steps": 6, "batch_size": 4, "warmup_steps": 2, "log_every": 1, "eval_every": 2,
              "progress": False, "lr": 1e-2},
}


def build(*overrides):
    return Pipeline.build(load_pipeline(CONFIG, list(overrides)))


def test_resume_reproduces_the_uninterrupted_losses(tmp_path):
    full = Trainer(build(), tmp_path / "full").fit()
    first = Trainer(build(), tmp_path / "split")
    part = first.fit(stop_at=3)
    assert part.step == 3 and load_checkpoint(tmp_path / "split").step == 3
    second = Trainer(build(), tmp_path / "split")  # a new process: fresh objects
    assert second.resume() == 3
    rest = second.fit()
    assert len(full.losses) == 6
    assert part.losses + rest.losses == full.losses  # bit for bit (dropout on, cosine LR)
    records = [r for r in second.metrics.read() if r["split"] == "train"]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_a_changed_model(tmp_path):
    Trainer(build(), tmp_path / "run").fit(stop_at=2)
    other = Trainer(build("model.width=32"), tmp_path / "run")
    with pytest.raises(Exception, match="model section"):
        other.resume()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    pipeline = build("train.checkpoint_every=2")

    def poison(step):
        if step == 3:
            with torch.no_grad():
                pipeline.model.head.bias.fill_(float("nan"))

    trainer = Trainer(pipeline, tmp_path / "run", on_step=poison)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 4.*step 2\)"):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 2 and all(torch.isfinite(v).all() for v in ckpt.group("model").values())


def test_nan_found_at_a_later_sync_point_names_its_own_step(tmp_path):
    pipeline = build("train.checkpoint_every=2", "train.log_every=5", "train.eval_every=null")
    trainer = Trainer(pipeline, tmp_path / "run")
    calls = []

    def denoiser(x_t, t):
        calls.append(1)
        if len(calls) == 3:  # the forward pass of step 3
            with torch.no_grad():
                pipeline.model.head.bias.fill_(float("nan"))
        return trainer.model(x_t, t)

    trainer.denoiser = denoiser
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3.*step 2\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "run").step == 2


def test_ctrl_c_saves_and_resume_repeats_the_uninterrupted_run(tmp_path):
    full = Trainer(build(), tmp_path / "full").fit()

    def interrupt(step):
        if step == 4:
            raise KeyboardInterrupt

    trainer = Trainer(build(), tmp_path / "run", on_step=interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert load_checkpoint(tmp_path / "run").step == 4
    resumed = Trainer(build(), tmp_path / "run")
    resumed.resume()
    assert resumed.fit().losses == full.losses[4:]

    # interrupted in the middle of step 4 (inside its forward pass): step 4 is repeated
    trainer = Trainer(build(), tmp_path / "mid")
    calls = []

    def denoiser(x_t, t):
        calls.append(1)
        if len(calls) == 4:  # one training forward pass per step
            raise KeyboardInterrupt
        return trainer.model(x_t, t)

    trainer.denoiser = denoiser
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert load_checkpoint(tmp_path / "mid").step == 3
    resumed = Trainer(build(), tmp_path / "mid")
    resumed.resume()
    assert resumed.fit().losses == full.losses[3:]


def test_learning_rate_schedule():
    cfg = load_pipeline(CONFIG, ["train.steps=110", "train.warmup_steps=10", "train.lr=1.0",
                                 "train.min_lr_ratio=0.1"]).train
    assert learning_rate(5, cfg) == pytest.approx(0.5)
    assert learning_rate(10, cfg) == pytest.approx(1.0)
    assert learning_rate(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down the cosine
    assert learning_rate(110, cfg) == pytest.approx(0.1)
    constant = cfg.model_copy(update={"lr_schedule": "constant"})
    assert learning_rate(100, constant) == 1.0


def test_ema_update_formula():
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # d_1 = min(0.9, 2/11)
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 1 - 2 / 11))
    for _ in range(100):
        ema.update(net)
    torch.testing.assert_close(ema.module.weight, torch.ones(1, 2), atol=1e-4, rtol=0)


def test_gradient_accumulation_averages_micro_batches(tmp_path):
    """Accumulating two micro-batches gives the mean of their gradients."""
    pipeline = build("train.grad_accum=2", "train.grad_clip=null", "model.dropout=0.0", "train.precision=fp32")
    trainer = Trainer(pipeline, tmp_path / "run")
    grads = []
    original = trainer.optimizer.step

    def capture():
        grads.append([p.grad.clone() for p in trainer.params])
        return original()

    trainer.optimizer.step = capture
    data_state, loss_state = trainer.data_generator.get_state(), trainer.loss_generator.get_state()
    trainer.fit(stop_at=1)
    # recompute the two micro-batches separately with the same random streams
    fresh = build("model.dropout=0.0", "train.precision=fp32")  # no bf16 autocast on CUDA either
    data_g = torch.Generator().manual_seed(0)
    data_g.set_state(data_state)
    loss_g = torch.Generator(device=fresh.device)
    loss_g.set_state(loss_state)
    per_batch = []
    for _ in range(2):
        fresh.model.zero_grad()
        x0 = fresh.data["train"].windows(4, 8, data_g).to(fresh.device)
        fresh.loss(fresh.model, x0, generator=loss_g).loss.backward()
        per_batch.append([p.grad.clone() for p in fresh.model.parameters()])
    tolerance = 1e-6 if fresh.device.type == "cpu" else 1e-3  # GPU attention kernels reorder sums
    for got, a, b in zip(grads[0], *per_batch):
        torch.testing.assert_close(got, (a + b) / 2, atol=tolerance, rtol=tolerance)


def test_errors_before_training():
    with pytest.raises(ConfigError, match=r"data.seq_len: 8 is above the model's maximum sequence length model.max_seq_len=4"):
        build("model.max_seq_len=4")
    with pytest.raises(ConfigError, match=r"process.vocab_size: 9 does not match the tokenizer's vocabulary of 5"):
        build("process.vocab_size=9")
    with pytest.raises(ConfigError, match=r"model.vocab_size: 4 does not match"):
        build("model.vocab_size=4")
    with pytest.raises(ConfigError, match=r"model.time_conditioning: False but parameterization.time_conditioning is True"):
        build("parameterization.time_conditioning=true")
    with pytest.raises(ConfigError, match=r"sample.length: 20 is above model.max_seq_len=8"):
        build("sample.length=20")
    with pytest.raises(ConfigError, match=r"data.seq_len: .*sequences of 8 tokens|fewer than one window"):
        Pipeline.build(load_pipeline({**CONFIG, "data": {"dataset": {"name": "textfile", "path": __file__},
                                                          "seq_len": 100000}}, ["model.max_seq_len=100000"]))
    assert math.isfinite(build().vocab_size)
