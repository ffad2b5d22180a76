r"""Decoders of masked diffusion on a trained model: sample quality against NFE.

For a run directory (e.g. the quickstart's, ``ddkit run pipelines/quickstart.yaml``) every
decoder — ancestral, first hitting, ReMDM (loop, rescale, cap, conf), MaskGIT, LLaDA
low-confidence (with and without semi-autoregressive blocks) and Fast-dLLM threshold
decoding — samples at each number of steps T, with the run's temperature / top-k / top-p,
for several seeds. Per decoder and T it reports:

* ``NFE``: denoiser calls for the batch (the batch advances together, so this is the
  largest count of a sequence), and ``NFE/seq``: the mean number of calls one sequence
  would cost sampled alone with the output cache (threshold decoding's NFE depends on the
  sequence);
* ``words found``: the share of the alphabetic words (2+ letters) of the samples that occur
  in the training text (:func:`ddkit.contrib.runner.word_check`);
* ``unigram entropy``: the entropy of each sample's token frequencies (nats), averaged over
  the samples; repetitive samples have a low one. The row "validation text" gives both for
  chunks of held-out text of the same length;
* ``gen. PPL`` (with ``--judge RUN``): the generative perplexity of the samples under an
  autoregressive run of the same tokenizer (``pipelines/ar.yaml``;
  :func:`ddkit.contrib.judge.judge_texts`), the validation text's beside it.

Each value is the mean over the seeds ± their standard deviation. These are ELBO-free sample
metrics: a high share of known words or a low perplexity with a collapsed entropy is not
good text. Writes a markdown table (``--write PATH.md``) and, next to it, a PNG plot of words
found and entropy against NFE (``PATH.png``) and the per-seed values (``PATH.json``).

    python benchmarks/decoders.py runs/quickstart
    python benchmarks/decoders.py runs/quickstart --write docs/decoders-quickstart.md --judge runs/ar
    python benchmarks/decoders.py runs/quickstart --steps 16 64 --seeds 0 1 --decoders ancestral remdm-loop
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
from ddkit.contrib.judge import check_judge, judge_texts
from ddkit.contrib.pipeline import AutocastDenoiser
from ddkit.contrib.runner import load_run, reference_text, word_check

from oracle import PerSequenceCalls  # benchmarks/oracle.py, next to this script

STEPS = (16, 64, 256, 1024)
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Decoder:
    """One decoder of the table: ``key`` (for ``--decoders``), a label, and its sampler spec
    for ``steps`` and a length (without the token filter, which comes from the run)."""

    key: str
    label: str
    spec: object  # (steps, length, token filter) -> sampler spec
    #: the steps it runs at: None for every T, "length" for T = N only, "up to length" for T <= N
    steps: str | None = None


def ancestral(rule=None):
    def spec(steps, length, tokens):
        return {"name": "ancestral", "steps": steps, **tokens, **({} if rule is None else {"rule": rule})}
    return spec


def in_blocks(block_length, rule):
    def spec(steps, length, tokens):
        blocks = -(-length // block_length)
        return {"name": "semi_ar", "block_length": block_length,
                "sampler": ancestral(rule)(max(1, steps // blocks), length, tokens)}
    return spec


def first_hitting(steps, length, tokens):
    return {"name": "first_hitting", **tokens}


DECODERS = (
    Decoder("ancestral", "ancestral", ancestral()),
    Decoder("first_hitting", "first_hitting (exact, one token per call)", first_hitting, steps="length"),
    Decoder("remdm-loop", "remdm loop (defaults)", ancestral({"name": "remdm", "strategy": "loop"})),
    Decoder("remdm-rescale", "remdm rescale (η = 0.015)", ancestral({"name": "remdm", "strategy": "rescale"})),
    Decoder("remdm-rescale-0.5", "remdm rescale, η = 0.5",
            ancestral({"name": "remdm", "strategy": "rescale", "eta": 0.5})),
    Decoder("remdm-cap", "remdm cap (η = 0.008)", ancestral({"name": "remdm", "strategy": "cap"})),
    Decoder("remdm-conf", "remdm conf", ancestral({"name": "remdm", "strategy": "conf"})),
    Decoder("maskgit", "maskgit (choice_temperature 4.5, cosine)", ancestral("maskgit")),
    Decoder("low_confidence", "low_confidence", ancestral("low_confidence"), steps="up to length"),
    Decoder("low_confidence-blocks", "low_confidence in blocks of 16 (T/blocks per block)",
            in_blocks(16, "low_confidence"), steps="up to length"),
    Decoder("threshold-0.5", "threshold 0.5 (T = N)", ancestral({"name": "threshold", "threshold": 0.5}),
            steps="length"),
    Decoder("threshold-0.7", "threshold 0.7 (T = N)", ancestral({"name": "threshold", "threshold": 0.7}),
            steps="length"),
    Decoder("threshold-0.9", "threshold 0.9 (T = N)", ancestral({"name": "threshold", "threshold": 0.9}),
            steps="length"),
)
#: decoders run at T >= --long-steps by default (the rest is skipped there to fit the time)
LONG_DECODERS = ("ancestral", "remdm-loop", "remdm-rescale")
LONG_STEPS = 1024


@dataclass
class Row:
    label: str
    steps: str
    nfe: list[float] = field(default_factory=list)
    nfe_per_sequence: list[float] = field(default_factory=list)
    words: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    gen_ppl: list[float] = field(default_factory=list)
    seconds: float = 0.0


def unigram_entropy(tokens: torch.Tensor) -> float:
    """Mean over the rows of the entropy (nats) of each row's token frequencies."""
    values = []
    for row in tokens:
        counts = torch.bincount(row).to(torch.float64)
        p = counts[counts > 0] / row.numel()
        values.append(float(-(p * p.log()).sum()))
    return statistics.fmean(values)


