"""The main job and its parts: train -> evaluate -> sample -> run directory.

A run directory holds::

    config.yaml              the fully resolved pipeline config
    metrics.jsonl            training and validation metrics, one JSON object per line
    training_curve.png       bits per token against the step
    checkpoint.safetensors   weights, EMA weights, optimizer and RNG state, resolved config
    eval.json                the ELBO bound on the evaluation split
    samples.txt / .json      decoded samples (the JSON adds the config, NFE, timing, token ids)
    trajectory.txt           the first sample filling in, step by step
    report.md                a short summary of all of the above
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ddkit
from ddkit.config import ConfigError, apply_overrides, parse_override, to_yaml
from ddkit.registry import split_spec

from .checkpoint import CHECKPOINT_NAME, Checkpoint, atomic_write_text, load_checkpoint, temporaries
from .distributed import World
from .evaluate import estimate_elbo, left_to_right_nll
from .pipeline import AutocastDenoiser, Pipeline, evaluation_rows, logits_problem
from .pipeline_config import PipelineConfig, load_resolved
from .sampling import Samples, draw_samples
from .training import TrainResult, train_pipeline


def output_dir_problem(path: str | Path) -> str | None:
    """Why no run directory can be written at ``path`` (``None``: one can): it, or a folder
    above it, is a file, or the nearest existing folder is not writable."""
    path = Path(path)
    for existing in (path, *path.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            return f"{existing} is a file, not a directory" + ("" if existing == path else f", so {path} cannot be made")
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{existing} is not writable" + ("" if existing == path else f", so {path} cannot be made")
        return None
    return None


def run_dir_of(config: PipelineConfig, out: str | None = None) -> tuple[Path, str]:
    """``(run directory before any suffix, where it was set)``: ``out`` (``--out``), else
    ``output.dir``, else ``runs/<name>``."""
    if out:
        return Path(out), "--out"
    if config.output.dir:
        return Path(config.output.dir), "output.dir"
    return Path(f"runs/{config.name}"), "output.dir (default runs/<name>)"


def choose_run_dir(config: PipelineConfig, out: str | None = None, *, resume: bool = False) -> tuple[Path, str | None]:
    """The run directory: ``out``, else ``output.dir``, else ``runs/<name>``. A fresh run
    never mixes with an existing one: a non-empty directory gets a ``-2``, ``-3``, ...
    suffix (with a note); ``resume`` needs the directory's checkpoint. A directory that cannot
    be written (:func:`output_dir_problem`) is a :class:`ConfigError`, before anything runs."""
    base, where = run_dir_of(config, out)
    problem = output_dir_problem(base)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")
    if resume:
        if not (base / CHECKPOINT_NAME).is_file():
            raise ConfigError(f"--resume: no checkpoint in {base} (give the run directory with --out or output.dir)")
        return base, None
    if not base.exists() or not any(base.iterdir()):
        return base, None
    n = 2
    while Path(f"{base}-{n}").exists():
        n += 1
    chosen = Path(f"{base}-{n}")
    return chosen, f"{base} exists; writing this run to {chosen}"


def checkpoint_config(ckpt: Checkpoint, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """The checkpoint's resolved config, validated (:func:`load_resolved`); its problems are
    reported as those of the config stored in the checkpoint."""
    try:
        return load_resolved(ckpt.config, overrides)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=f"the config stored in {ckpt.path}") from None


def load_run(source: str | Path, *, load_data: bool = False, device: str | None = None,
             overrides: list[str] | tuple[str, ...] = ()) -> tuple[Pipeline, Checkpoint]:
    """Rebuild a pipeline from a run directory or a checkpoint file, with the checkpoint's
    weights (EMA if present) in ``pipeline.model``. Tensors that do not fit the network the
    checkpoint's config builds are a :class:`~ddkit.contrib.checkpoint.CheckpointError`."""
    ckpt = load_checkpoint(source)
    config = checkpoint_config(ckpt, overrides)
    pipeline = Pipeline.build(config, load_data=load_data, device=device, check_sample=False)
    ema = bool(ckpt.group("ema"))
    ckpt.load_into(pipeline.model, ckpt.weights(prefer_ema=True), what="ema" if ema else "model")
    loss_state = ckpt.group("loss")
    if loss_state:
        ckpt.load_into(pipeline.loss, loss_state, what="loss")
    pipeline.model.eval()
    return pipeline, ckpt


