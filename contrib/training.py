r"""The training loop: plain PyTorch, no framework.

Per optimizer step :math:`k = 1, \dots, K`:

* ``grad_accum`` micro-batches of ``batch_size`` random-crop windows; each contributes
  :math:`\nabla \mathcal L / \text{grad\_accum}`, where :math:`\mathcal L` is the loss's
  mean nats per token (an unbiased estimate of the NELBO per token);
* global gradient-norm clipping, AdamW with the learning rate
  :math:`\eta_k = \eta\,k/W` during the warmup (:math:`k \le W`), then constant or cosine
  :math:`\eta_k = \eta\,(r + (1 - r)\tfrac12(1 + \cos(\pi\,\tfrac{k - W}{K - W})))`
  with the floor ratio :math:`r`;
* an exponential moving average of the weights,
  :math:`\bar\theta \leftarrow d_k\bar\theta + (1 - d_k)\theta` with
  :math:`d_k = \min(d, \tfrac{1 + k}{10 + k})` (short runs are not dominated by the
  initialisation); the EMA weights are used for validation, evaluation and sampling.

A non-finite loss stops training with :class:`TrainingDiverged` naming the step (nothing is
saved, so the last good checkpoint stays). Checkpoints are written every
``train.checkpoint_every`` steps, whenever ``train.checkpoint_interval_s`` seconds have
passed since the last one, and at the end. SIGTERM or SIGINT (Ctrl-C) during :meth:`Trainer.fit`
lets the current step finish, writes a checkpoint and raises :class:`TrainingInterrupted`; a
second signal acts at once (SIGTERM ends the process, SIGINT raises ``KeyboardInterrupt``,
which saves the last completed step on a single process).

Randomness is keyed, not carried: micro-batch :math:`j` of optimizer step :math:`k` draws its
windows, its loss noise and its dropout from generators seeded by
``seed_for(seed, stream, k, j)`` (:func:`ddkit.contrib.distributed.seed_for`), and its
antithetic times are slice :math:`j` of one stratified draw over the step's :math:`M`
micro-batches (:func:`ddkit.global_batch_slice`). A step repeated after a kill therefore
draws exactly what it drew the first time, and a resumed run on CPU repeats the
uninterrupted run's losses exactly. The global torch generator (dropout) is re-seeded before
each micro-batch.

Under ``torchrun`` (:mod:`ddkit.contrib.distributed`) process :math:`r` runs micro-batches
:math:`j = rA, \dots, rA + A - 1` of the :math:`M = KA` of a step (``A = grad_accum``, ``K``
processes): ``batch_size`` is per process and micro-batch, the global batch of a step is
``batch_size * grad_accum * K`` sequences. Losses are averaged over processes at each sync
point; only rank 0 writes ``config.yaml``, metrics, the plot and checkpoints; validation
batches are shared out among the processes and their sums reduced.
"""

from __future__ import annotations

import copy
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

import ddkit
from ddkit import DDKitError, NumericalError
from ddkit.config import to_yaml

from .checkpoint import (CHECKPOINT_NAME, CheckpointError, atomic_write_text, load_checkpoint, optimizer_state,
                         save_checkpoint, temporaries)
from .distributed import (DATA, GLOBAL_RNG, LOSS, TIMES, VALIDATION, Parallel, TrainStep, World, grad_norm_value,
                          seed_for, warn_on_main)
from .metrics import MetricsLog, plot_metrics
from .pipeline import Pipeline
from .pipeline_config import TrainConfig

#: sections that must not change when a run is resumed
FROZEN_SECTIONS = ("seed", "data", "model", "process", "parameterization", "loss")


#: the files a trainer writes into its run directory
RUN_FILES = ("config.yaml", "metrics.jsonl", "training_curve.png", CHECKPOINT_NAME)
#: the signals that stop training after the current step, with a checkpoint
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingDiverged(NumericalError):
    """The loss became NaN or infinite."""


class ResumeChangesBatchWarning(UserWarning):
    """A run resumes with another global batch than its checkpoint was trained with."""


