"""Numba kernels: compiled into the user cache directory (or ``NUMBA_CACHE_DIR``), never next
to the installed sources; compiled ahead of sampling, and the compilation reported apart from
the sampling time."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ddkit.plugins.kernels as kernel_plugins
from ddkit import kernels
from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.runner import format_samples, sample_pipeline
from ddkit.contrib.sampling import SAMPLING_OPS

pytest.importorskip("numba")

PACKAGE_CACHE = Path(kernel_plugins.__file__).parent / "__pycache__"

# Numba imported first on purpose: the cache directory must still be the one ddkit chooses
COMPILE_ONE_KERNEL = r'''
import json, os, sys
import numba
import torch
from ddkit import kernels
from ddkit.plugins.kernels.numba_backend import default_cache_dir
first = kernels.prepare(("mask_noise",))
again = kernels.prepare(("mask_noise",))
x = kernels.mask_noise(torch.zeros(1, 4, dtype=torch.long), 0.5, torch.full((1, 4), 0.25, dtype=torch.float64),
                       mask_id=3, backend="numba")
print(json.dumps({"cache_dir": numba.config.CACHE_DIR, "default": str(default_cache_dir()),
                  "env": os.environ.get("NUMBA_CACHE_DIR"), "first": first, "again": again}))
'''


def compile_one_kernel(env: dict[str, str]) -> dict:
    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, **env}
    done = subprocess.run([sys.executable, "-c", COMPILE_ONE_KERNEL], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def index_files(directory: Path, since: float = 0.0) -> list[Path]:
    return [p for p in directory.rglob("*mask_noise*.nbi") if p.stat().st_mtime >= since] if directory.exists() else []


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_CACHE_HOME sets the user cache directory on Linux")
def test_kernels_are_cached_in_the_user_cache_directory(tmp_path):
    start = time.time() - 1
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    first = compile_one_kernel(env)
    user_dir = tmp_path / "xdg" / "ddkit" / "numba"
    assert first["cache_dir"] == first["default"] == first["env"] == str(user_dir)
    assert index_files(user_dir), "nothing was cached in the user cache directory"
    assert not index_files(PACKAGE_CACHE, since=start), "Numba wrote its cache next to the installed sources"
    assert first["first"] == ["numba"] and first["again"] == []  # compiled once, then ready
    second = compile_one_kernel(env)  # a new process loads the cache instead of compiling
    assert second["first"] == []


def test_an_existing_numba_cache_dir_is_kept(tmp_path):
    custom = tmp_path / "custom"
    result = compile_one_kernel({"NUMBA_CACHE_DIR": str(custom), "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert result["cache_dir"] == str(custom) and index_files(custom)
    assert not index_files(tmp_path / "xdg")


SAMPLING_CALLS = r'''
import json
import torch
from ddkit import kernels
from ddkit.contrib.sampling import SAMPLING_OPS
from ddkit.plugins.kernels import numba_backend

torch.set_num_threads(2)
assert kernels.prepare(SAMPLING_OPS) in ([], ["numba"])
impl = numba_backend.kernels()
def signatures():
    return {name: len(f.signatures) for name, f in vars(impl).items() if hasattr(f, "signatures")}
prepared = signatures()
g = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    for rows, V in ((3, 5), (700, 512)):  # 700 x 512 logits are above the serial limit: the parallel kernel
        logits = torch.randn(rows, V, generator=g).to(dtype)
        u = torch.rand(rows, dtype=torch.float64, generator=g)
        for options in ({}, {"temperature": 0.0}, {"temperature": 0.7, "top_k": 3, "top_p": 0.9}):
            kernels.categorical(logits, u, **options)
        x = torch.full((rows // 100 + 1, 100), V) if rows > 100 else torch.full((1, rows), V)
        logits = torch.randn(*x.shape, V, generator=g).to(dtype)
        u_move, u_token = (torch.rand(x.shape, dtype=torch.float64, generator=g) for _ in range(2))
        for p in (0.5, torch.full((x.shape[0],), 0.3), torch.rand(x.shape, dtype=torch.float64, generator=g)):
            for argmax in (False, True):
                kernels.masked_step(x, logits, p, u_move, u_token, mask_id=V, argmax=argmax, top_p=0.8)
                kernels.masked_step(x, logits, p, u_move, u_token, mask_id=V, argmax=argmax, remask_prob=p,
                                    u_remask=u_move, fixed=u_move < 0.1)
        kernels.any_equal(x, V)
scores = torch.rand(4, 9, generator=g)
kernels.commit_topk(scores, scores > 0.2, torch.tensor([1, 2, 0, 9]))
kernels.commit_topk(scores.double(), scores > 0.5, 3)
print(json.dumps({"prepared": prepared, "after": signatures()}))
'''


def test_prepare_compiles_every_signature_that_sampling_uses():
    done = subprocess.run([sys.executable, "-c", SAMPLING_CALLS], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "2", "DDKIT_KERNEL_BACKEND": ""})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(result["prepared"][name] >= 1 for name in ("sample_span", "sample_rows", "select_moving", "commit_topk"))
    assert result["after"] == result["prepared"]  # sampling compiled nothing more


def test_prepare_refuses_an_unknown_operation():
    with pytest.raises(ValueError, match=r"unknown kernel operations \['remask'\]"):
        kernels.prepare(("masked_step", "remask"))


CONFIG = {
    "name": "compile",
    "data": {"dataset": {"name": "markov", "vocab_size": 5, "train_sequences": 16, "validation_sequences": 4,
                         "test_sequences": 0}, "seq_len": 8},
    "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 8},
    "sampler": {"name": "ancestral", "steps": 4},
    "sample": {"num_samples": 2, "show": False},
}


def test_compilation_is_reported_apart_from_the_sampling_time(monkeypatch):
    pipeline = Pipeline.build(load_pipeline(CONFIG), device="cpu")
    kernels.prepare(SAMPLING_OPS)  # the real kernels ready, so that sampling below takes milliseconds
    calls = []

    def slow_compilation(ops, device, backend="auto"):
        calls.append((tuple(ops), torch.device(device).type, backend))
        time.sleep(1.0)
        return ["numba"]

    monkeypatch.setattr(kernels, "prepare", slow_compilation)
    samples = sample_pipeline(pipeline)
    assert calls == [(SAMPLING_OPS, "cpu", "auto")]
    assert samples.compile_seconds >= 1.0 and samples.seconds < 1.0
    assert samples.to_json()["kernel_compile_seconds"] == samples.compile_seconds
    assert format_samples(samples).splitlines()[0].startswith("compiling kernels (first run only): 1.")

    monkeypatch.setattr(kernels, "prepare", lambda ops, device, backend="auto": [])  # ready: nothing to report
    samples = sample_pipeline(pipeline)
    assert samples.compile_seconds == 0.0 and "compiling" not in format_samples(samples)