def make_sampler(pipeline: Pipeline, name: str | None = None, params: list[str] | tuple[str, ...] = ()) -> tuple[ddkit.Sampler, dict]:
    """The pipeline's sampler, or sampler ``name``, with ``key.path=value`` parameter overrides
    (``-p``), built and checked like a pipeline's sampler (:meth:`Pipeline.make_sampler`).
    Every ``-p`` that cannot be read is reported, one line each, before the sampler is built."""
    base_name, base_params = split_spec(pipeline.config.sampler)
    spec = {"name": base_name, **base_params} if name in (None, base_name) else {"name": name}
    problems = []
    for text in params:
        try:
            parse_override(text)
        except ConfigError as exc:
            problems.append(f"-p {exc.problems[0].removeprefix('override ')}")
    if problems:
        raise ConfigError(problems)
    spec = apply_overrides(spec, params)
    return pipeline.make_sampler(spec, where="sampler"), spec


def evaluate_pipeline(pipeline: Pipeline, *, split: str | None = None, time_samples: int | None = None,
                      time_sampling: str | None = None, discrete_steps: int | None = None,
                      left_to_right: bool | None = None, max_sequences: int | None = None, batch_size: int | None = None,
                      seed: int | None = None, world: World | None = None) -> dict[str, Any]:
    """The ELBO bound of ``pipeline.model`` on a split (defaults from the ``eval`` section);
    the processes of ``world`` share the batches out (each holds the whole model)."""
    cfg = pipeline.config.eval
    split = split or cfg.split
    time_samples = time_samples or cfg.time_samples
    time_sampling = time_sampling or cfg.time_sampling
    discrete_steps = discrete_steps if discrete_steps is not None else cfg.discrete_steps
    left_to_right = cfg.left_to_right if left_to_right is None else left_to_right
    max_sequences = max_sequences if max_sequences is not None else cfg.max_sequences
    batch_size = batch_size or cfg.batch_size
    seed = pipeline.config.seed if seed is None else seed
    try:
        chunks = pipeline.data[split].chunks(pipeline.config.data.seq_len)
    except KeyError as exc:
        raise ConfigError(f"eval.split: {exc.args[0]}") from None
    if max_sequences is not None:
        chunks = chunks[:max_sequences]
    if chunks.shape[0] == 0:
        raise ConfigError(f"eval.split: the {split} split has no complete chunk of data.seq_len tokens")
    problem = logits_problem("eval.batch_size (--batch-size, --time-samples)",
                             evaluation_rows(batch_size, time_samples, chunks.shape[0]), chunks.shape[1],
                             pipeline.vocab_size, pipeline.device)
    if problem is not None:
        raise ConfigError(problem)
    model = pipeline.model
    was_training = model.training
    model.eval()
    denoiser = AutocastDenoiser(model, pipeline)
    device = pipeline.device
    start = time.perf_counter()
    out: dict[str, Any] = {"split": split, "time_sampling": time_sampling}
    loss = pipeline.eval_loss(time_sampling=time_sampling)
    estimate = estimate_elbo(denoiser, loss, chunks, time_samples=time_samples, batch_size=batch_size,
                             seed=seed + 4, device=device, world=world)
    if getattr(loss, "autoregressive", False):
        estimate.bound = EXACT_AR
    out["continuous"] = estimate.to_json()
    if discrete_steps is not None:
        discrete = estimate_elbo(denoiser, pipeline.eval_loss(time_sampling=time_sampling, discrete_steps=discrete_steps),
                                 chunks, time_samples=time_samples, batch_size=batch_size, seed=seed + 5,
                                 device=device, world=world)
        out["discrete"] = {"steps": discrete_steps, **discrete.to_json()}
    if left_to_right:
        try:
            ordered = left_to_right_nll(denoiser, pipeline.process, pipeline.parameterization, chunks,
                                        batch_size=batch_size, device=device)
        except ValueError as exc:
            raise ConfigError(f"eval.left_to_right: {exc}") from None
        out["left_to_right"] = ordered.to_json()
    model.train(was_training)
    info = pipeline.data.info if pipeline.data is not None else {}
    if "exact_entropy_nats_per_token" in info:
        out["exact_entropy"] = {"nats_per_token": info["exact_entropy_nats_per_token"],
                                "bits_per_token": info["exact_entropy_bits_per_token"],
                                "note": "exact entropy of the data per token: the lowest value the bound can reach"}
    out["seconds"] = time.perf_counter() - start
    return out


#: ``bound`` of an evaluation whose loss is the autoregressive cross-entropy
EXACT_AR = "exact negative log-likelihood (autoregressive: every token masked, weight 1)"