class TrainingInterrupted(DDKitError):
    """Training stopped on SIGTERM or SIGINT after a checkpoint was written. The command line
    exits with status ``128 + signal_number`` (143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class StopSignals:
    """While active (a ``with`` block in the main thread), SIGTERM and SIGINT only set
    :attr:`received`; the training loop checks it after every step. The first signal puts
    the default actions back, so a second one acts at once. Outside the main thread, where
    Python cannot install handlers, signals keep their default actions."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame) -> None:
        self.received = number
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print(f"\n{signal.Signals(number).name}: finishing the current step and writing a checkpoint "
              f"(send the signal again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, signal.SIG_DFL if previous is None else previous)  # None: set outside Python
        self._previous.clear()


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (1-based); see the module docstring."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the config's settings; the fused implementation (one kernel for all
    parameters, CPU or CUDA) where this torch provides it."""
    kwargs = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
    sharded = any(hasattr(p, "full_tensor") for p in params)  # FSDP2's DTensors: the foreach kernels
    if not sharded and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params):
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, ValueError, TypeError):
            pass
    return torch.optim.AdamW(params, **kwargs)


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema = list(self.module.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1.0 - decay)
        for target, source in zip(self.module.buffers(), model.buffers()):
            target.copy_(source)


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # nats per token of each step run here
    validation: dict[str, float] | None = None
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    checkpoint: Path | None = None


class Trainer:
    """Trains a :class:`Pipeline` and writes ``config.yaml``, ``metrics.jsonl``,
    ``training_curve.png`` and ``checkpoint.safetensors`` into ``run_dir`` (rank 0 only, when
    ``world`` has several processes; every process runs the same calls)."""

    def __init__(self, pipeline: Pipeline, run_dir: Path | str, *, progress: bool | None = None,
                 on_step: Callable[[int], None] | None = None, world: World | None = None):
        self.pipeline = pipeline
        self.cfg = pipeline.config.train
        self.world = world if world is not None else World()
        self.run_dir = Path(run_dir)
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.progress = (self.cfg.progress if progress is None else progress) and self.world.is_main
        self.on_step = on_step
        self.model = pipeline.model
        self.ema = EMA(self.model, self.cfg.ema_decay) if self.cfg.ema_decay > 0 else None
        self.train_step = TrainStep(self.model, pipeline.loss)
        self.parallel = Parallel(self.train_step, self.world, pipeline.device, self.cfg.distributed,
                                 ema=self.ema.module if self.ema else None)
        if self.cfg.compile:
            # the network as the loss calls it; its parameters (and the state dicts) stay the network's
            self.denoiser = torch.compile(self.model, backend=self.cfg.compile_backend)
        self.params = list(dict.fromkeys(self.train_step.parameters()))  # the network's, then the loss's
        self.optimizer = make_optimizer(self.params, self.cfg)
        self.step = 0
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        self.last_checkpoint_step: int | None = None

    @property
    def denoiser(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The network as the training loss calls it (compiled when ``train.compile``); may be
        replaced by any denoiser over the same parameters (tests wrap it)."""
        return self.train_step.denoiser

    @denoiser.setter
    def denoiser(self, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        object.__setattr__(self.train_step, "denoiser", denoiser)

    # -- state ---------------------------------------------------------------------------

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights used for validation (EMA, else the network); sharded under FSDP."""
        return self.ema.module if self.ema is not None else self.model

    def inference_model(self) -> torch.nn.Module:
        """:attr:`eval_model` as a whole network on this process, for evaluation and sampling
        after training (under FSDP a new, unsharded copy; collective there)."""
        if not self.parallel.sharded:
            return self.eval_model
        from .pipeline import build_component

        state = self.parallel.full_state(self.eval_model, everywhere=True)
        model = build_component("model", self.pipeline.config.model, {"vocab_size": self.pipeline.vocab_size},
                                where="model")
        model.load_state_dict(state)
        return model.to(self.pipeline.device).eval()

    @property
    def micro_batches(self) -> int:
        """Micro-batches per optimizer step over all processes (``grad_accum`` x processes)."""
        return self.cfg.grad_accum * self.world.size

    def save(self) -> Path:
        """Write the checkpoint (atomically, rank 0; under FSDP every process takes part in
        gathering the state)."""
        config = self.pipeline.resolved_config()
        state = self.parallel.full_state(self.train_step)
        ema = self.parallel.full_state(self.ema.module) if self.ema else None
        optimizer = self.parallel.optimizer_state(self.optimizer, self.params)
        if self.world.is_main:
            model = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
            loss = {k[len("loss."):]: v for k, v in state.items() if k.startswith("loss.")}
            save_checkpoint(self.checkpoint_path, step=self.step, config=config, model=model, ema=ema, loss=loss,
                            optimizer=optimizer,
                            extra={"ema_updates": self.ema.updates if self.ema else 0, "processes": self.world.size,
                                   "micro_batches": self.micro_batches, "batch_size": self.cfg.batch_size})
        self.last_checkpoint_step = self.step
        return self.checkpoint_path

    def resume(self, path: Path | str | None = None) -> int:
        """Restore everything from a checkpoint (default: the run directory's). A checkpoint
        written by another number of processes resumes here: when ``batch_size`` and the
        micro-batches per step (``grad_accum`` x processes) are unchanged, the run continues
        exactly as it would have; otherwise it continues with the new global batch, and says so."""
        ckpt = load_checkpoint(path or self.checkpoint_path)
        current = self.pipeline.resolved_config()
        changed = [key for key in FROZEN_SECTIONS if ckpt.config.get(key) != current.get(key)]
        if changed:
            raise CheckpointError(
                f"cannot resume {ckpt.path}: the config's {', '.join(changed)} section(s) differ from "
                f"the checkpoint's (only train, eval, sampler, sample and output may change)")
        before = (ckpt.meta.get("batch_size", self.cfg.batch_size), ckpt.meta.get("micro_batches", self.cfg.grad_accum))
        if before != (self.cfg.batch_size, self.micro_batches):
            warn_on_main(self.world, (
                f"resuming {ckpt.path}: it was trained with {before[1]} micro-batches of {before[0]} sequences per "
                f"step, this run takes {self.micro_batches} (grad_accum {self.cfg.grad_accum} x {self.world.size} "
                f"process(es)) of {self.cfg.batch_size}: training continues with a different global batch; keep "
                f"batch_size and grad_accum x processes to continue exactly"), ResumeChangesBatchWarning)
        ckpt.check_fits(self.model, ckpt.group("model"), what="model")  # one line, not torch's report
        ckpt.check_fits(self.pipeline.loss, ckpt.group("loss"), what="loss")
        state = {f"model.{k}": v for k, v in ckpt.group("model").items()}
        state.update({f"loss.{k}": v for k, v in ckpt.group("loss").items()})
        self.parallel.load_full_state(self.train_step, state)
        if self.ema is not None:
            ckpt.check_fits(self.ema.module, ckpt.group("ema") or ckpt.group("model"), what="ema")
            self.parallel.load_full_state(self.ema.module, ckpt.group("ema") or ckpt.group("model"))
            self.ema.updates = int(ckpt.meta.get("ema_updates", ckpt.step))
        if "optimizer" in ckpt.meta:
            self.parallel.load_optimizer_state(self.optimizer, self.params,
                                               optimizer_state(ckpt.tensors, ckpt.meta["optimizer"]))
            for group in self.optimizer.param_groups:  # the new config's optimizer settings win
                group["betas"], group["weight_decay"] = self.cfg.betas, self.cfg.weight_decay
        self.step = self.last_checkpoint_step = ckpt.step
        if self.world.is_main:
            self.metrics.truncate_after(ckpt.step)
        return ckpt.step

    # -- loop ----------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean NELBO on the first ``eval_batches * batch_size`` validation chunks, with the
        EMA weights and a fixed noise seed per batch (so the curve is comparable across steps
        and the value does not depend on the number of processes, which share the batches)."""
        model = self.eval_model
        was_training = model.training
        model.eval()
        chunks = self.pipeline.data["validation"].chunks(self.pipeline.config.data.seq_len)
        chunks = chunks[: self.cfg.eval_batches * self.cfg.batch_size].to(self.pipeline.device)
        loss = self.pipeline.loss.evaluation()  # a bound even when training on a clipped objective
        batches = list(chunks.split(self.cfg.batch_size))
        seed, device, world = self.pipeline.config.seed, self.pipeline.device, self.world
        total = torch.zeros((), dtype=torch.float64, device=device)
        # every process runs as many batches (FSDP's forward is collective); a filler counts 0
        rounds = -(-len(batches) // world.size)
        for index in range(world.rank, rounds * world.size, world.size):
            batch = batches[index] if index < len(batches) else batches[0]
            generator = torch.Generator(device=device).manual_seed(seed_for(seed, VALIDATION, index))
            with self.pipeline.autocast():
                out = loss(model, batch, generator=generator)
            if index < len(batches):
                total += out.nats.double().sum()
        with self.pipeline.autocast():  # every process: the loss's state stays the same everywhere
            adapted = self.pipeline.loss.after_validation(model, batches, seed=seed + 4)
        self.parallel.reshard(model)  # the EMA update works on the shards
        model.train(was_training)
        nats = float(world.sum(total)) / chunks.numel()
        return {"loss": nats, "bits_per_token": nats / math.log(2), **adapted}

    def _check_finite(self, value: float, step: int, what: str = "loss") -> None:
        if not math.isfinite(value):
            where = (f"the last good checkpoint is {self.checkpoint_path} (step {self.last_checkpoint_step})"
                     if self.last_checkpoint_step is not None else "no checkpoint was written before it")
            raise TrainingDiverged(f"the {what} is {value} at step {step}; training stopped and {where}. "
                                   f"Try a lower train.lr, more train.warmup_steps or train.grad_clip.")

    def micro_batch(self, step: int, index: int) -> tuple[torch.Tensor, torch.Generator, torch.Generator]:
        """Micro-batch ``index`` (of :attr:`micro_batches`) of optimizer step ``step``: its
        windows, its loss generator and the generator of the step's shared time offsets; the
        global torch generator is seeded for its dropout. The same on every process."""
        seed, device = self.pipeline.config.seed, self.pipeline.device
        data = torch.Generator().manual_seed(seed_for(seed, DATA, step, index))
        windows = self.pipeline.data["train"].windows(self.cfg.batch_size, self.pipeline.config.data.seq_len, data)
        noise = torch.Generator(device=device).manual_seed(seed_for(seed, LOSS, step, index))
        offsets = torch.Generator().manual_seed(seed_for(seed, TIMES, step))
        torch.manual_seed(seed_for(seed, GLOBAL_RNG, step, index))
        return windows.to(device, non_blocking=True), noise, offsets

    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train from the current step to ``train.steps`` (or ``stop_at``), then save.

        Losses stay on the device until a sync point (a metrics line, validation, a
        checkpoint, the end), so a GPU is never stalled; every loss is checked before
        anything is saved, and a non-finite one is reported with its own step.
        ``on_step(step)`` is called after each optimizer step."""
        cfg, pipeline, world = self.cfg, self.pipeline, self.world
        if world.is_main:
            self.remove_stale_temporaries()
            atomic_write_text(self.run_dir / "config.yaml", to_yaml(pipeline.resolved_config()))
        last = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        tokens_per_step = cfg.batch_size * pipeline.config.data.seq_len * self.micro_batches
        self.model.train()
        result = TrainResult(step=self.step)
        pending: list[torch.Tensor] = []  # this process's losses of the steps since the last sync point
        interval: list[float] = []

        def sync() -> list[float]:
            if not pending:
                return []
            values = (world.sum(torch.stack(pending).double()) / world.size).tolist()
            first = self.step - len(pending) + 1
            pending.clear()
            for offset, value in enumerate(values):
                self._check_finite(value, first + offset)
            result.losses.extend(values)
            interval.extend(values)
            return values

        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, desc="train",
                   unit="step", dynamic_ncols=True, mininterval=0.5)
        interval_start = start = last_save = time.perf_counter()
        stopped: int | None = None
        with StopSignals() as stop:
            try:
                while self.step < last and stopped is None and (world.distributed or stop.received is None):
                    step = self.step + 1
                    lr = learning_rate(step, cfg)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    step_loss = None
                    for accumulated in range(cfg.grad_accum):
                        index = world.rank * cfg.grad_accum + accumulated
                        x0, noise, offsets = self.micro_batch(step, index)
                        with self.parallel.accumulating(last=accumulated == cfg.grad_accum - 1):
                            with pipeline.autocast(), ddkit.global_batch_slice(index, self.micro_batches, offsets):
                                loss = self.parallel.call(x0, noise)
                            loss = loss if cfg.grad_accum == 1 else loss / cfg.grad_accum
                            loss.backward()
                        step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
                    grad_norm = (grad_norm_value(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip))
                                 if cfg.grad_clip is not None else None)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.ema is not None:
                        self.ema.update(self.model)
                    self.step = step
                    pending.append(step_loss)
                    bar.update(1)
                    if self.on_step is not None:
                        self.on_step(step)
                    due_by_time = bool(cfg.checkpoint_interval_s) and \
                        time.perf_counter() - last_save >= cfg.checkpoint_interval_s
                    # every process stops at the same step and checkpoints together (rank 0's clock)
                    signal_number, due_by_time = world.agree([stop.received or 0, int(due_by_time and world.is_main)])
                    stopped = signal_number or None
                    if step % cfg.log_every == 0 or step == last:
                        sync()
                        now = time.perf_counter()
                        mean = sum(interval) / len(interval)
                        speed = len(interval) * tokens_per_step / max(now - interval_start, 1e-9)
                        record = {"step": step, "split": "train", "loss": mean, "bits_per_token": mean / math.log(2),
                                  "lr": lr, "tokens_per_s": speed, "elapsed_s": now - start}
                        if grad_norm is not None:
                            record["grad_norm"] = float(grad_norm)
                            self._check_finite(record["grad_norm"], step, "gradient norm")
                        extra = getattr(pipeline.loss, "metrics", None)  # e.g. a learnable schedule's exponents
                        if callable(extra):
                            record.update(extra())
                        if world.is_main:
                            self.metrics.write(record)
                        bar.set_postfix(loss=f"{mean:.3f}", bpt=f"{mean / math.log(2):.3f}",
                                        tok_s=f"{speed:,.0f}", refresh=False)
                        interval.clear()
                        interval_start = now
                    if cfg.eval_every and step % cfg.eval_every == 0 and step != last:
                        sync()
                        self._log_validation(step)
                    due = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or due_by_time
                    if due and step != last:
                        sync()
                        self.save()
                        last_save = time.perf_counter()
            except KeyboardInterrupt:
                bar.close()
                if world.distributed:  # the other processes may wait in a collective: save nothing here
                    raise
                sync()
                if self.step > (self.last_checkpoint_step or 0):
                    # an unfinished step is repeated on resume: its randomness is keyed by its number
                    self.save()
                raise
            finally:
                bar.close()
            sync()
            if self.step < last:  # stopped by a signal
                if self.step > (self.last_checkpoint_step or 0):
                    self.save()
                raise self._interrupted(stopped, finished=False)
            result.seconds = time.perf_counter() - start
            result.tokens_per_second = len(result.losses) * tokens_per_step / max(result.seconds, 1e-9)
            result.validation = self._log_validation(self.step)
            result.checkpoint = self.save()
            stopped = world.agree([stop.received or 0])[0] or None
        if stopped is not None:
            raise self._interrupted(stopped, finished=True)
        result.step = self.step
        if world.is_main:
            plot_metrics(self.metrics.read(), self.run_dir / "training_curve.png",
                         title=f"{pipeline.config.name}: {type(self.model).__name__} on "
                               f"{pipeline.config.data.dataset['name']}")
        return result

    def _interrupted(self, number: int, *, finished: bool) -> TrainingInterrupted:
        name = signal.Signals(number).name
        state = "training had finished" if finished else "stopped"
        return TrainingInterrupted(f"{name}: {state} at step {self.step} of {self.cfg.steps}; the checkpoint "
                                   f"{self.checkpoint_path} holds step {self.last_checkpoint_step} "
                                   f"(continue with --resume)", number)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files of this run's own files (:data:`RUN_FILES`), left by a
        process killed while saving; one run directory has one trainer at a time, so none of
        them is a save in progress. Returns the paths removed."""
        stale = [tmp for name in RUN_FILES for tmp in temporaries(self.run_dir / name)]
        for tmp in stale:
            tmp.unlink(missing_ok=True)
        return stale

    def _log_validation(self, step: int) -> dict[str, float]:
        """Validate and log at ``step``, unless the log already holds that step's validation
        (a finished run that is resumed): the value is the same, and is not written twice.
        Rank 0's log decides for every process."""
        logged = self.world.from_main(self.metrics.record(step, "validation") if self.world.is_main else None)
        if logged is not None:
            return {key: value for key, value in logged.items() if key not in ("step", "split")}
        values = self.validate()
        self._check_finite(values["loss"], step, "validation loss")
        if self.world.is_main:
            self.metrics.write({"step": step, "split": "validation", **values})
        return values


def train_pipeline(pipeline: Pipeline, run_dir: Path | str, *, resume: bool = False,
                   progress: bool | None = None, stop_at: int | None = None,
                   on_step: Callable[[int], None] | None = None,
                   world: World | None = None) -> tuple[Trainer, TrainResult]:
    """Train (or resume) a pipeline in ``run_dir`` (on every process of ``world``)."""
    trainer = Trainer(pipeline, run_dir, progress=progress, on_step=on_step, world=world)
    if resume:
        trainer.resume()
    return trainer, trainer.fit(stop_at=stop_at)


def summarize(result: TrainResult) -> dict[str, Any]:
    return {"step": result.step, "seconds": result.seconds, "tokens_per_s": result.tokens_per_second,
            "validation": result.validation}
