"""Scale-out measurements: data-parallel throughput, torch.compile, and the memory-mapped
corpus against in-memory crops.

    python benchmarks/scale_out.py distributed [--steps 60]   # tokens/s, 1 and 2 processes (gloo, CPU)
    python benchmarks/scale_out.py compile [--steps 40]       # eager vs train.compile, steady state
    python benchmarks/scale_out.py memmap [--gigabytes 1.0]   # token_file vs in-memory crops
    python benchmarks/scale_out.py gpu [--steps 20 --batch 8] # owt_small on every GPU: DDP vs FSDP

``distributed`` runs ``torchrun -m ddkit.cli train`` on the quickstart pipeline with the
per-process batch fixed (so K processes train on K times the tokens per step) and reports the
trainer's tokens/s and the efficiency ``tps(K) / (K tps(1))``; every process gets one thread.

``memmap`` writes a corpus of random GPT-2-size token ids (uint16) of the given size into a
temporary directory (deleted at the end), then draws batches of 1024-token random crops
from the ``token_file`` split and from the same tokens held in memory (int32, as the
pipeline stores a 50,257-symbol stream), reporting crops per second, their ratio, and this
process's resident memory (anonymous, and file pages mapped).

``gpu`` (needs CUDA and the ``hf`` extra; not run on this project's CPU machines) trains
``pipelines/owt_small.yaml`` (12 x 768, 1024 tokens, bf16) for a few steps on a generated corpus
of random ids with GPT-2's vocabulary size, once with DDP and once with FSDP, one process per
visible GPU, and reports each process's peak CUDA memory during the training steps and the
steady tokens/s. With one GPU, FSDP has nothing to shard with: the comparison needs two or more.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"


def memory() -> dict[str, float]:
    """Resident memory of this process in MiB: anonymous pages and mapped file pages."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def distributed(steps: int, batch: int) -> dict:
    results = {}
    for processes in (1, 2):
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                       "-m", "ddkit.cli", "train", str(QUICKSTART), f"train.steps={steps}",
                       f"train.batch_size={batch}", "train.eval_every=null", "train.checkpoint_every=null",
                       "train.checkpoint_interval_s=null", "train.log_every=10", "--no-progress", "--out", out]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            found = re.search(r"trained \d+ steps in ([\d.]+) s \(([\d,]+) tokens/s\)", done.stdout)
            results[processes] = {"seconds": float(found.group(1)), "tokens_per_s": float(found.group(2).replace(",", ""))}
    one, two = results[1]["tokens_per_s"], results[2]["tokens_per_s"]
    return {"per_process_batch": batch, "steps": steps, "runs": results, "efficiency_2": two / (2 * one)}


def compile_speed(steps: int, warmup: int = 5) -> dict:
    from ddkit.contrib.pipeline import Pipeline
    from ddkit.contrib.pipeline_config import load_pipeline
    from ddkit.contrib.training import Trainer

    out = {}
    for compiled in (False, True):
        config = load_pipeline(QUICKSTART, [f"train.steps={steps}", "train.eval_every=null", "train.log_every=10",
                                            "train.checkpoint_every=null", "train.checkpoint_interval_s=null",
                                            "train.progress=false", f"train.compile={str(compiled).lower()}"])
        stamps = []
        with tempfile.TemporaryDirectory() as run:
            start = time.perf_counter()
            trainer = Trainer(Pipeline.build(config), run, on_step=lambda step: stamps.append(time.perf_counter()))
            trainer.fit()
        tokens = config.train.batch_size * config.data.seq_len
        steady = (len(stamps) - 1 - warmup) * tokens / (stamps[-1] - stamps[warmup])
        out["compiled" if compiled else "eager"] = {"first_step_s": stamps[0] - start, "tokens_per_s": steady}
    out["speedup"] = out["compiled"]["tokens_per_s"] / out["eager"]["tokens_per_s"]
    return out


