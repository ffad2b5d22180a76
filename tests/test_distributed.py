"""Data-parallel training on 2 CPU processes (gloo), launched by torchrun as users do.

One baseline run of ``tests/distributed_worker.py`` (2 processes, DDP, 6 steps, checkpoints
at steps 2, 4 and 6) is compared with:

* itself across ranks: the two replicas hold bit-identical weights;
* one process with the same global batch (``grad_accum=2``): the same micro-batches, so the
  same weights and losses up to float32 summation order. Tolerance: ``atol=1e-6, rtol=1e-5``
  on the weights after 6 AdamW steps and ``1e-6`` on each loss (measured: 0 and 6e-8);
* a 2-process run killed with SIGKILL after step 3 and resumed from its step-2 checkpoint:
  exactly the same losses, validation losses and weights;
* the step-2 checkpoint resumed on one process with ``grad_accum=2`` (same tolerance), and
  with ``grad_accum=1`` (a warning: the global batch changes);
* the step-2 checkpoint resumed by 2 processes under FSDP2 (``fully_shard``): same tolerance.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ddkit
from distributed_worker import CONFIG
from ddkit.config import ConfigError
from ddkit.contrib.checkpoint import load_checkpoint
from ddkit.contrib.distributed import World, seed_for, setup
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.training import ResumeChangesBatchWarning, Trainer

WORKER = Path(__file__).with_name("distributed_worker.py")
#: float32 summation order differs between DDP's all-reduce and gradient accumulation
TOLERANCE = {"atol": 1e-6, "rtol": 1e-5}

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no torch.distributed with gloo")


def launch(out: Path, *args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` (a free port on localhost) with the worker."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               str(WORKER), str(out), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def ok(out: Path, *args: str) -> None:
    done = launch(out, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def losses(run: Path, split: str = "train") -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [record["loss"] for record in map(json.loads, lines) if record["split"] == split]


def weights(run: Path, rank: int = 0) -> dict[str, torch.Tensor]:
    return load_file(str(run / f"rank{rank}.safetensors"))


def assert_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key].cpu(), expected[key].cpu(), **TOLERANCE, msg=key)


def trainer(run: Path, *overrides: str) -> Trainer:
    return Trainer(Pipeline.build(load_pipeline(CONFIG, list(overrides))), run)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The baseline 2-process run, and a copy of its step-2 checkpoint taken from a run that
    was killed after step 3."""
    root = tmp_path_factory.mktemp("distributed")
    ok(root / "baseline")
    killed = launch(root / "killed", "--kill-at", "3")
    assert killed.returncode != 0, "the run was to be killed after step 3"
    assert load_checkpoint(root / "killed").step == 2
    shutil.copytree(root / "killed", root / "step2")
    return root


def test_replicas_agree_and_match_one_process_with_the_same_global_batch(runs, tmp_path):
    baseline = runs / "baseline"
    rank0, rank1 = weights(baseline, 0), weights(baseline, 1)
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    single = trainer(tmp_path / "single", "train.grad_accum=2")
    result = single.fit()
    assert_close(single.model.state_dict(), rank0)
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses(baseline)), atol=1e-6, rtol=0)
    # the checkpoints hold the same weights, EMA and optimizer state
    ddp, one = load_checkpoint(baseline), load_checkpoint(tmp_path / "single")
    assert ddp.meta["processes"] == 2 and one.meta["processes"] == 1
    assert ddp.meta["micro_batches"] == one.meta["micro_batches"] == 2
    assert_close(ddp.tensors, one.tensors)
    # validation shares its batches out between the processes and gives one process's value
    torch.testing.assert_close(torch.tensor(losses(baseline, "validation")),
                               torch.tensor(losses(tmp_path / "single", "validation")), atol=1e-6, rtol=0)


def test_a_killed_two_process_run_resumes_with_the_same_losses(runs):
    ok(runs / "killed", "--resume")
    assert losses(runs / "killed") == losses(runs / "baseline")
    assert losses(runs / "killed", "validation") == losses(runs / "baseline", "validation")
    expected = weights(runs / "baseline")
    for rank in (0, 1):
        got = weights(runs / "killed", rank)
        assert all(torch.equal(got[key], expected[key]) for key in expected)


def test_a_two_process_checkpoint_resumes_on_one_process(runs, tmp_path):
    same_batch = trainer(shutil.copytree(runs / "step2", tmp_path / "same"), "train.grad_accum=2")
    assert same_batch.resume() == 2
    same_batch.fit()
    assert_close(same_batch.model.state_dict(), weights(runs / "baseline"))
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "same")), torch.tensor(losses(runs / "baseline")),
                               atol=1e-6, rtol=0)
    halved = trainer(shutil.copytree(runs / "step2", tmp_path / "halved"))
    with pytest.warns(ResumeChangesBatchWarning, match=r"2 micro-batches of 4 sequences per step, this run takes 1 "
                                                       r"\(grad_accum 1 x 1 process\(es\)\)"):
        halved.resume()


def test_fsdp_resumes_a_ddp_checkpoint_and_trains_like_ddp(runs, tmp_path):
    run = shutil.copytree(runs / "step2", tmp_path / "fsdp")
    ok(run, "--resume", "train.distributed.strategy=fsdp")
    rank0, rank1 = weights(run, 0), weights(run, 1)
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    assert_close(rank0, weights(runs / "baseline"))
    # gathered from the shards, the checkpoint has DDP's layout (optimizer state by parameter index)
    assert_close(load_checkpoint(run).tensors, load_checkpoint(runs / "baseline").tensors)


def test_micro_batch_time_slices_make_one_stratified_draw():
    """The M slices of ddkit.global_batch_slice are exactly one antithetic draw of B*M times."""
    B, M = 5, 3
    whole = ddkit.sample_times(B * M, method="antithetic", t_min=0.01, generator=torch.Generator().manual_seed(7))
    parts = []
    for index in range(M):
        with ddkit.global_batch_slice(index, M, torch.Generator().manual_seed(7)):
            parts.append(ddkit.sample_times(B, method="antithetic", t_min=0.01))
    torch.testing.assert_close(torch.cat(parts).sort().values, whole.sort().values, atol=1e-15, rtol=0)
    assert all(len(set((part * B).floor().tolist())) >= B - 1 for part in parts)  # each slice spreads too
    with pytest.raises(ValueError, match="index 3 is not in"):
        with ddkit.global_batch_slice(3, 3, torch.Generator()):
            pass


def test_seeds_are_keyed():
    assert seed_for(0, 1, 5, 2) == seed_for(0, 1, 5, 2)
    keys = {seed_for(seed, stream, step, j) for seed in (0, 1) for stream in (1, 2) for step in (1, 2) for j in (0, 1)}
    assert len(keys) == 16 and all(0 <= key < 2**63 for key in keys)
    assert seed_for(-1, 1) == seed_for(2**64 - 1, 1)


def test_launch_settings_are_checked(monkeypatch):
    config = load_pipeline(CONFIG)
    assert setup(config.train) == (World(), None)  # not launched by torchrun: one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="RANK is not: launch with torchrun"):
        setup(config.train)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    cpu = load_pipeline(CONFIG, ["train.device=cpu", "train.distributed.backend=nccl"])
    with pytest.raises(ConfigError, match="train.distributed.backend: nccl needs CUDA devices"):
        setup(cpu.train)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        setup(config.train)
    with pytest.raises(ConfigError, match=r"train.distributed.strategy"):
        load_pipeline(CONFIG, ["train.distributed.strategy=zero3"])
