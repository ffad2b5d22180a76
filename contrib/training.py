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
which saves the last completed step). Random state (window sampling, loss noise, the global
torch generator used by dropout) is saved with every checkpoint, so a resumed run on CPU
repeats the uninterrupted run's losses exactly.
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

from ddkit import DDKitError, NumericalError
from ddkit.config import to_yaml

from .checkpoint import (CHECKPOINT_NAME, CheckpointError, atomic_write_text, load_checkpoint, optimizer_state,
                         save_checkpoint, temporaries)
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
    if all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params):
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
    ``training_curve.png`` and ``checkpoint.safetensors`` into ``run_dir``."""

    def __init__(self, pipeline: Pipeline, run_dir: Path | str, *, progress: bool | None = None,
                 on_step: Callable[[int], None] | None = None):
        self.pipeline = pipeline
        self.cfg = pipeline.config.train
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.progress = self.cfg.progress if progress is None else progress
        self.on_step = on_step
        device = pipeline.device
        seed = pipeline.config.seed
        self.model = pipeline.model
        self.params = list(dict.fromkeys([*self.model.parameters(), *pipeline.loss.parameters()]))
        self.optimizer = make_optimizer(self.params, self.cfg)
        self.ema = EMA(self.model, self.cfg.ema_decay) if self.cfg.ema_decay > 0 else None
        self.data_generator = torch.Generator().manual_seed(seed + 1)
        self.loss_generator = torch.Generator(device=device).manual_seed(seed + 2)
        self.step = 0
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        self.last_checkpoint_step: int | None = None
        self.denoiser = lambda x_t, t: self.model(x_t, t)

    # -- state ---------------------------------------------------------------------------

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def rng_state(self) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state(), "data": self.data_generator.get_state(),
                 "loss": self.loss_generator.get_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                state[f"cuda.{i}"] = s
        return state

    def save(self, rng: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the checkpoint (atomically) with the current random state, or ``rng``."""
        config = self.pipeline.resolved_config()
        path = save_checkpoint(self.checkpoint_path, step=self.step, config=config, model=self.model,
                               ema=self.ema.module if self.ema else None, loss=self.pipeline.loss,
                               optimizer=self.optimizer, rng=rng if rng is not None else self.rng_state(),
                               extra={"ema_updates": self.ema.updates if self.ema else 0})
        self.last_checkpoint_step = self.step
        return path

    def resume(self, path: Path | str | None = None) -> int:
        """Restore everything from a checkpoint (default: the run directory's)."""
        ckpt = load_checkpoint(path or self.checkpoint_path)
        current = self.pipeline.resolved_config()
        changed = [key for key in FROZEN_SECTIONS if ckpt.config.get(key) != current.get(key)]
        if changed:
            raise CheckpointError(
                f"cannot resume {ckpt.path}: the config's {', '.join(changed)} section(s) differ from "
                f"the checkpoint's (only train, eval, sampler, sample and output may change)")
        self.model.load_state_dict(ckpt.group("model"))
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt.group("ema") or ckpt.group("model"))
            self.ema.updates = int(ckpt.meta.get("ema_updates", ckpt.step))
        loss_state = ckpt.group("loss")
        if loss_state:
            self.pipeline.loss.load_state_dict(loss_state)
        if "optimizer" in ckpt.meta:
            self.optimizer.load_state_dict(optimizer_state(ckpt.tensors, ckpt.meta["optimizer"]))
            for group in self.optimizer.param_groups:  # the new config's optimizer settings win
                group["betas"], group["weight_decay"] = self.cfg.betas, self.cfg.weight_decay
        rng = ckpt.group("rng")
        torch.set_rng_state(rng["torch"])
        self.data_generator.set_state(rng["data"])
        self.loss_generator.set_state(rng["loss"])
        if torch.cuda.is_available():
            states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda."))]
            if states:
                torch.cuda.set_rng_state_all(states)
        self.step = self.last_checkpoint_step = ckpt.step
        self.metrics.truncate_after(ckpt.step)
        return ckpt.step

    # -- loop ----------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean NELBO on the first ``eval_batches * batch_size`` validation chunks, with the
        EMA weights and a fixed noise seed (so the curve is comparable across steps)."""
        model = self.eval_model
        was_training = model.training
        model.eval()
        chunks = self.pipeline.data["validation"].chunks(self.pipeline.config.data.seq_len)
        chunks = chunks[: self.cfg.eval_batches * self.cfg.batch_size].to(self.pipeline.device)
        generator = torch.Generator(device=self.pipeline.device).manual_seed(self.pipeline.config.seed + 3)
        loss = self.pipeline.loss.evaluation()  # a bound even when training on a clipped objective
        total = 0.0
        batches = list(chunks.split(self.cfg.batch_size))
        for batch in batches:
            with self.pipeline.autocast():
                out = loss(model, batch, generator=generator)
            total += float(out.nats.sum())
        with self.pipeline.autocast():
            adapted = self.pipeline.loss.after_validation(model, batches, seed=self.pipeline.config.seed + 4)
        model.train(was_training)
        nats = total / chunks.numel()
        return {"loss": nats, "bits_per_token": nats / math.log(2), **adapted}

    def _check_finite(self, value: float, step: int, what: str = "loss") -> None:
        if not math.isfinite(value):
            where = (f"the last good checkpoint is {self.checkpoint_path} (step {self.last_checkpoint_step})"
                     if self.last_checkpoint_step is not None else "no checkpoint was written before it")
            raise TrainingDiverged(f"the {what} is {value} at step {step}; training stopped and {where}. "
                                   f"Try a lower train.lr, more train.warmup_steps or train.grad_clip.")

    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train from the current step to ``train.steps`` (or ``stop_at``), then save.

        Losses stay on the device until a sync point (a metrics line, validation, a
        checkpoint, the end), so a GPU is never stalled; every loss is checked before
        anything is saved, and a non-finite one is reported with its own step.
        ``on_step(step)`` is called after each optimizer step."""
        cfg, pipeline = self.cfg, self.pipeline
        self.remove_stale_temporaries()
        atomic_write_text(self.run_dir / "config.yaml", to_yaml(pipeline.resolved_config()))
        last = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        train = pipeline.data["train"]
        seq_len, device = pipeline.config.data.seq_len, pipeline.device
        tokens_per_step = cfg.batch_size * seq_len * cfg.grad_accum
        self.model.train()
        result = TrainResult(step=self.step)
        pending: list[torch.Tensor] = []  # losses of the steps since the last sync point
        interval: list[float] = []

        def sync() -> list[float]:
            if not pending:
                return []
            values = torch.stack(pending).tolist()
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
        step_start_rng, in_step = None, False
        with StopSignals() as stop:
            try:
                while self.step < last and stop.received is None:
                    step = self.step + 1
                    step_start_rng, in_step = self.rng_state(), True
                    lr = learning_rate(step, cfg)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    step_loss = None
                    for _ in range(cfg.grad_accum):
                        x0 = train.windows(cfg.batch_size, seq_len, self.data_generator).to(device, non_blocking=True)
                        with pipeline.autocast():
                            out = pipeline.loss(self.denoiser, x0, generator=self.loss_generator)
                        loss = out.loss if cfg.grad_accum == 1 else out.loss / cfg.grad_accum
                        loss.backward()
                        step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
                    grad_norm = (torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                                 if cfg.grad_clip is not None else None)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.ema is not None:
                        self.ema.update(self.model)
                    self.step, in_step = step, False
                    pending.append(step_loss)
                    bar.update(1)
                    if self.on_step is not None:
                        self.on_step(step)
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
                        self.metrics.write(record)
                        bar.set_postfix(loss=f"{mean:.3f}", bpt=f"{mean / math.log(2):.3f}",
                                        tok_s=f"{speed:,.0f}", refresh=False)
                        interval.clear()
                        interval_start = now
                    if cfg.eval_every and step % cfg.eval_every == 0 and step != last:
                        sync()
                        self._log_validation(step)
                    due = ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
                           or (cfg.checkpoint_interval_s and time.perf_counter() - last_save >= cfg.checkpoint_interval_s))
                    if due and step != last:
                        sync()
                        self.save()
                        last_save = time.perf_counter()
            except KeyboardInterrupt:
                bar.close()
                sync()
                if self.step > (self.last_checkpoint_step or 0):
                    # an unfinished step is repeated on resume, with the random state it started from
                    self.save(rng=step_start_rng if in_step else None)
                raise
            finally:
                bar.close()
            sync()
            if self.step < last:  # stopped by a signal
                if self.step > (self.last_checkpoint_step or 0):
                    self.save()
                raise self._interrupted(stop.received, finished=False)
            result.seconds = time.perf_counter() - start
            result.tokens_per_second = len(result.losses) * tokens_per_step / max(result.seconds, 1e-9)
            result.validation = self._log_validation(self.step)
            result.checkpoint = self.save()
        if stop.received is not None:
            raise self._interrupted(stop.received, finished=True)
        result.step = self.step
        plot_metrics(self.metrics.read(), self.run_dir / "training_curve.png",
                     title=f"{pipeline.config.name}: {type(self.model).__name__} on {pipeline.config.data.dataset['name']}")
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
        (a finished run that is resumed): the value is the same, and is not written twice."""
        logged = self.metrics.record(step, "validation")
        if logged is not None:
            return {key: value for key, value in logged.items() if key not in ("step", "split")}
        values = self.validate()
        self._check_finite(values["loss"], step, "validation loss")
        self.metrics.write({"step": step, "split": "validation", **values})
        return values


def train_pipeline(pipeline: Pipeline, run_dir: Path | str, *, resume: bool = False,
                   progress: bool | None = None, stop_at: int | None = None,
                   on_step: Callable[[int], None] | None = None) -> tuple[Trainer, TrainResult]:
    """Train (or resume) a pipeline in ``run_dir``."""
    trainer = Trainer(pipeline, run_dir, progress=progress, on_step=on_step)
    if resume:
        trainer.resume()
    return trainer, trainer.fit(stop_at=stop_at)


def summarize(result: TrainResult) -> dict[str, Any]:
    return {"step": result.step, "seconds": result.seconds, "tokens_per_s": result.tokens_per_second,
            "validation": result.validation}