def memmap(gigabytes: float, batches: int, batch: int, length: int) -> dict:
    from ddkit.contrib.data.base import Split
    from ddkit.contrib.data.token_file import TokenFileSplit

    tokens = int(gigabytes * 2**30) // 2
    directory = Path(tempfile.mkdtemp(prefix="ddkit-memmap-"))
    try:
        path = directory / "train.bin"
        generator = np.random.default_rng(0)
        start = time.perf_counter()
        with open(path, "wb") as f:
            for offset in range(0, tokens, 1 << 26):
                f.write(generator.integers(0, 50257, min(1 << 26, tokens - offset), dtype=np.uint16).tobytes())
        written = time.perf_counter() - start
        before = memory()
        mapped = TokenFileSplit(np.memmap(path, dtype="<u2", mode="c", shape=(tokens,)))

        def rate(split: Split) -> float:
            g = torch.Generator().manual_seed(1)
            split.windows(batch, length, g)  # first call outside the clock
            start = time.perf_counter()
            for _ in range(batches):
                split.windows(batch, length, g)
            return batches * batch / (time.perf_counter() - start)

        mapped_rate = rate(mapped)
        after_mapped = memory()
        in_memory = Split(torch.from_numpy(np.fromfile(path, dtype="<u2").astype(np.int32)))
        loaded = memory()
        memory_rate = rate(in_memory)
        same = torch.equal(mapped.windows(4, length, torch.Generator().manual_seed(5)),
                           in_memory.windows(4, length, torch.Generator().manual_seed(5)))
        return {"file_gib": path.stat().st_size / 2**30, "tokens": tokens, "write_s": written,
                "crop": [batch, length], "batches": batches, "same_crops": same,
                "memmap_crops_per_s": mapped_rate, "in_memory_crops_per_s": memory_rate,
                "ratio": mapped_rate / memory_rate,
                "rss_mib": {"before": before, "after_memmap_batches": after_mapped, "after_loading_in_memory": loaded}}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def gpu_corpus(directory: Path, tokens: int) -> Path:
    """A corpus of random ids with GPT-2's vocabulary size and a word-level stand-in tokenizer."""
    import tokenizers

    from ddkit.contrib.data.token_file import FORMAT, HEADER
    from ddkit.contrib.hf_tokenizer import HFTokenizer

    vocab = 50257
    words = {f"w{i}": i for i in range(vocab - 1)} | {"<|endoftext|>": vocab - 1}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=words, unk_token="w0"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    backend.save(str(directory / "tokenizer.json"))
    generator = np.random.default_rng(0)
    splits = {"train": tokens, "validation": 1 << 16}
    for name, count in splits.items():
        generator.integers(0, vocab, count, dtype=np.uint16).tofile(directory / f"{name}.bin")
    header = {"format": FORMAT, "dtype": "uint16", "vocab_size": vocab,
              "tokenizer": HFTokenizer(str(directory / "tokenizer.json")).spec(), "eot_id": vocab - 1,
              "splits": {name: {"file": f"{name}.bin", "tokens": count} for name, count in splits.items()}}
    (directory / HEADER).write_text(json.dumps(header))
    return directory


def gpu_worker(corpus: str, out: str, strategy: str, steps: int, batch: int) -> None:
    """One process of the ``gpu`` section (started by torchrun)."""
    from ddkit.contrib.distributed import setup
    from ddkit.contrib.pipeline import Pipeline
    from ddkit.contrib.pipeline_config import load_pipeline
    from ddkit.contrib.training import Trainer

    config = load_pipeline(ROOT / "pipelines" / "owt_small.yaml", [
        f"data.dataset.path={corpus}", f"train.steps={steps}", f"train.batch_size={batch}", "train.eval_every=null",
        "train.eval_batches=1", "train.checkpoint_every=null", "train.checkpoint_interval_s=null",
        "train.log_every=5", "train.progress=false", f"train.distributed.strategy={strategy}"])
    world, device = setup(config.train)
    pipeline = Pipeline.build(config, device=device)
    stamps, peaks = [], []

    def on_step(step: int) -> None:
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        peaks.append(torch.cuda.max_memory_allocated())

    torch.cuda.reset_peak_memory_stats()
    Trainer(pipeline, out, world=world, on_step=on_step).fit()
    tokens = batch * config.data.seq_len * world.size
    steady = (len(stamps) - 3) * tokens / (stamps[-1] - stamps[2])
    print(json.dumps({"strategy": strategy, "rank": world.rank, "processes": world.size,
                      "peak_gib": max(peaks) / 2**30, "tokens_per_s": steady}), flush=True)
    world.close()


def gpu(steps: int, batch: int) -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("the gpu section needs CUDA")
    processes = torch.cuda.device_count()
    results = []
    with tempfile.TemporaryDirectory() as root:
        corpus = gpu_corpus(Path(root), 1 << 24)
        for strategy in ("ddp", "fsdp"):
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                       __file__, "_gpu_worker", "--corpus", str(corpus), "--out", f"{root}/{strategy}",
                       "--strategy", strategy, "--steps", str(steps), "--batch", str(batch)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {"gpus": processes, "device": torch.cuda.get_device_name(0), "per_process_batch": batch, "runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("section", choices=["distributed", "compile", "memmap", "gpu", "_gpu_worker"])
    parser.add_argument("--corpus")
    parser.add_argument("--out")
    parser.add_argument("--strategy", choices=["ddp", "fsdp"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32, help="distributed: sequences per process")
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--batches", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.section == "_gpu_worker":
        gpu_worker(args.corpus, args.out, args.strategy, args.steps, args.batch)
        return
    if args.section == "distributed":
        result = distributed(args.steps, args.batch)
    elif args.section == "gpu":
        result = gpu(args.steps, args.batch)
    elif args.section == "compile":
        result = compile_speed(args.steps)
    else:
        result = memmap(args.gigabytes, args.batches, 64, 1024)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
