r"""Predictor–corrector sampling on a trained hollow model: word error against NFE.

The informed-corrector paper's text figure (Zhao et al. 2024) on a run of
``pipelines/hollow.yaml`` (or any masked run whose model declares ``hollow = True``): at each
NFE budget, for several seeds,

* ``ancestral``: the predictor alone with T = budget steps;
* ``maskgit``: the confidence decoder (MaskGIT's rule) with T = budget steps;
* ``+ forward_backward``, ``+ informed (k, τ)``: T = budget / 2 predictor steps, a correction
  after each but the last (one call each); the informed corrector is swept over ``k`` and
  ``τ`` and the best setting per budget is reported as its own row;
* ``+ dfm``: its sub-steps are adaptive, so T is the most steps whose NFE (probed on a few
  samples) fits the budget.

Every sampler uses the same trained network (the hollow model is also an ordinary masked
denoiser at masked positions). The metric is the **word error**: the share of the samples'
alphabetic words (2+ letters) that do not occur in the training text
(:func:`ddkit.contrib.runner.word_check`); with it the per-sample unigram entropy (a repetitive
sample has a low one). Values are the mean ± standard deviation over the seeds. Sampling is at
temperature 1 without top-k / top-p unless ``--run-filter`` takes the run's token filter.

    python benchmarks/correctors.py runs/hollow
    python benchmarks/correctors.py runs/hollow --write docs/correctors-hollow.md   # + .png, .json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import ddkit
from ddkit.contrib.pipeline import AutocastDenoiser
from ddkit.contrib.runner import load_run, reference_text, word_check

from decoders import summary, unigram_entropy  # benchmarks/decoders.py, next to this script

BUDGETS = (16, 32, 64, 128, 256)
SEEDS = (0, 1, 2)
KS = (1, 2, 4, 8)
TEMPERATURES = (0.1, 1.0, 10.0)
INFORMED = "+ informed"


@dataclass
class Row:
    """One sampler at one NFE budget: per seed, its NFE, word error and unigram entropy."""

    label: str
    steps: str
    budget: int | None = None
    nfe: list[float] = field(default_factory=list)
    error: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    seconds: float = 0.0


def spec(steps: int, tokens: dict, *, rule=None, corrector=None) -> dict:
    return {"name": "ancestral", "steps": steps, **tokens, **({} if rule is None else {"rule": rule}),
            **({} if corrector is None else {"corrector": corrector})}


def methods(budget: int, tokens: dict, ks, temperatures):
    """``(label, sampler spec or 'dfm')`` of every row at one budget."""
    half = max(1, budget // 2)
    yield "ancestral", spec(budget, tokens)
    yield "maskgit (choice_temperature 4.5)", spec(budget, tokens, rule="maskgit")
    yield "+ forward_backward (step ×1.5)", spec(half, tokens, corrector={"name": "forward_backward"})
    yield "+ dfm (c = 10 (t(1-t))^¼)", "dfm"
    for k in ks:
        for temperature in temperatures:
            yield (f"{INFORMED} k = {k}, τ = {temperature:g}",
                   spec(half, tokens, corrector={"name": "informed", "k": k, "temperature": temperature}))


def sample_row(pipeline, reference: str, label: str, budget: int, sampler_spec: dict, seeds, num: int,
               length: int) -> Row:
    """Word error and unigram entropy of the samples of every seed."""
    sampler = pipeline.make_sampler(sampler_spec, where="sampler")
    denoiser = AutocastDenoiser(pipeline.model, pipeline)
    row = Row(label, str(sampler_spec["steps"]), budget)
    start = time.perf_counter()
    for seed in seeds:
        result = sampler.sample(denoiser, pipeline.process, num_samples=num, length=length,
                                generator=torch.Generator(device=pipeline.device).manual_seed(seed),
                                device=pipeline.device, parameterization=pipeline.parameterization_for(sampler))
        samples = result.tokens.cpu()
        words = word_check([pipeline.tokenizer.decode(s) for s in samples], reference)
        row.nfe.append(result.nfe)
        row.error.append(1.0 - words["fraction"] if words else math.nan)
        row.entropy.append(unigram_entropy(samples))
    row.seconds = time.perf_counter() - start
    return row


def dfm_spec(pipeline, budget: int, tokens: dict, length: int) -> dict | None:
    """The most predictor steps (at least 2) whose NFE with the DFM corrector, probed on 8
    samples, fits the budget; ``None`` if none does."""
    for steps in range(max(2, budget // 2), 1, -1):
        candidate = spec(steps, tokens, corrector={"name": "dfm"})
        sampler = pipeline.make_sampler(candidate, where="sampler")
        nfe = sampler.sample(AutocastDenoiser(pipeline.model, pipeline), pipeline.process, num_samples=8,
                             length=length, generator=torch.Generator(device=pipeline.device).manual_seed(0),
                             device=pipeline.device, parameterization=pipeline.parameterization_for(sampler)).nfe
        if nfe <= budget:
            return candidate
    return None


def mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def table(rows: list[Row]) -> list[str]:
    lines = ["| NFE budget | sampler | steps T | NFE | word error | unigram entropy (nats) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.budget or '-'} | {row.label} | {row.steps} | {summary(row.nfe, '.0f')} | "
                     f"{summary(row.error, '.3f')} | {summary(row.entropy, '.3f')} | {row.seconds:.0f} |")
    return lines


def plot(curves: dict[str, list[Row]], data: Row, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 5))
    for (label, rows), marker in zip(curves.items(), "os^vD<>"):
        rows = [r for r in rows if any(math.isfinite(e) for e in r.error)]
        if not rows:
            continue
        x = [mean(r.nfe) for r in rows]
        y = [mean(r.error) for r in rows]
        err = [statistics.stdev(r.error) if len(r.error) > 1 else 0.0 for r in rows]
        axis.errorbar(x, y, yerr=err, marker=marker, capsize=3, label=label)
    if data.error and math.isfinite(mean(data.error)):
        axis.axhline(mean(data.error), color="gray", linestyle=":", label="validation text")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("NFE (denoiser calls)")
    axis.set_ylabel("word error (share of words not in the training text)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run directory (or checkpoint) of a hollow masked model")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--samples", type=int, default=32, help="samples per seed")
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS), help="informed corrector's k to sweep")
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES),
                        help="informed corrector's Gumbel temperatures to sweep")
    parser.add_argument("--run-filter", action="store_true",
                        help="sample with the run's temperature / top-k / top-p (default: temperature 1)")
    parser.add_argument("--write", type=Path, metavar="PATH.md", help="write the table there, the plot to PATH.png")
    args = parser.parse_args()

    pipeline, _ = load_run(args.run, load_data=True)
    if not getattr(pipeline.model, "hollow", False):
        parser.error(f"{args.run}: the informed corrector needs a hollow model (model: {{name: hollow}})")
    reference = reference_text(pipeline)
    if reference is None:
        parser.error(f"{args.run}: the word error needs a text data set with a token stream")
    length = pipeline.config.data.seq_len
    base = pipeline.config.sampler
    tokens = {key: base[key] for key in ("temperature", "top_k", "top_p")
              if args.run_filter and base.get(key) is not None}

    start = time.perf_counter()
    data = Row("validation text (data)", "-")
    chunks = pipeline.data["validation"].chunks(length)
    for seed in args.seeds:
        pick = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(seed))[:args.samples]
        words = word_check([pipeline.tokenizer.decode(c) for c in chunks[pick]], reference)
        data.error.append(1.0 - words["fraction"] if words else math.nan)
        data.entropy.append(unigram_entropy(chunks[pick]))
    rows, curves, sweep = [], {}, []
    for budget in args.budgets:
        informed = []
        for label, sampler_spec in methods(budget, tokens, args.ks, args.temperatures):
            if sampler_spec == "dfm":
                sampler_spec = dfm_spec(pipeline, budget, tokens, length)
                if sampler_spec is None:
                    continue  # two steps with corrections already cost more than the budget
            row = sample_row(pipeline, reference, label, budget, sampler_spec, args.seeds, args.samples, length)
            print("\n".join(table([row])[2:]), flush=True)
            if label.startswith(INFORMED):
                informed.append(row)
                sweep.append(row)
                continue
            rows.append(row)
            curves.setdefault(label, []).append(row)
        if informed:
            best = min(informed, key=lambda r: mean(r.error))
            chosen = Row(f"{INFORMED}, best of the sweep: {best.label[len(INFORMED) + 1:]}", best.steps, best.budget,
                         best.nfe, best.error, best.entropy, best.seconds)
            rows.append(chosen)
            curves.setdefault(f"{INFORMED} (best k, τ per NFE)", []).append(chosen)
    total = time.perf_counter() - start

    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    filters = ", ".join(f"{k} {v}" for k, v in tokens.items()) or "none (temperature 1)"
    lines = [
        f"Model: `{args.run}` ({pipeline.config.name}, {type(pipeline.model).__name__}, "
        f"{sum(p.numel() for p in pipeline.model.parameters()):,} parameters), samples of N = {length} tokens, "
        f"{args.samples} samples per seed, seeds {', '.join(map(str, args.seeds))}; token filter: {filters}. "
        f"Values: mean ± standard deviation over the seeds. The informed corrector was swept over "
        f"k ∈ {{{', '.join(map(str, args.ks))}}} and τ ∈ {{{', '.join(f'{t:g}' for t in args.temperatures)}}}; "
        f"its best setting per budget (lowest mean word error) is a row of the main table — chosen on the "
        f"same seeds it is reported on, so it is optimistic.",
        "",
        *table([data] + rows),
        "",
        "The informed-corrector sweep:",
        "",
        *table(sweep),
        "",
        f"Produced by `{command}` in {total / 60:.1f} minutes with torch {torch.__version__} on "
        f"{platform.machine()} ({torch.get_num_threads()} threads), ddkit {ddkit.__version__}.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        image = args.write.with_suffix(".png")
        plot(curves, data, image, f"{pipeline.config.name}: word error against NFE")
        args.write.write_text(HEADER.format(image=image.name) + text + "\n", encoding="utf-8")
        records = [{**asdict(row), "error": [e if math.isfinite(e) else None for e in row.error]}
                   for row in [data, *rows, *sweep]]
        args.write.with_suffix(".json").write_text(
            json.dumps({"command": command, "rows": records},
                       indent=1, allow_nan=False) + "\n", encoding="utf-8")
        print(f"wrote {args.write}, {image} and {args.write.with_suffix('.json')}")


HEADER = """# Correctors on a trained hollow model: word error against NFE

Generated by `benchmarks/correctors.py` (see its docstring; the command is at the end). What
the correctors are: [correctors.md](correctors.md). *Word error*: the share of the samples'
words (2+ letters) that do not occur in the training text; *unigram entropy*: the entropy of
each sample's character frequencies, averaged. *NFE* counts denoiser calls for the batch.

![word error against NFE]({image})

"""


if __name__ == "__main__":
    main()
