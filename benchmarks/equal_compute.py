r"""Quality at equal training compute: autoregressive, block diffusion and masked diffusion.

Every configuration is a pipeline file plus ``key=value`` overrides. The budget is the
wall-clock time the reference configuration (the quickstart, ``--reference``) needs for
``--reference-steps`` steps on this machine; every other configuration gets the number of
steps that takes the same time:

.. math::  \text{steps}_c = \text{reference steps} \cdot \tau_{\text{ref}} / \tau_c ,

:math:`\tau` the median seconds per training step, measured one configuration at a time with
all cores (``calibration.json``; measured once, reused). Runs then go by steps, so they can
share the machine (``--jobs``, one thread each) without changing what each one learns. The
learning-rate schedule (warmup, cosine) is the pipeline's, stretched over its steps.

For each finished run: the validation NELBO (bits/char, the pipeline's ``eval`` settings; for
``L' = 1`` the exact NLL), the share of words of ``--samples`` samples (the run's sampler,
seed 0) found in the training text, and their generative perplexity and unigram entropy under
the autoregressive run named by ``--judge`` (held-out text of the same length beside them).
Means ± standard deviations over the seeds go to ``summary.json`` and a Markdown table.

    python benchmarks/equal_compute.py --runs /tmp/equal --seeds 0 1 2 --jobs 2 \
        --out benchmarks/results/equal_compute
    python benchmarks/equal_compute.py --runs /tmp/equal --only masked ar --seeds 0   # a subset
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    name: str
    pipeline: str
    overrides: tuple[str, ...] = ()
    note: str = ""
    #: the configuration whose measured step time this one shares (same network, same batch)
    cost_of: str | None = None


#: the quickstart before the changes this comparison led to (one mask per sequence, 32
#: sequences, ancestral sampling): the masked runs below are this plus their own overrides
BEFORE = ("loss.complementary_masks=false", "train.batch_size=32",
          "sampler={name: ancestral, steps: 64, temperature: 0.3, top_p: 0.9}")

CONFIGS = [
    Config("masked", "pipelines/quickstart.yaml", BEFORE, note="the quickstart before this comparison"),
    Config("ar", "pipelines/ar.yaml", note="causal transformer, exact NLL"),
    Config("bd3-4", "pipelines/bd3.yaml", note="block diffusion, L'=4"),
    Config("bd3-16", "pipelines/bd3.yaml",
           ("model.block_length=16", "sampler.sampler.steps=16"), note="block diffusion, L'=16", cost_of="bd3-4"),
    Config("bd3-4-search", "pipelines/bd3.yaml", ("loss.clip=search",),
           note="block diffusion, L'=4, clipped mask rates chosen by the variance search", cost_of="bd3-4"),
    Config("bd3-4-complementary", "pipelines/bd3.yaml", ("loss.complementary_masks=true", "train.batch_size=16"),
           note="block diffusion, L'=4, 16 sequences with two complementary masks each", cost_of="bd3-4"),
    Config("bd3-1", "pipelines/bd3.yaml", ("model.block_length=1", "sampler.sampler.steps=1"),
           note="block diffusion, L'=1 (two-stream pass over 2N tokens)", cost_of="bd3-4"),
    # ablations of the masked model, one lever each
    Config("masked-lr1e-2", "pipelines/quickstart.yaml", (*BEFORE, "train.lr=1.0e-2",), cost_of="masked"),
    Config("masked-lr2.5e-3", "pipelines/quickstart.yaml", (*BEFORE, "train.lr=2.5e-3",), cost_of="masked"),
    Config("masked-iid", "pipelines/quickstart.yaml", (*BEFORE, "loss.time_sampling=iid",), cost_of="masked"),
    Config("masked-cosine", "pipelines/quickstart.yaml", (*BEFORE, "process.schedule=cosine",), cost_of="masked"),
    Config("masked-timecond", "pipelines/quickstart.yaml", (*BEFORE, "model.time_conditioning=true", "parameterization.time_conditioning=true")),
    Config("masked-batch64", "pipelines/quickstart.yaml", (*BEFORE, "train.batch_size=64",)),
    Config("masked-batch16", "pipelines/quickstart.yaml", (*BEFORE, "train.batch_size=16",)),
    Config("masked-w96d3", "pipelines/quickstart.yaml", (*BEFORE, "model.width=96", "model.depth=3")),
    Config("masked-w48d6", "pipelines/quickstart.yaml", (*BEFORE, "model.width=48", "model.depth=6")),
    Config("masked-ema0.999", "pipelines/quickstart.yaml", (*BEFORE, "train.ema_decay=0.999",), cost_of="masked"),
    Config("masked-clip", "pipelines/quickstart.yaml",
           (*BEFORE[1:], "loss={name: block_elbo, block_length: 64, clip: [0.3, 0.8]}"),
           note="BD3-LM's clipped mask rates with one block of N", cost_of="masked"),
    Config("genmd4", "pipelines/genmd4.yaml", note="learned per-character schedule, 2 draws"),
    Config("masked-complementary-b32", "pipelines/quickstart.yaml",
           (*BEFORE, "loss.complementary_masks=true", "train.batch_size=32"),
           note="32 sequences, each with two complementary masks (64 rows)", cost_of="masked-batch64"),
    Config("masked-complementary", "pipelines/quickstart.yaml",
           (*BEFORE, "loss.complementary_masks=true", "train.batch_size=16"),
           note="16 sequences, each with two complementary masks (32 rows)", cost_of="masked"),
]
BY_NAME = {c.name: c for c in CONFIGS}


def ddkit_command() -> list[str]:
    """The ``ddkit`` command of the running interpreter's environment."""
    return [str(Path(sys.executable).parent / "ddkit")]