def summary(values: list[float], spec: str) -> str:
    """``mean ± standard deviation`` over the seeds (``-`` where nothing was measured)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "-"
    if len(finite) == 1:
        return format(finite[0], spec)
    return f"{statistics.fmean(finite):{spec}} ± {statistics.stdev(finite):{spec}}"


def plan(decoders, steps, length, long_decoders, long_steps):
    """``(decoder, T)`` to run and a list of what was skipped, with the reason."""
    runs, skipped = [], []
    for decoder in decoders:
        if decoder.steps == "length":
            runs.append((decoder, length))
            continue
        for T in steps:
            if decoder.steps == "up to length" and T > length:
                skipped.append(f"{decoder.key} at T = {T} (above N = {length} it commits one token per step and "
                               f"stops after N steps: the same samples as T = N would give)")
            elif T >= long_steps and decoder.key not in long_decoders:
                skipped.append(f"{decoder.key} at T = {T} (time)")
            else:
                runs.append((decoder, T))
    return runs, skipped


def gen_perplexity(judge, texts: list[str]) -> float:
    """The judge's generative perplexity of ``texts`` (NaN without a judge; inf past float range)."""
    if judge is None:
        return math.nan
    value = judge_texts(judge, texts)["samples"]["gen_perplexity"]
    return math.inf if value is None else value


def measure(pipeline, reference: str, decoder: Decoder, T: int, seeds, num_samples: int, length: int,
            tokens: dict, judge=None) -> Row:
    spec = decoder.spec(T, length, tokens)
    sampler = pipeline.make_sampler(spec, where="sampler")
    row = Row(decoder.label, str(T))
    model = pipeline.model
    model.eval()
    rule = getattr(getattr(sampler, "inner", sampler), "rule", None)
    start = time.perf_counter()
    for seed in seeds:
        counted = PerSequenceCalls(AutocastDenoiser(model, pipeline), pipeline.process.mask_id,
                                   bool(getattr(rule, "remasks", False)))
        result = sampler.sample(counted, pipeline.process, num_samples=num_samples, length=length,
                                generator=torch.Generator(device=pipeline.device).manual_seed(seed),
                                device=pipeline.device, parameterization=pipeline.parameterization_for(sampler))
        samples = result.tokens.cpu()
        texts = [pipeline.tokenizer.decode(sample) for sample in samples]
        words = word_check(texts, reference)
        row.nfe.append(result.nfe)
        row.nfe_per_sequence.append(float(counted.calls.double().mean()))
        row.words.append(words["fraction"] if words else math.nan)
        row.entropy.append(unigram_entropy(samples))
        row.gen_ppl.append(gen_perplexity(judge, texts))
    row.seconds = time.perf_counter() - start
    return row


