"""The training loop: exact resume on CPU, NaN detection, Ctrl-C, SIGTERM, periodic
checkpoints, damaged metrics files and stale temporaries, the learning-rate schedule, the
EMA and gradient accumulation."""

import json
import math
import os
import signal

import pytest
import torch
import yaml

import ddkit
from pipeline_helpers import ROOT, invoke

from ddkit.config import ConfigError
from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.checkpoint import atomic_write_bytes, load_checkpoint, temporaries, temporary_path
from ddkit.contrib.metrics import MetricsError
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.training import EMA, Trainer, TrainingDiverged, TrainingInterrupted, learning_rate

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
    trainer.fit(stop_at=1)
    # recompute the two micro-batches separately with the same keyed randomness: the windows,
    # the noise, and the two halves of one stratified draw of times
    fresh = build("model.dropout=0.0", "train.precision=fp32")  # no bf16 autocast on CUDA either
    keys = Trainer(fresh, tmp_path / "reference")
    per_batch = []
    for index in range(2):
        fresh.model.zero_grad()
        x0, noise, offsets = keys.micro_batch(1, index)
        with ddkit.global_batch_slice(index, 2, offsets):
            fresh.loss(fresh.model, x0, generator=noise).loss.backward()
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


def test_sigterm_finishes_the_step_saves_and_resume_repeats_the_run(tmp_path):
    full = Trainer(build(), tmp_path / "full").fit()

    def terminate(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled between bytecodes, during this step

    trainer = Trainer(build(), tmp_path / "run", on_step=terminate)
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM: stopped at step 3 of 6; .* holds step 3") as info:
        trainer.fit()
    assert info.value.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after fit
    assert load_checkpoint(tmp_path / "run").step == 3
    resumed = Trainer(build(), tmp_path / "run")
    resumed.resume()
    assert resumed.fit().losses == full.losses[3:]


def test_sigint_stops_after_the_step_instead_of_inside_it(tmp_path):
    calls = []

    def interrupt(step):
        calls.append(step)
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    trainer = Trainer(build(), tmp_path / "run", on_step=interrupt)
    with pytest.raises(TrainingInterrupted, match="SIGINT") as info:
        trainer.fit()
    assert info.value.signal_number == signal.SIGINT and calls == [1, 2]
    assert load_checkpoint(tmp_path / "run").step == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_sigint_aborts_the_step_at_once(tmp_path):
    def twice(step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the default handler is back: KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(build(), tmp_path / "run", on_step=twice).fit()
    assert load_checkpoint(tmp_path / "run").step == 2


def test_the_cli_exits_with_128_plus_the_signal_number(tmp_path, monkeypatch):
    from ddkit.contrib import training

    original = training.Trainer.__init__

    def with_hook(self, *args, **kwargs):
        kwargs["on_step"] = lambda step: step == 2 and os.kill(os.getpid(), signal.SIGTERM)
        original(self, *args, **kwargs)

    monkeypatch.setattr(training.Trainer, "__init__", with_hook)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    result = invoke("train", config, "--out", tmp_path / "run")
    assert result.exit_code == 128 + signal.SIGTERM
    assert "SIGTERM: stopped at step 2 of 6" in result.output and "--resume" in result.output
    assert load_checkpoint(tmp_path / "run").step == 2


def test_checkpoints_by_time(tmp_path):
    def saved_steps(interval):
        trainer = Trainer(build(f"train.checkpoint_interval_s={interval}"), tmp_path / str(interval))
        saved, original = [], trainer.save
        trainer.save = lambda *a, **k: (saved.append(trainer.step), original(*a, **k))[1]
        trainer.fit()
        return saved

    assert saved_steps(1e-9) == [1, 2, 3, 4, 5, 6]  # the interval is over after every step
    assert saved_steps(1e9) == [6]


def test_every_shipped_pipeline_checkpoints_periodically():
    for path in sorted((ROOT / "pipelines").glob("*.yaml")):
        train = load_pipeline(path, ["data.dataset.path=."] if path.stem == "text8" else []).train
        assert train.checkpoint_every is not None and train.checkpoint_every < train.steps, path.name
        assert train.checkpoint_interval_s is not None, path.name


def test_resume_survives_a_cut_off_last_metrics_line(tmp_path):
    full = Trainer(build(), tmp_path / "full").fit()
    Trainer(build(), tmp_path / "run").fit(stop_at=3)
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 4, "split": "tra')  # a kill while appending
    resumed = Trainer(build(), tmp_path / "run")
    assert resumed.resume() == 3
    assert resumed.fit().losses == full.losses[3:]
    assert [r["step"] for r in resumed.metrics.read() if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    json_lines = metrics.read_text().splitlines()
    assert all(json.loads(line) for line in json_lines)


def test_a_corrupt_metrics_line_before_the_last_is_an_error(tmp_path):
    Trainer(build(), tmp_path / "run").fit(stop_at=3)
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    lines[1] = '{"step": 2, "split"\n'
    metrics.write_text("".join(lines))
    with pytest.raises(MetricsError, match=r"metrics.jsonl, line 2: not valid JSON .*fix or delete that line"):
        Trainer(build(), tmp_path / "run").resume()
    lines[1] = "[2]\n"
    metrics.write_text("".join(lines))
    with pytest.raises(MetricsError, match=r"line 2: expected a JSON object, got '\[2\]'"):
        Trainer(build(), tmp_path / "run").resume()


def test_resuming_a_finished_run_adds_no_records(tmp_path):
    Trainer(build(), tmp_path / "run").fit()
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = Trainer(build(), tmp_path / "run")
    again.resume()
    result = again.fit()
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    validation = [r for r in again.metrics.read() if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [2, 4, 6]
    assert result.validation["loss"] == validation[-1]["loss"]


def test_stale_temporaries_of_the_run_are_removed_when_training_starts(tmp_path):
    run = tmp_path / "run"
    Trainer(build(), run).fit(stop_at=2)
    checkpoint = run / "checkpoint.safetensors"
    # what a kill inside a save leaves: a full-size temporary under the save's own name
    stale = temporary_path(checkpoint)
    stale.write_bytes(checkpoint.read_bytes())
    stale_metrics = temporary_path(run / "metrics.jsonl")
    stale_metrics.write_text("{}")
    unrelated = [run / ".checkpoint.safetensors.notes", run / "my.ddkit-tmp", run / "checkpoint.safetensors.bak"]
    for path in unrelated:
        path.write_text("keep")
    assert temporaries(checkpoint) == [stale]
    resumed = Trainer(build(), run)
    resumed.resume()
    resumed.fit()
    assert not stale.exists() and not stale_metrics.exists()
    assert all(path.read_text() == "keep" for path in unrelated)
    assert all(not temporaries(run / name) for name in ("checkpoint.safetensors", "metrics.jsonl", "config.yaml",
                                                        "training_curve.png"))


def test_atomic_write_leaves_no_temporary_when_it_fails(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "out.json", "not bytes")
    assert list(tmp_path.iterdir()) == []


def test_a_non_finite_validation_loss_stops_training(tmp_path):
    trainer = Trainer(build("train.eval_every=null"), tmp_path / "run")
    trainer.validate = lambda: {"loss": float("nan"), "bits_per_token": float("nan")}
    with pytest.raises(TrainingDiverged, match="the validation loss is nan at step 6"):
        trainer.fit()
    assert all(json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
