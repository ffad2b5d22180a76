"""Command-line commands of the pipeline: ``run``, ``train``, ``eval``, ``sample`` and
``config validate|show|schema``, added to ``ddkit`` through the ``register_commands`` hook.

Arguments after the pipeline file are ``key.path=value`` overrides::

    ddkit run pipelines/quickstart.yaml train.steps=500 model.width=128
    ddkit sample --run runs/quickstart --sampler first_hitting -p temperature=0.8 --show
"""

from __future__ import annotations

import errno
import functools
import json
import sys
from pathlib import Path

import click

import ddkit
from ddkit.config import ConfigError

from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .memory import out_of_memory
from .pipeline import Pipeline, device_problem, too_large
from .pipeline_config import SEED_MAX, known_vocab_size, load_pipeline, pipeline_json_schema
from .training import TrainingInterrupted


#: what to do about a file system error, by errno
_FILE_SYSTEM_HINTS = {errno.ENOSPC: "free some space or write elsewhere (--out)",
                      errno.EROFS: "write to a writable directory (--out)",
                      errno.EACCES: "write to a writable directory (--out)",
                      errno.EPERM: "write to a writable directory (--out)"}


def _file_system_error(exc: OSError) -> str:
    """One line: what the file system refused, the path, and what to do."""
    what = exc.strerror or str(exc) or type(exc).__name__
    path = f": {exc.filename}" if exc.filename else ""
    hint = _FILE_SYSTEM_HINTS.get(exc.errno)
    return f"file system: {what}{path}" + (f"; {hint}" if hint else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _friendly(command):
    """Turn ddkit's own errors into a clean message and exit status 1 (2 for config errors,
    3 for numerical failures such as NaN logits or a denoiser output of the wrong shape, 2 as
    well for a request that does not fit the memory or a number too large to compute with,
    4 when the file system refuses a read or write, e.g. a full disk or a read-only folder;
    128 + the signal number when training stopped on SIGTERM or SIGINT after a checkpoint)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TrainingInterrupted as exc:
            click.echo(str(exc), err=True)
            sys.exit(128 + exc.signal_number)
        except ConfigError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except ddkit.NumericalError as exc:
            click.echo(f"Error: numerical failure: {exc}", err=True)
            sys.exit(3)
        except ddkit.DDKitError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:
            click.echo(f"Error: {_file_system_error(exc)}", err=True)
            sys.exit(4)
        except (MemoryError, OverflowError, RuntimeError) as exc:  # what no check before foresaw
            if out_of_memory(exc):
                click.echo(f"Error: out of memory ({_first_line(exc)}); ask for less: fewer samples or steps, "
                           f"shorter sequences, smaller batches or a smaller model", err=True)
            elif too_large(exc):
                click.echo(f"Error: a number is too large to compute with ({_first_line(exc)}); check the counts "
                           f"and sizes given", err=True)
            else:
                raise
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("\ninterrupted; the checkpoint holds the last completed step (continue with --resume)", err=True)
            sys.exit(130)
    return wrapper


def _split_args(args: tuple[str, ...], *, need_file: bool) -> tuple[str | None, list[str]]:
    """``(pipeline file, overrides)``: the first argument is the file unless it is an override."""
    if args and "=" not in args[0]:
        return args[0], list(args[1:])
    if need_file:
        raise ConfigError("give a pipeline file (e.g. pipelines/quickstart.yaml), then key.path=value overrides")
    return None, list(args)


def _load_for_run(args: tuple[str, ...], out: str | None, resume: bool, device: str | None):
    """The config, the run directory, this process's place among the processes that
    ``torchrun`` started (:mod:`ddkit.contrib.distributed`) and its device. Rank 0 chooses the
    run directory for all."""
    from .distributed import setup
    from .runner import checkpoint_config, choose_run_dir

    path, overrides = _split_args(args, need_file=not resume)
    if path is None:  # --resume with only overrides: the run directory's own config
        if out is None:
            raise ConfigError("--resume without a pipeline file needs --out RUN_DIR")
        config = checkpoint_config(load_checkpoint(Path(out)), overrides)
    else:
        config = load_pipeline(path, overrides)
    world, device = setup(config.train, device)
    choice = None
    if world.is_main:
        try:
            choice = (*choose_run_dir(config, out, resume=resume), None)
        except ConfigError as exc:
            choice = (None, None, str(exc))
    run_dir, note, problem = world.from_main(choice)
    if problem is not None:
        world.close()
        raise ConfigError(problem)
    if note and world.is_main:
        click.echo(note, err=True)
    return config, run_dir, world, device


_resume_option = click.option("--resume", is_flag=True,
                              help="Continue the run in the run directory from its checkpoint.")
_out_option = click.option("--out", type=click.Path(file_okay=False),
                           help="Run directory (default: output.dir, else runs/<name>).")


def _check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    problem = None if value is None else device_problem(value)
    if problem is not None:
        raise click.BadParameter(problem)
    return value


def _check_blank(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and len(value) != 1:
        raise click.BadParameter(f"{value!r} is {len(value)} characters; expected one character")
    return value


_device_option = click.option("--device", callback=_check_device,
                              help="auto, cpu, cuda, cuda:N or mps (default: train.device).")
_seed_option = click.option("--seed", type=click.IntRange(0, SEED_MAX), help="Seed of the random draws.")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
@_out_option
@_resume_option
@_device_option
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_friendly
def run(args, out, resume, device, no_progress):
    """Train, evaluate and sample: PIPELINE.yaml [key.path=value ...] -> a run directory."""
    from .runner import run_pipeline

    config, run_dir, world, device = _load_for_run(args, out, resume, device)
    try:
        run_pipeline(config, run_dir, resume=resume, device=device, progress=False if no_progress else None,
                     log=click.echo, world=world)
    finally:
        world.close()


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
@_out_option
@_resume_option
@_device_option
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_friendly
def train(args, out, resume, device, no_progress):
    """Train only: PIPELINE.yaml [key.path=value ...] -> checkpoint, metrics and plot."""
    from .training import train_pipeline

    config, run_dir, world, device = _load_for_run(args, out, resume, device)
    try:
        pipeline = Pipeline.build(config, device=device)
        if world.is_main:
            click.echo(f"run directory: {run_dir}")
        _, result = train_pipeline(pipeline, run_dir, resume=resume, progress=False if no_progress else None,
                                   world=world)
    finally:
        world.close()
    if world.is_main:
        click.echo(f"trained {result.step} steps in {result.seconds:.1f} s ({result.tokens_per_second:,.0f} tokens/s); "
                   f"validation {result.validation['bits_per_token']:.4f} bits/token; checkpoint {result.checkpoint}")


def _source(run_dir: str | None, ckpt: str | None) -> Path:
    if (run_dir is None) == (ckpt is None):
        raise ConfigError("give exactly one of --run DIR or --ckpt FILE")
    return Path(ckpt) if ckpt else Path(run_dir) / CHECKPOINT_NAME


@click.command("eval")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), help="A run directory.")
@click.option("--ckpt", type=click.Path(exists=True, dir_okay=False), help="A checkpoint file.")
@click.option("--split", type=click.Choice(["validation", "test", "train"]), help="Default: eval.split.")
@click.option("--time-samples", type=click.IntRange(min=1), help="Time draws per sequence.")
@click.option("--time-sampling", type=click.Choice(["iid", "antithetic"]))
@click.option("--discrete-steps", type=click.IntRange(min=1), help="Also the discrete-time ELBO with T steps.")
@click.option("--left-to-right/--no-left-to-right", default=None,
              help="Also the exact NLL of the masked model decoded left to right (default: eval.left_to_right).")
@click.option("--max-sequences", type=click.IntRange(min=1))
@click.option("--batch-size", type=click.IntRange(min=1), help="Rows per denoiser call.")
@_seed_option
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="JSON file (default: RUN/eval.json).")
@click.option("--judge", "judge_run", type=click.Path(exists=True, file_okay=False),
              help="An autoregressive run (pipelines/ar.yaml): also report the generative perplexity of RUN's "
                   "samples.json under it, with unigram entropy, beside held-out text of the same length.")
@_device_option
@_friendly
def eval_command(run_dir, ckpt, split, time_samples, time_sampling, discrete_steps, left_to_right, max_sequences,
                 batch_size, seed, out_file, judge_run, device):
    """The ELBO bound (nats, bits per token, perplexity) of a trained model on a data split."""
    from .runner import evaluate_pipeline, format_eval, load_run, write_json

    pipeline, checkpoint = load_run(_source(run_dir, ckpt), load_data=True, device=device)
    result = evaluate_pipeline(pipeline, split=split, time_samples=time_samples, time_sampling=time_sampling,
                               discrete_steps=discrete_steps, left_to_right=left_to_right,
                               max_sequences=max_sequences, batch_size=batch_size, seed=seed)
    result["checkpoint_step"] = checkpoint.step
    click.echo(format_eval(result))
    if judge_run is not None:
        result["judge"] = _judge(run_dir, judge_run, device)
    target = Path(out_file) if out_file else (Path(run_dir) / "eval.json" if run_dir else None)
    if target is not None:
        write_json(target, result)
        click.echo(f"wrote {target}")


def _judge(run_dir, judge_run, device) -> dict:
    """Judge ``RUN/samples.json`` with the autoregressive run ``judge_run``."""
    from .judge import check_judge, format_judgement, judge_texts
    from .runner import load_run

    samples_file = Path(run_dir or ".") / "samples.json"
    if run_dir is None or not samples_file.is_file():
        raise click.UsageError(f"--judge scores the run's samples: {samples_file} does not exist "
                               f"(use --run with a run that has sampled, or run `ddkit sample --run` first)")
    texts = json.loads(samples_file.read_text())["samples"]
    judge, _ = load_run(judge_run, load_data=True, device=device)
    try:
        check_judge(judge)
        length = max(len(judge.tokenizer.encode(text)) for text in texts)
        chunks = judge.data["validation"].chunks(max(length, 1))[: len(texts)]
        report = judge_texts(judge, texts, reference=[judge.tokenizer.decode(c) for c in chunks])
    except ddkit.NumericalError:
        raise
    except ValueError as exc:
        raise click.UsageError(f"--judge {judge_run}: {exc}") from None
    click.echo(format_judgement(report))
    return report


@click.command()
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), help="A run directory.")
@click.option("--ckpt", type=click.Path(exists=True, dir_okay=False), help="A checkpoint file.")
@click.option("--sampler", "sampler_name", help="Sampler plugin (default: the run's sampler).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Sampler parameter (repeatable).")
@click.option("-n", "--num-samples", type=click.IntRange(min=1))
@click.option("--length", type=click.IntRange(min=1), help="Tokens per sample (default: sample.length or data.seq_len).")
@click.option("--prompt", help="Fixed prefix text.")
@click.option("--infill", help="Template; the blank character marks the positions to generate.")
@click.option("--blank", callback=_check_blank, help="Blank character of --infill (default '_').")
@_seed_option
@click.option("--show/--no-show", default=None, help="Print the denoising trajectory of the first sample.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Samples file (default: RUN/samples.txt).")
@_device_option
@_friendly
def sample(run_dir, ckpt, sampler_name, params, num_samples, length, prompt, infill, blank, seed, show, out_file,
           device):
    """Draw samples from a trained model; reports NFE, wall time and tokens/s."""
    from .runner import format_samples, load_run, make_sampler, sample_pipeline, write_samples

    pipeline, _ = load_run(_source(run_dir, ckpt), load_data=False, device=device)
    sampler, spec = make_sampler(pipeline, sampler_name, params)
    samples = sample_pipeline(pipeline, sampler=sampler, sampler_spec=spec, num_samples=num_samples, length=length,
                              prompt=prompt, infill=infill, blank=blank, seed=seed, show=show)
    click.echo(format_samples(samples))
    if samples.trajectory:
        click.echo("denoising trajectory of sample 0 (█ = mask):")
        click.echo(samples.trajectory)
    target = Path(out_file) if out_file else (Path(run_dir) / "samples.txt" if run_dir else None)
    if target is not None:
        paths = write_samples(samples, target, pipeline.resolved_config())
        click.echo(f"wrote {paths[0]} and {paths[1]}")


@click.group()
def config():
    """Validate, show or describe pipeline files."""


@config.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
@click.option("--no-data", is_flag=True,
              help="Do not load the data: with a tokenizer fitted on the corpus, the file only.")
@_friendly
def validate(args, no_data):
    """Check PIPELINE.yaml [overrides]: schema, plugin parameters, vocabulary, lengths, and
    whether the model, the process and the sampler fit together."""
    from .runner import output_dir_problem, run_dir_of

    path, overrides = _split_args(args, need_file=True)
    cfg = load_pipeline(path, overrides)
    run_dir, where = run_dir_of(cfg)
    problems = [f"{key}: {problem}" for key, problem in (("train.device", device_problem(cfg.train.device)),
                                                         (where, output_dir_problem(run_dir))) if problem]
    if problems:  # what this machine lacks, before building anything
        raise ConfigError(problems, source=path)
    if no_data and known_vocab_size(cfg.model_dump(mode="json")) is None:
        click.echo(f"{path}: valid as a file (the vocabulary comes from the corpus: the process, model, loss and "
                   f"sampler are checked without --no-data)")
        return
    pipeline = Pipeline.build(cfg, load_data=not no_data, device="cpu")
    click.echo(f"{path}: valid (vocabulary {pipeline.vocab_size}, "
               f"{sum(p.numel() for p in pipeline.model.parameters()):,} model parameters"
               f"{'; data not loaded' if no_data else ''})")


@config.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
@click.option("--no-data", is_flag=True, help="Do not load the data (vocabulary and alphabet stay unresolved).")
@_friendly
def show(args, as_json, no_data):
    """Print the fully resolved config of PIPELINE.yaml [overrides]."""
    from .runner import config_text

    path, overrides = _split_args(args, need_file=True)
    cfg = load_pipeline(path, overrides)
    resolved = cfg.model_dump(mode="json") if no_data else Pipeline.build(cfg, device="cpu").resolved_config()
    click.echo(config_text(resolved, as_json), nl=False)


@config.command()
def schema():
    """Print the JSON Schema of pipeline files (with the installed plugins' parameters)."""
    click.echo(json.dumps(pipeline_json_schema(), indent=2))


@ddkit.hookimpl
def register_commands(cli):
    for command in (run, train, eval_command, sample, config):
        cli.add_command(command)
