"""Training throughput of ``ddkit train`` against a bare PyTorch loop.

Both run the same network (same initial weights), the same batches (random windows of
the same data, same batch size and length) and the same loss object; the bare loop is
the minimum anyone would write: windows -> loss -> backward -> AdamW step (the same AdamW
construction, fused where torch provides it). The trainer
adds what ``ddkit train`` always does (learning-rate schedule, gradient clipping, EMA,
NaN check, metrics and progress bar). Rounds alternate between the two so that a change
in machine load hits both alike; the printed ratio is the median over rounds of
trainer tokens/s divided by bare-loop tokens/s (target: >= 0.95).

    python benchmarks/train_throughput.py                      # the quickstart pipeline
    python benchmarks/train_throughput.py pipelines/markov.yaml model.width=128 --steps 30
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.training import Trainer, make_optimizer


def trainer_round(config, steps: int, warmup: int, workdir: str) -> float:
    """tokens/s of Trainer.fit between the end of step ``warmup`` and the last step."""
    pipeline = Pipeline.build(config)
    marks: dict[int, float] = {}

    def on_step(step):
        if step in (warmup, steps):  # like the bare loop: synchronise only where the clock is read
            if pipeline.device.type == "cuda":
                torch.cuda.synchronize()
            marks[step] = time.perf_counter()

    trainer = Trainer(pipeline, workdir, on_step=on_step)
    trainer.fit()
    cfg = config.train
    tokens = (steps - warmup) * cfg.batch_size * cfg.grad_accum * config.data.seq_len
    return tokens / (marks[steps] - marks[warmup])


def bare_round(config, steps: int, warmup: int) -> float:
    """tokens/s of the minimal loop with the same network, batches and loss."""
    pipeline = Pipeline.build(config)
    model, loss, device = pipeline.model, pipeline.loss, pipeline.device
    cfg = config.train
    optimizer = make_optimizer(list(model.parameters()), cfg)  # the same AdamW (fused where available)
    data_generator = torch.Generator().manual_seed(config.seed + 1)
    loss_generator = torch.Generator(device=device).manual_seed(config.seed + 2)
    train, seq_len = pipeline.data["train"], config.data.seq_len
    model.train()
    start = None
    for step in range(1, steps + 1):
        for _ in range(cfg.grad_accum):
            x0 = train.windows(cfg.batch_size, seq_len, data_generator).to(device)
            with pipeline.autocast():
                out = loss(model, x0, generator=loss_generator)
            (out.loss / cfg.grad_accum).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    tokens = (steps - warmup) * cfg.batch_size * cfg.grad_accum * seq_len
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", nargs="?", default="pipelines/quickstart.yaml")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=40, help="steps per round (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    total = args.steps + args.warmup
    config = load_pipeline(args.pipeline, [*args.overrides, f"train.steps={total}", "train.progress=true",
                                           "train.eval_every=null", "train.checkpoint_every=null"])
    print(f"{args.pipeline} {' '.join(args.overrides)}: {args.rounds} rounds of {args.steps} timed steps, "
          f"batch {config.train.batch_size} x {config.data.seq_len} tokens, torch threads {torch.get_num_threads()}")
    ratios = []
    with tempfile.TemporaryDirectory() as workdir:
        for round_ in range(args.rounds):
            bare = bare_round(config, total, args.warmup)
            ddkit_train = trainer_round(config, total, args.warmup, f"{workdir}/run{round_}")
            ratios.append(ddkit_train / bare)
            print(f"round {round_ + 1}: bare loop {bare:,.0f} tokens/s, ddkit train {ddkit_train:,.0f} tokens/s, "
                  f"ratio {ddkit_train / bare:.3f}", flush=True)
    print(f"median ratio ddkit train / bare loop: {statistics.median(ratios):.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