#: the files :func:`run_pipeline` writes besides the trainer's
REPORT_FILES = ("eval.json", "samples.txt", "samples.json", "trajectory.txt", "report.md")


def write_json(path: Path, value: Any) -> None:
    """A JSON report, atomically; NaN and infinity are refused (they are not JSON)."""
    atomic_write_text(path, json.dumps(value, indent=1, ensure_ascii=False, allow_nan=False))


def _number(value: float | None, spec: str) -> str:
    """``value`` formatted, or ``n/a`` for a value that does not exist (``None`` in the JSON)."""
    return "n/a" if value is None else format(value, spec)


def format_eval(result: dict[str, Any]) -> str:
    c = result["continuous"]
    exact = c["bound"] == EXACT_AR
    lines = [f"{'NLL' if exact else 'ELBO'} on {result['split']} ({c['sequences']} sequences x "
             f"{c['tokens_per_sequence']} tokens, {c['time_samples']} time samples each):",
             f"  {'exact (autoregressive)' if exact else 'continuous time'}: {c['nats_per_token']:.4f} ± "
             f"{_number(c['standard_error'], '.4f')} nats/token = "
             f"{c['bits_per_token']:.4f} ± {_number(c['bits_standard_error'], '.4f')} bits/token, "
             f"perplexity {'=' if exact else '≤'} {_number(c['perplexity'], '.3f')}"]
    if "discrete" in result:
        d = result["discrete"]
        lines.append(f"  discrete time (T={d['steps']}): {d['nats_per_token']:.4f} ± {_number(d['standard_error'], '.4f')} "
                     f"nats/token = {d['bits_per_token']:.4f} bits/token")
    if "left_to_right" in result:
        o = result["left_to_right"]
        lines.append(f"  decoded left to right (exact NLL of that sampler): {o['nats_per_token']:.4f} ± "
                     f"{_number(o['standard_error'], '.4f')} nats/token = {o['bits_per_token']:.4f} bits/token")
    if "exact_entropy" in result:
        e = result["exact_entropy"]
        lines.append(f"  exact data entropy: {e['nats_per_token']:.4f} nats/token = {e['bits_per_token']:.4f} bits/token")
    if not exact:
        lines.append("  (the ELBO lines are upper bounds on the negative log-likelihood per token)")
    return "\n".join(lines)


def sample_pipeline(pipeline: Pipeline, *, sampler: ddkit.Sampler | None = None, sampler_spec: dict | None = None,
                    num_samples: int | None = None, length: int | None = None, prompt: str | None = None,
                    infill: str | None = None, blank: str | None = None, seed: int | None = None,
                    show: bool | None = None) -> Samples:
    """Draw samples from ``pipeline.model`` (defaults from the ``sample`` section)."""
    cfg = pipeline.config.sample
    sampler = sampler or pipeline.sampler
    if prompt is None and infill is None:
        prompt, infill = cfg.prompt, cfg.infill
    if infill is None and length is None:
        length = cfg.length or pipeline.config.data.seq_len
    max_len = getattr(pipeline.model, "max_seq_len", None)
    want = len(infill) if infill is not None else length
    if max_len is not None and want > max_len and getattr(sampler, "context", None) is None:
        raise ConfigError(f"sample.length: {want} is above model.max_seq_len={max_len} (a sampler with a context "
                          f"window, e.g. semi_ar's context, can generate longer sequences)")
    problem = logits_problem("sample.num_samples (-n)", num_samples or cfg.num_samples, want, pipeline.vocab_size,
                             pipeline.device)
    if problem is not None:
        raise ConfigError(problem)
    model = pipeline.model
    model.eval()
    try:
        samples = draw_samples(AutocastDenoiser(model, pipeline), pipeline.process, sampler, pipeline.tokenizer,
                               num_samples=num_samples or cfg.num_samples, length=length, prompt=prompt,
                               infill=infill, blank=blank or cfg.blank, seed=cfg.seed if seed is None else seed,
                               show=cfg.show if show is None else show, device=pipeline.device,
                               parameterization=pipeline.parameterization_for(sampler))
    except ddkit.NumericalError:
        raise  # the model's output, not the sampling options
    except ValueError as exc:
        raise ConfigError(f"sample: {exc}") from None
    samples.info["sampler"] = sampler_spec or pipeline.config.sampler
    return samples


SEPARATOR = "\n" + "─" * 72 + "\n"