def validation_row(pipeline, reference: str, seeds, num_samples: int, length: int, judge=None) -> Row:
    """Words found and unigram entropy of random chunks of the validation text."""
    chunks = pipeline.data["validation"].chunks(length)
    row = Row("validation text (data)", "-")
    for seed in seeds:
        pick = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(seed))[:num_samples]
        texts = [pipeline.tokenizer.decode(chunk) for chunk in chunks[pick]]
        words = word_check(texts, reference)
        row.words.append(words["fraction"] if words else math.nan)
        row.entropy.append(unigram_entropy(chunks[pick]))
        row.gen_ppl.append(gen_perplexity(judge, texts))
    return row


def table(rows: list[Row], judged: bool = False) -> list[str]:
    judge_head, judge_rule = (" gen. PPL (AR judge) |", "---|") if judged else ("", "")
    lines = [f"| decoder | steps T | NFE | NFE/seq | words found | unigram entropy (nats) |{judge_head} seconds |",
             f"|---|---|---|---|---|---|{judge_rule}---|"]
    for row in rows:
        judge_cell = f" {summary(row.gen_ppl, '.2f')} |" if judged else ""
        lines.append(f"| {row.label} | {row.steps} | {summary(row.nfe, '.0f')} | "
                     f"{summary(row.nfe_per_sequence, '.1f')} | {summary(row.words, '.3f')} | "
                     f"{summary(row.entropy, '.3f')} |{judge_cell} {row.seconds:.0f} |")
    return lines