def run(cmd: list[str], threads: int, log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write(shlex.join(cmd) + "\n")
        out.flush()
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"failed ({done.returncode}): {shlex.join(cmd)}; see {log}")


def seconds_per_step(metrics: Path) -> float:
    """Median seconds per step between the logged lines of a run, the first left out (warm-up)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows = [r for r in rows if "elapsed_s" in r]
    gaps = [(b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in zip(rows[1:], rows[2:])]
    if not gaps:
        raise RuntimeError(f"{metrics}: too few logged steps to time")
    return statistics.median(gaps)


def calibrate(configs: list[Config], runs: Path, threads: int) -> dict[str, float]:
    """Seconds per step of each configuration (of its ``cost_of`` where it names one)."""
    path = runs / "calibration.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    for config in configs:
        if config.name in known or config.cost_of:
            continue
        target = runs / "calibration" / config.name
        shutil.rmtree(target, ignore_errors=True)  # a killed calibration's leftovers
        run([*ddkit_command(), "run", config.pipeline, *config.overrides, "train.steps=300", "train.log_every=25",
             "train.eval_every=null", "eval.max_sequences=8", "sample.num_samples=1", "sample.show=false",
             "--out", str(target), "--no-progress"], threads, target.parent / f"{config.name}.log")
        known[config.name] = seconds_per_step(target / "metrics.jsonl")
        print(f"calibrated {config.name}: {1000 * known[config.name]:.1f} ms/step", flush=True)
        path.write_text(json.dumps(known, indent=1))
    return {c.name: known[c.cost_of or c.name] for c in configs}


def train_one(config: Config, seed: int, steps: int, runs: Path, threads: int) -> Path:
    target = runs / f"{config.name}-s{seed}"
    if (target / "eval.json").is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)  # a killed run's leftovers: start it again
    run([*ddkit_command(), "run", config.pipeline, *config.overrides, f"seed={seed}", f"train.steps={steps}",
         "--out", str(target), "--no-progress"], threads, runs / f"{config.name}-s{seed}.log")
    print(f"trained {target.name} ({steps} steps)", flush=True)
    return target


def sample_metrics(run_dir: Path, judge_dir: Path | None, samples: int) -> dict:
    """Words found and judge scores of ``samples`` samples of the run's own sampler, and for a
    model that is not autoregressive its exact NLL decoded left to right."""
    import math

    from ddkit.contrib.evaluate import left_to_right_nll
    from ddkit.contrib.judge import judge_texts
    from ddkit.contrib.pipeline import AutocastDenoiser
    from ddkit.contrib.runner import load_run, reference_text, sample_pipeline, word_check

    pipeline, _ = load_run(run_dir, load_data=True, device="cpu")
    drawn = sample_pipeline(pipeline, num_samples=samples, seed=0, show=False)
    words = word_check(drawn.texts, reference_text(pipeline))
    out = {"words_found": words["fraction"] if words else None, "sample_nfe": drawn.nfe}
    if not getattr(pipeline.eval_loss(), "autoregressive", False) and pipeline.process.schedule.vector_size is None:
        chunks = pipeline.data[pipeline.config.eval.split].chunks(pipeline.config.data.seq_len)
        ordered = left_to_right_nll(AutocastDenoiser(pipeline.model, pipeline), pipeline.process,
                                    pipeline.parameterization, chunks)
        out["left_to_right_bits"] = ordered.nats_per_token / math.log(2)
    if judge_dir is not None:
        judge, _ = load_run(judge_dir, load_data=True, device="cpu")
        chunks = judge.data["validation"].chunks(max(len(judge.tokenizer.encode(t)) for t in drawn.texts))
        report = judge_texts(judge, drawn.texts, reference=[judge.tokenizer.decode(c) for c in chunks[:samples]])
        out.update(gen_ppl=report["samples"]["gen_perplexity"], entropy=report["samples"]["unigram_entropy"],
                   data_gen_ppl=report["reference"]["gen_perplexity"],
                   data_entropy=report["reference"]["unigram_entropy"])
    return out


def decoder_sweep(run_dir: Path, judge_dir: Path, samples: int, seeds: list[int]) -> list[dict]:
    """Words found, judge perplexity and entropy of ``ancestral`` (64 steps, top-p 0.9) with the
    posterior and the low-confidence rule at temperatures 0.3, 0.6 and 1.0, per sampling seed."""
    from ddkit.contrib.judge import judge_texts
    from ddkit.contrib.runner import load_run, make_sampler, reference_text, sample_pipeline, word_check

    pipeline, _ = load_run(run_dir, load_data=True, device="cpu")
    judge, _ = load_run(judge_dir, load_data=True, device="cpu")
    reference = reference_text(pipeline)
    held_out = [judge.tokenizer.decode(c) for c in judge.data["validation"].chunks(64)[:samples]]
    rows = []
    for rule in ("posterior", "low_confidence"):
        for temperature in (0.3, 0.6, 1.0):
            for seed in seeds:
                sampler, spec = make_sampler(pipeline, "ancestral", [f"rule={rule}", f"temperature={temperature}",
                                                                     "top_p=0.9", "steps=64"])
                drawn = sample_pipeline(pipeline, sampler=sampler, sampler_spec=spec, num_samples=samples,
                                        seed=seed, show=False)
                judged = judge_texts(judge, drawn.texts, reference=held_out)
                rows.append({"rule": rule, "temperature": temperature, "seed": seed,
                             "words_found": word_check(drawn.texts, reference)["fraction"],
                             "gen_ppl": judged["samples"]["gen_perplexity"],
                             "entropy": judged["samples"]["unigram_entropy"],
                             "data_gen_ppl": judged["reference"]["gen_perplexity"],
                             "data_entropy": judged["reference"]["unigram_entropy"]})
                print(rule, temperature, seed, *(f"{rows[-1][k]:.3f}" for k in ("words_found", "gen_ppl", "entropy")),
                      flush=True)
    return rows


def result_of(run_dir: Path) -> dict:
    evaluation = json.loads((run_dir / "eval.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "elapsed_s" in r]
    return {"bits_per_char": evaluation["continuous"]["bits_per_token"],
            "bits_se": evaluation["continuous"]["bits_standard_error"],
            "bound": evaluation["continuous"]["bound"],
            "steps": evaluation["checkpoint_step"],
            "train_seconds": timed[-1]["elapsed_s"] if timed else None}


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def table(summary: dict) -> str:
    ar = summary.get("ar", {}).get("bits_per_char", [None])[0]
    lines = ["| config | steps | bits/char | × AR | left to right (exact) | words found | gen. PPL (AR judge) | "
             "entropy | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in summary.items():
        def cell(key, spec, row=row):
            mean, sd = row[key]
            if mean != mean:
                return "—"
            return f"{mean:{spec}}" + (f" ± {sd:{spec}}" if sd is not None else "")
        ratio = f"{row['bits_per_char'][0] / ar:.2f}" if ar else "—"
        lines.append(f"| {name} | {row['steps']} | {cell('bits_per_char', '.3f')} | {ratio} | "
                     f"{cell('left_to_right_bits', '.3f')} | "
                     f"{cell('words_found', '.2f')} | {cell('gen_ppl', '.2f')} | {cell('entropy', '.2f')} | "
                     f"{row['seeds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="where the run directories go")
    parser.add_argument("--only", nargs="+", choices=sorted(BY_NAME), help="configurations (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each with cores / jobs threads")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reference", default="masked")
    parser.add_argument("--reference-steps", type=int, default=3600)
    parser.add_argument("--judge", default="ar", help="configuration whose seed-0 run judges the samples")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--out", type=Path, help="folder for summary.json and table.md")
    parser.add_argument("--decoder-sweep", metavar="CONFIG",
                        help="instead: the decoders on CONFIG's run of --run-seed, sampled with --seeds "
                             "(to --out as decoders.json)")
    parser.add_argument("--run-seed", type=int, default=0, help="the training seed of --decoder-sweep's run")
    args = parser.parse_args(argv)

    if args.decoder_sweep:
        rows = decoder_sweep(args.runs / f"{args.decoder_sweep}-s{args.run_seed}", args.runs / f"{args.judge}-s0",
                             args.samples, args.seeds)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "decoders.json").write_text(json.dumps({"command": shlex.join(sys.argv), "rows": rows},
                                                               indent=1))
        return

    configs = [BY_NAME[n] for n in (args.only or BY_NAME)]
    args.runs.mkdir(parents=True, exist_ok=True)
    needed = {*configs, BY_NAME[args.reference], *(BY_NAME[c.cost_of] for c in configs if c.cost_of)}
    timing = calibrate(sorted(needed, key=CONFIGS.index), args.runs, args.cores)
    steps = {c.name: max(1, round(args.reference_steps * timing[args.reference] / timing[c.name])) for c in configs}
    threads = max(1, args.cores // args.jobs)
    jobs = [(c, s) for s in args.seeds for c in configs]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        dirs = list(pool.map(lambda job: train_one(job[0], job[1], steps[job[0].name], args.runs, threads), jobs))
    print(f"all runs trained ({time.perf_counter() - started:.0f} s)", flush=True)

    judge_dir = args.runs / f"{args.judge}-s0"
    judge_dir = judge_dir if (judge_dir / "eval.json").is_file() else None
    per_run = {}
    for (config, seed), run_dir in zip(jobs, dirs):
        cached = run_dir / "equal_compute.json"
        if cached.is_file():
            row = json.loads(cached.read_text())
            if "gen_ppl" in row or judge_dir is None:
                per_run[run_dir.name] = row
                continue
        row = {"config": config.name, "seed": seed, **result_of(run_dir),
               **sample_metrics(run_dir, judge_dir, args.samples)}
        cached.write_text(json.dumps(row, indent=1))
        per_run[run_dir.name] = row

    summary = {}
    for config in configs:
        rows = [r for r in per_run.values() if r["config"] == config.name]
        summary[config.name] = {
            "steps": steps[config.name], "ms_per_step": 1000 * timing[config.name], "seeds": len(rows),
            "overrides": [config.pipeline, *config.overrides], "note": config.note,
            **{key: mean_sd([r.get(key) for r in rows])
               for key in ("bits_per_char", "left_to_right_bits", "words_found", "gen_ppl", "entropy", "data_gen_ppl", "data_entropy",
                           "train_seconds")}}
    text = table(summary)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps({"command": shlex.join(sys.argv), "summary": summary,
                                                           "runs": per_run, "calibration": timing}, indent=1))
        (args.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