def write_samples(samples: Samples, path: Path, config: dict[str, Any]) -> tuple[Path, Path]:
    """``path`` (text, samples separated by a rule) and ``path.json`` (with the config)."""
    path = Path(path)
    atomic_write_text(path, SEPARATOR.join(samples.texts) + "\n")
    json_path = path.with_suffix(".json")
    write_json(json_path, {**samples.to_json(), "config": config})
    return path, json_path


def format_samples(samples: Samples) -> str:
    lines = [f"compiling kernels (first run only): {samples.compile_seconds:.1f} s"] if samples.compile_seconds else []
    lines.append(f"{len(samples.texts)} samples, NFE {samples.nfe}, {samples.steps} steps, "
                 f"{samples.seconds:.2f} s, {samples.tokens_per_second:,.0f} tokens/s")
    for i, text in enumerate(samples.texts):
        lines.append(f"[{i}] {text}")
    return "\n".join(lines)


def word_check(texts: list[str], reference: str) -> dict[str, Any] | None:
    """Share of the alphabetic words (2+ letters) in ``texts`` that occur in ``reference``."""
    words = [w for text in texts for w in re.findall(r"[A-Za-z]{2,}", text)]
    if not words:
        return None
    known = set(re.findall(r"[A-Za-z]{2,}", reference))
    hits = sum(w in known for w in words)
    return {"words": len(words), "known": hits, "fraction": hits / len(words)}


def reference_text(pipeline: Pipeline, limit: int = 5_000_000) -> str | None:
    """Decoded training text (at most ``limit`` tokens) of a text data set, for :func:`word_check`."""
    if pipeline.data is None or not pipeline.data.info.get("text"):
        return None
    stream = pipeline.data["train"].tokens
    return pipeline.tokenizer.decode(stream[:limit]) if stream.dim() == 1 else None


def write_report(run_dir: Path, pipeline: Pipeline, *, train: TrainResult | None, evaluation: dict[str, Any],
                 samples: Samples, timings: dict[str, float], words: dict[str, Any] | None) -> Path:
    cfg = pipeline.config
    params = sum(p.numel() for p in pipeline.model.parameters())
    c = evaluation["continuous"]
    lines = [f"# ddkit run: {cfg.name}", "",
             f"- data: `{json.dumps(cfg.data.dataset)}`, tokenizer `{cfg.data.tokenizer['name']}` "
             f"(V = {pipeline.vocab_size}), sequences of {cfg.data.seq_len} tokens",
             f"- model: `{split_spec(cfg.model)[0]}` with {params:,} parameters; process "
             f"`{json.dumps(cfg.process)}`; loss `{split_spec(cfg.loss)[0]}`",
             f"- device: {pipeline.device}; wall time: "
             + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), ""]
    if train is not None:
        lines += ["## Training", "",
                  f"{train.step} steps, {train.tokens_per_second:,.0f} tokens/s; final validation "
                  f"(EMA, {cfg.train.eval_batches} batches): {train.validation['bits_per_token']:.4f} bits/token.",
                  "", "![training curve](training_curve.png)", ""]
    lines += ["## Evaluation", "", f"Split `{evaluation['split']}`, {c['sequences']} sequences of "
              f"{c['tokens_per_sequence']} tokens, {c['time_samples']} time samples each "
              f"({evaluation['time_sampling']}). "
              + ("The exact negative log-likelihood:" if c["bound"] == EXACT_AR
                 else "Upper bounds on the negative log-likelihood:"), "",
              "| estimate | nats/token | bits/token | perplexity |", "|---|---|---|---|",
              f"| {'exact NLL (autoregressive)' if c['bound'] == EXACT_AR else 'continuous-time NELBO'} | "
              f"{c['nats_per_token']:.4f} ± {_number(c['standard_error'], '.4f')} | "
              f"{c['bits_per_token']:.4f} ± {_number(c['bits_standard_error'], '.4f')} | "
              f"{_number(c['perplexity'], '.3f')} |"]
    if "discrete" in evaluation:
        d = evaluation["discrete"]
        lines.append(f"| discrete-time NELBO, T = {d['steps']} | {d['nats_per_token']:.4f} ± "
                     f"{_number(d['standard_error'], '.4f')} | {d['bits_per_token']:.4f} ± "
                     f"{_number(d['bits_standard_error'], '.4f')} | {_number(d['perplexity'], '.3f')} |")
    if "left_to_right" in evaluation:
        o = evaluation["left_to_right"]
        lines.append(f"| exact NLL decoded left to right | {o['nats_per_token']:.4f} ± "
                     f"{_number(o['standard_error'], '.4f')} | {o['bits_per_token']:.4f} ± "
                     f"{_number(o['bits_standard_error'], '.4f')} | {math.exp(o['nats_per_token']):.3f} |")
    if "exact_entropy" in evaluation:
        e = evaluation["exact_entropy"]
        lines.append(f"| exact data entropy | {e['nats_per_token']:.4f} | {e['bits_per_token']:.4f} | "
                     f"{math.exp(e['nats_per_token']):.3f} |")
    lines += ["", "## Samples", "",
              f"Sampler `{json.dumps(samples.info.get('sampler'))}`: {len(samples.texts)} samples of "
              f"{samples.info.get('length')} tokens, NFE {samples.nfe}, {samples.seconds:.2f} s "
              f"({samples.tokens_per_second:,.0f} tokens/s)"
              + (f", after {samples.compile_seconds:.1f} s compiling kernels (first run only)."
                 if samples.compile_seconds else ".")]
    if words is not None:
        lines.append(f"{words['known']} of {words['words']} words ({100 * words['fraction']:.0f}%) "
                     f"in the samples occur in the training text.")
    lines += [""] + [f"```\n{text}\n```" for text in samples.texts[:4]]
    if samples.trajectory:
        lines += ["", "## Denoising trajectory (first sample; █ = mask)", "", "```", samples.trajectory, "```"]
    lines += ["", "Files: config.yaml, metrics.jsonl, training_curve.png, checkpoint.safetensors, eval.json, "
              "samples.txt, samples.json, trajectory.txt."]
    path = Path(run_dir) / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