def plot(rows: list[Row], data: Row, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("words", "share of words found in the training text"), ("entropy", "unigram entropy per sample (nats)")]
    if any(math.isfinite(v) for v in data.gen_ppl):
        panels.append(("gen_ppl", "generative perplexity (AR judge)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5))
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.label, []).append(row)
    markers = "os^vD<>pXh*P"
    colors = plt.get_cmap("tab20").colors  # distinct colours for up to 20 decoders
    for i, (label, group) in enumerate(groups.items()):
        points = [(statistics.fmean(r.nfe), r) for r in group if any(math.isfinite(w) for w in r.words)]
        if not points:
            continue
        x = [nfe for nfe, _ in points]
        for axis, (metric, _) in zip(axes, panels):
            values = [[v for v in getattr(r, metric) if math.isfinite(v)] for _, r in points]
            y = [statistics.fmean(v) for v in values]
            err = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
            axis.errorbar(x, y, yerr=err, marker=markers[i % len(markers)], color=colors[(2 * i) % 20 + (2 * i) // 20 % 2],
                          capsize=3, label=label, linestyle="-" if len(points) > 1 else "none")
    for axis, (metric, name) in zip(axes, panels):
        values = [v for v in getattr(data, metric) if math.isfinite(v)]
        if values:
            axis.axhline(statistics.fmean(values), color="gray", linestyle=":", label="validation text")
        axis.set_xscale("log")
        axis.set_xlabel("NFE (denoiser calls per batch)")
        axis.set_ylabel(name)
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run directory (or checkpoint file) of a trained masked model")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--samples", type=int, default=32, help="samples per seed")
    parser.add_argument("--decoders", nargs="+", choices=[d.key for d in DECODERS], default=[d.key for d in DECODERS])
    parser.add_argument("--long-steps", type=int, default=LONG_STEPS,
                        help="from this T on, only --long-decoders run (to keep the time)")
    parser.add_argument("--long-decoders", nargs="*", default=list(LONG_DECODERS))
    parser.add_argument("--judge", type=Path, default=None, metavar="RUN",
                        help="an autoregressive run of the same tokenizer (pipelines/ar.yaml) that scores the samples")
    parser.add_argument("--write", type=Path, metavar="PATH.md",
                        help="write the table there and the plot to PATH.png")
    args = parser.parse_args()

    pipeline, _ = load_run(args.run, load_data=True)
    if "absorbing" not in pipeline.process.capabilities:
        parser.error(f"the decoders need a masked (absorbing) process; {args.run} trains "
                     f"{type(pipeline.process).__name__}")
    reference = reference_text(pipeline)
    if reference is None:
        parser.error(f"{args.run}: the words-found metric needs a text data set with a token stream")
    length = pipeline.config.data.seq_len
    base = pipeline.config.sampler
    tokens = {key: base[key] for key in ("temperature", "top_k", "top_p") if base.get(key) is not None}
    decoders = [d for d in DECODERS if d.key in args.decoders]
    runs, skipped = plan(decoders, args.steps, length, set(args.long_decoders), args.long_steps)

    judge = None
    if args.judge is not None:
        judge, _ = load_run(args.judge, device=str(pipeline.device))
        try:
            check_judge(judge)
        except ValueError as exc:
            parser.error(f"--judge {args.judge}: {exc}")
        if judge.tokenizer.vocab_size != pipeline.tokenizer.vocab_size:
            parser.error(f"--judge {args.judge} has {judge.tokenizer.vocab_size} tokens, the model "
                         f"{pipeline.tokenizer.vocab_size}: the judge must share the model's tokenizer")
    judged = judge is not None

    start = time.perf_counter()
    data = validation_row(pipeline, reference, args.seeds, args.samples, length, judge)
    rows = []
    for decoder, T in runs:
        rows.append(measure(pipeline, reference, decoder, T, args.seeds, args.samples, length, tokens, judge))
        print("\n".join(table([rows[-1]], judged)[2:]), flush=True)
    total = time.perf_counter() - start

    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    filters = ", ".join(f"{k} {v}" for k, v in tokens.items()) or "none"
    lines = [
        f"Model: `{args.run}` ({pipeline.config.name}, process `{json.dumps(pipeline.config.process)}`, "
        f"{sum(p.numel() for p in pipeline.model.parameters()):,} parameters), samples of N = {length} tokens, "
        f"{args.samples} samples per seed, seeds {', '.join(map(str, args.seeds))}; token filter of the run's "
        f"sampler: {filters}. Values: mean ± standard deviation over the seeds."
        + (f" Judge: `{args.judge}` ({judge.config.name}, exact autoregressive NLL)." if judged else ""),
        "",
        *table([data] + rows, judged),
        "",
        "Skipped: " + ("; ".join(skipped) if skipped else "nothing") + ".",
        "",
        f"Produced by `{command}` in {total / 60:.1f} minutes "
        f"with torch {torch.__version__} on {platform.machine()} ({torch.get_num_threads()} threads), "
        f"ddkit {ddkit.__version__}.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        image = args.write.with_suffix(".png")
        plot(rows, data, image, f"{pipeline.config.name}: decoders, {args.samples} samples x {len(args.seeds)} seeds")
        args.write.write_text(HEADER.format(image=image.name) + text + "\n", encoding="utf-8")
        raw = args.write.with_suffix(".json")
        # per-seed values; a seed without words has null (JSON has no NaN)
        records = [{**asdict(row), "words": [w if math.isfinite(w) else None for w in row.words],
                    "gen_ppl": [p if math.isfinite(p) else None for p in row.gen_ppl]} for row in [data, *rows]]
        raw.write_text(json.dumps({"command": command, "rows": records}, indent=1, allow_nan=False) + "\n",
                       encoding="utf-8")
        print(f"wrote {args.write}, {image} and {raw}")


HEADER = """# Decoders on a trained model: quality against NFE

Generated by `benchmarks/decoders.py` (see its docstring; the command is at the end). What the
decoders are and how to read this table: [decoders.md](decoders.md). *NFE* counts denoiser
calls for the batch; *NFE/seq* the calls one sequence would cost alone with the output cache;
*words found*: the share of the samples' words (2+ letters) that occur in the training text;
*unigram entropy*: the entropy of each sample's character frequencies, averaged; *gen. PPL*
(when judged): the generative perplexity of the samples under the autoregressive model.

![words found and entropy against NFE]({image})

"""


if __name__ == "__main__":
    main()
