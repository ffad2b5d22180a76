"""Run by ``torchrun`` from tests/test_distributed.py: train the tiny pipeline of
:data:`CONFIG` on every process, then write this process's network weights to
``OUT/rank<r>.safetensors`` (rank 0 also writes the run directory as training does).

    torchrun --standalone --nproc_per_node=2 tests/distributed_worker.py OUT [--resume]
        [--kill-at STEP] [key.path=value ...]

``--kill-at STEP``: rank 1 kills itself with SIGKILL right after optimizer step STEP.
"""

import argparse
import os
import signal
import sys
from pathlib import Path

from safetensors.torch import save_file

from ddkit.contrib.distributed import setup
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.training import train_pipeline

CONFIG = {
    "name": "distributed",
    "data": {"dataset": {"name": "markov", "vocab_size": 5, "train_sequences": 128,
                         "validation_sequences": 16, "test_sequences": 0}, "seq_len": 8},
    "model": {"name": "dit", "width": 16, "depth": 2, "heads": 2, "max_seq_len": 8, "dropout": 0.1},
    "train": {"steps": 6, "batch_size": 4, "warmup_steps": 2, "log_every": 1, "eval_every": 3,
              "eval_batches": 3, "checkpoint_every": 2, "progress": False, "lr": 1e-2, "precision": "fp32"},
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at", type=int)
    args, overrides = parser.parse_known_args(argv)
    config = load_pipeline(CONFIG, overrides)
    world, device = setup(config.train)
    pipeline = Pipeline.build(config, device=device)

    def on_step(step: int) -> None:
        if step == args.kill_at and world.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer, _ = train_pipeline(pipeline, args.out, resume=args.resume, on_step=on_step, world=world)
    weights = trainer.parallel.full_state(trainer.model, everywhere=True)
    save_file({key: value.detach().cpu().contiguous() for key, value in weights.items()},
              str(args.out / f"rank{world.rank}.safetensors"))
    world.close()


if __name__ == "__main__":
    main(sys.argv[1:])