@dataclass
class RunResult:
    run_dir: Path
    train: TrainResult
    evaluation: dict[str, Any]
    samples: Samples
    timings: dict[str, float] = field(default_factory=dict)
    words: dict[str, Any] | None = None


def run_pipeline(config: PipelineConfig, run_dir: Path, *, resume: bool = False, progress: bool | None = None,
                 device: str | None = None, log=print, world: World | None = None) -> RunResult | None:
    """Train, evaluate with the EMA weights, sample, and write the run directory. Every
    process of ``world`` trains and evaluates; rank 0 alone samples, writes the reports and
    returns the result (the others return ``None``)."""
    world = world if world is not None else World()
    log = log if world.is_main else (lambda *args, **kwargs: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    pipeline = Pipeline.build(config, device=device)
    timings["setup"] = time.perf_counter() - start
    run_dir = Path(run_dir)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in (tmp for name in REPORT_FILES for tmp in temporaries(run_dir / name)):  # left by a kill
            stale.unlink(missing_ok=True)
    log(f"run directory: {run_dir}" + (f" ({world.size} processes, {world.backend})" if world.distributed else ""))
    start = time.perf_counter()
    trainer, train = train_pipeline(pipeline, run_dir, resume=resume, progress=progress, world=world)
    timings["train"] = time.perf_counter() - start
    log(f"trained {train.step} steps in {train.seconds:.1f} s ({train.tokens_per_second:,.0f} tokens/s); "
        f"validation {train.validation['bits_per_token']:.4f} bits/token")
    pipeline.model = trainer.inference_model()
    start = time.perf_counter()
    evaluation = evaluate_pipeline(pipeline, world=world)
    if not world.is_main:
        return None
    evaluation["checkpoint_step"] = train.step
    write_json(run_dir / "eval.json", evaluation)
    timings["eval"] = time.perf_counter() - start
    log(format_eval(evaluation))
    start = time.perf_counter()
    samples = sample_pipeline(pipeline)
    write_samples(samples, run_dir / "samples.txt", pipeline.resolved_config())
    if samples.trajectory:
        atomic_write_text(run_dir / "trajectory.txt", samples.trajectory + "\n")
    timings["sample"] = time.perf_counter() - start
    reference = reference_text(pipeline)
    words = word_check(samples.texts, reference) if reference else None
    write_report(run_dir, pipeline, train=train, evaluation=evaluation, samples=samples, timings=timings, words=words)
    log(format_samples(samples))
    if samples.trajectory:
        log("denoising trajectory of sample 0 (█ = mask):\n" + samples.trajectory)
    if words is not None:
        log(f"{100 * words['fraction']:.0f}% of the {words['words']} words in the samples occur in the training text")
    log(f"report: {run_dir / 'report.md'}")
    return RunResult(run_dir, train, evaluation, samples, timings, words)


def config_text(config: dict[str, Any], as_json: bool = False) -> str:
    return json.dumps(config, indent=2, ensure_ascii=False) if as_json else to_yaml(config)
