"""Crash safety of ``ddkit train``: a training subprocess is killed (SIGKILL) inside a step,
inside a checkpoint write and while a metrics line is being appended, or asked to stop
(SIGTERM, SIGINT); ``--resume`` then finishes the run, and its losses, validation records
and final checkpoint equal those of the uninterrupted run, bit for bit.

The kill points are reached through a small driver that wraps three functions of ddkit
before it calls the command line (a test hook that lives only here): when the wrapped
function has been called ``CRASH_AT`` times it writes a marker file and waits, so the test
signals the process at exactly that point.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from pipeline_helpers import ROOT

PIPELINE = ROOT / "pipelines" / "markov.yaml"
OVERRIDES = ["data.dataset.train_sequences=256", "data.dataset.validation_sequences=16", "data.seq_len=16",
             "model.width=16", "model.depth=1", "model.heads=2", "model.max_seq_len=16", "model.dropout=0.1",
             "train.steps=12", "train.batch_size=4", "train.warmup_steps=2", "train.log_every=1",
             "train.eval_every=4", "train.eval_batches=1", "train.checkpoint_every=4", "train.device=cpu",
             "train.progress=false"]

DRIVER = r'''
import os, sys, time
from pathlib import Path

from ddkit.contrib import checkpoint, metrics, training

point = os.environ.get("CRASH_POINT")
if point:
    at, marker = int(os.environ["CRASH_AT"]), Path(os.environ["CRASH_MARKER"])
    calls = [0]

    def reached():
        calls[0] += 1
        return calls[0] == at

    def wait_here():  # until killed, or until the test creates the .go file
        marker.write_text(point)
        while not marker.with_suffix(".go").exists():
            time.sleep(0.01)

    if point == "step":  # inside step CRASH_AT: after its optimizer and EMA updates, before it counts
        update = training.EMA.update
        def ema_update(self, model):
            update(self, model)
            if reached():
                wait_here()
        training.EMA.update = ema_update
    elif point == "checkpoint":  # the temporary file is written in full, not yet renamed
        save_file = checkpoint.save_file
        def save_then_wait(tensors, filename, metadata=None):
            save_file(tensors, filename, metadata=metadata)
            if reached():
                wait_here()
        checkpoint.save_file = save_then_wait
    elif point == "metrics":  # half of a metrics line is on disk
        write = metrics.MetricsLog.write
        def cut_write(self, record):
            if reached():
                line = metrics.json.dumps(record)
                with open(self.path, "a") as f:
                    f.write(line[: len(line) // 2])
                wait_here()
            write(self, record)
        metrics.MetricsLog.write = cut_write

from ddkit.cli import main
main(sys.argv[1:], prog_name="ddkit")
'''


def ddkit_train(run_dir, *extra, crash: tuple[str, int] | None = None, marker=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    env.pop("CRASH_POINT", None)
    if crash is not None:
        env.update(CRASH_POINT=crash[0], CRASH_AT=str(crash[1]), CRASH_MARKER=str(marker))
    return subprocess.Popen([sys.executable, "-c", DRIVER, "train", str(PIPELINE), *OVERRIDES, "--out", str(run_dir),
                             "--no-progress", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(process, timeout=120) -> str:
    output, _ = process.communicate(timeout=timeout)
    return output


def wait_for(marker, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before reaching the crash point:\n{finish(process)}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run did not reach the crash point")
        time.sleep(0.02)


def outcome(run_dir):
    """Everything that must not depend on an interruption: per-step metrics and the final checkpoint."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in records if r["split"] == "train"]
    validation = [(r["step"], r["loss"]) for r in records if r["split"] == "validation"]
    return train, validation, load_file(run_dir / "checkpoint.safetensors")


def checkpoint_step(path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["ddkit"])["step"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("crash") / "full"
    process = ddkit_train(run_dir)
    output = finish(process)
    assert process.returncode == 0, output
    train, validation, tensors = outcome(run_dir)
    assert [step for step, *_ in train] == list(range(1, 13)) and [s for s, _ in validation] == [4, 8, 12]
    return train, validation, tensors


def assert_same_run(run_dir, uninterrupted):
    train, validation, tensors = outcome(run_dir)
    expected_train, expected_validation, expected_tensors = uninterrupted
    assert train == expected_train
    assert validation == expected_validation  # no record lost, none repeated
    assert tensors.keys() == expected_tensors.keys()
    different = [key for key in tensors if not (tensors[key] == expected_tensors[key]).all()]
    assert different == []  # weights, EMA, optimizer state and random generators
    assert not [path.name for path in run_dir.iterdir() if path.name.endswith(".ddkit-tmp")]


def resume(run_dir):
    process = ddkit_train(run_dir, "--resume")
    output = finish(process)
    assert process.returncode == 0, output
    return output


@pytest.mark.parametrize("point, at, expected_step", [
    ("step", 6, 4),        # inside step 6
    ("checkpoint", 2, 4),  # inside the write of the step-8 checkpoint
    ("metrics", 7, 4),     # while appending step 6's metrics line (after train 1-4, validation 4, train 5)
])
def test_sigkill_then_resume_repeats_the_uninterrupted_run(tmp_path, uninterrupted, point, at, expected_step):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    process = ddkit_train(run_dir, crash=(point, at), marker=marker)
    wait_for(marker, process)
    process.send_signal(signal.SIGKILL)
    finish(process)
    assert process.returncode == -signal.SIGKILL
    checkpoint = run_dir / "checkpoint.safetensors"
    assert checkpoint_step(checkpoint) == expected_step  # the previous checkpoint is intact
    stale = [path for path in run_dir.iterdir() if path.name.endswith(".ddkit-tmp")]
    if point == "checkpoint":  # the full-size temporary that the kill left behind
        assert len(stale) == 1 and stale[0].stat().st_size > checkpoint.stat().st_size // 2
    if point == "metrics":
        assert not (run_dir / "metrics.jsonl").read_text().endswith("\n")
    output = resume(run_dir)
    assert f"run directory: {run_dir}" in output
    assert_same_run(run_dir, uninterrupted)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_saves_the_finished_step_and_exits_128_plus_signal(tmp_path, uninterrupted, number):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    process = ddkit_train(run_dir, crash=("step", 6), marker=marker)
    wait_for(marker, process)
    process.send_signal(number)
    time.sleep(0.2)  # the handler runs while the driver waits inside step 6
    marker.with_suffix(".go").write_text("")
    output = finish(process)
    assert process.returncode == 128 + number, output
    name = signal.Signals(number).name
    assert f"{name}: stopped at step 6 of 12" in output and "Traceback" not in output
    assert checkpoint_step(run_dir / "checkpoint.safetensors") == 6
    resume(run_dir)
    assert_same_run(run_dir, uninterrupted)
