r"""Length histograms of variable-length generation on the END-state Markov chain (the
``markov_end`` data set), against its exact length law.

Three ways to generate sequences of varying length are compared:

* **FlexMDM** — the ``insertion`` process, sampled from the empty sequence
  (``flexmdm_tau_leaping``);
* **masked diffusion with padding** — a fixed-length masked model of the padded sequences
  (the padding ``.`` is an ordinary token; ``ancestral``), a sample's length being the tokens
  before its first ``.``;
* **block diffusion with end-token stopping** — ``semi_ar`` over blocks with ``eos_id`` = the
  padding, so a sequence stops at its first ``.``.

Three parts:

* ``oracle`` — every method with its exact denoiser (:class:`~ddkit.testing.insertion_oracles.
  InsertionOracle`; :class:`~ddkit.testing.OracleDenoiser` of the padded chain for the other
  two): only the samplers' own errors remain. FlexMDM also runs with the insertion schedule
  :math:`\alpha^{ins}_t = 1 - t^2`, which leaves fewer insertions to the last interval (where
  none are made) than the linear one;
* ``trained`` — three small networks of the same size trained with the same budget (the
  ``flex_dit`` + ``flexmdm`` loss, ``dit`` + continuous ELBO, ``block_dit`` + block ELBO),
  their length histograms and their bounds on the NLL (bits per character = nats per sequence
  / mean characters / ln 2), against the chain's exact entropy;
* ``corpus`` — the same three methods trained on the embedded corpus's paragraphs
  (``pydoc_paragraphs``, at most 128 characters, padded with newlines) with the network and
  step count of ``pipelines/flexmdm.yaml``; there is no exact law, so lengths are compared
  with the training paragraphs' length histogram, and the test paragraphs' own row shows how
  far a data set of that size lies from it.

Each part writes ``<part>.png`` (the histograms), ``<part>.md`` (the table: mean length, share
at the maximum length, TV and W1 distances to the exact law, the TV floor of exact samples,
malformed samples) and ``<part>.json`` under ``--out``.

Run::

    OMP_NUM_THREADS=2 python benchmarks/length_histograms.py --part oracle
    OMP_NUM_THREADS=2 python benchmarks/length_histograms.py --part trained --steps 1500
    OMP_NUM_THREADS=2 python benchmarks/length_histograms.py --part corpus --steps 3600 --sample-steps 128
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor

import ddkit
from ddkit.contrib.lengths import length_report, malformed, sample_lengths
from ddkit.testing import OracleDenoiser
from ddkit.testing.insertion_oracles import EndMarkovChain, InsertionOracle

VOCAB, SEQ_LEN, END_PROBABILITY, CONCENTRATION, SEED = 8, 32, 0.08, 0.3, 0
BLOCK = 4
DATA = {"dataset": {"name": "markov_end", "vocab_size": VOCAB, "end_probability": END_PROBABILITY,
                    "concentration": CONCENTRATION, "seed": SEED, "train_sequences": 20000,
                    "validation_sequences": 1000, "test_sequences": 4000},
        "seq_len": SEQ_LEN}


def chain() -> EndMarkovChain:
    return ddkit.build("dataset", "markov_end", **{k: v for k, v in DATA["dataset"].items() if k != "name"}).chain(SEQ_LEN)


FLEX_LATE = "FlexMDM, insertion 1 - t^2"


def samplers(steps: int, *, oracle: bool = False) -> dict[str, dict]:
    late = {FLEX_LATE: {"name": "flexmdm_tau_leaping", "steps": steps}} if oracle else {}
    return {"FlexMDM": {"name": "flexmdm_tau_leaping", "steps": steps}, **late,
            "masked diffusion + padding": {"name": "ancestral", "steps": steps},
            "block diffusion + END stop": {"name": "semi_ar", "block_length": BLOCK, "eos_id": VOCAB,
                                           "sampler": {"name": "ancestral", "steps": max(1, steps * BLOCK // SEQ_LEN)}}}


def lengths_of(result: ddkit.SampleResult) -> tuple[torch.Tensor, torch.Tensor]:
    """Lengths (the sampler's, or the tokens before the first END) and malformed rows."""
    lengths = sample_lengths(result.tokens, end_id=VOCAB, lengths=result.lengths)
    return lengths, malformed(result.tokens, end_id=VOCAB)


def oracle_part(num: int, steps: int, seed: int) -> tuple[dict, dict, dict]:
    law = chain()
    masked = ddkit.build("process", "masked", vocab_size=VOCAB + 1, schedule="linear")
    insertion = ddkit.build("process", "insertion", vocab_size=VOCAB + 1)
    late = ddkit.build("process", "insertion", vocab_size=VOCAB + 1, insertion={"name": "polynomial", "exponent": 2})
    denoisers = {"FlexMDM": (InsertionOracle(law, insertion.insertion), insertion),
                 FLEX_LATE: (InsertionOracle(law, late.insertion), late),
                 "masked diffusion + padding": (OracleDenoiser(law.padded_chain(), masked), masked),
                 "block diffusion + END stop": (OracleDenoiser(law.padded_chain(), masked), masked)}
    lengths, bad, extra = {"exact samples": sample_lengths(law.sample(num, torch.Generator().manual_seed(seed)),
                                                          end_id=VOCAB)}, {}, {}
    for name, spec in samplers(steps, oracle=True).items():
        denoiser, process = denoisers[name]
        start = time.perf_counter()
        result = ddkit.build("sampler", spec).sample(denoiser, process, num_samples=num, length=SEQ_LEN,
                                                     generator=torch.Generator().manual_seed(seed))
        lengths[name], bad[name] = lengths_of(result)
        extra[name] = {"nfe": result.nfe, "seconds": time.perf_counter() - start, **result.info}
    return lengths, bad, extra


def trained_configs(steps: int, sample_steps: int) -> dict[str, dict]:
    model = {"width": 64, "depth": 2, "heads": 4, "max_seq_len": SEQ_LEN}
    train = {"steps": steps, "batch_size": 64, "lr": 2e-3, "warmup_steps": 50, "ema_decay": 0.99,
             "log_every": 100, "eval_every": steps, "checkpoint_every": steps // 2, "progress": False}
    common = {"seed": SEED, "data": DATA, "train": train, "eval": {"time_samples": 8, "split": "test"},
              "sample": {"num_samples": 4, "show": False}}
    flex, mdm, bd3 = samplers(sample_steps).values()
    return {
        "FlexMDM": {**common, "name": "lengths-flexmdm", "model": {"name": "flex_dit", **model},
                    "process": {"name": "insertion"}, "parameterization": {"name": "mean", "time_conditioning": True},
                    "loss": {"name": "flexmdm"}, "sampler": flex},
        "masked diffusion + padding": {**common, "name": "lengths-mdm", "model": {"name": "dit", **model},
                                       "process": {"name": "masked", "schedule": "linear"},
                                       "loss": {"name": "continuous_elbo"}, "sampler": mdm},
        "block diffusion + END stop": {**common, "name": "lengths-bd3",
                                       "model": {"name": "block_dit", "block_length": BLOCK, **model},
                                       "process": {"name": "masked", "schedule": "linear"},
                                       "loss": {"name": "block_elbo", "block_length": BLOCK},
                                       "sampler": {**bd3, "kv_cache": True}},
    }


def train_and_sample(name: str, config: dict, out: Path, num: int, length: int, seed: int) -> dict:
    """Train ``config`` into ``out / config['name']`` unless that run has finished, then draw
    ``num`` sequences of ``length`` with the run's sampler. Returns the sample ``result``, the
    test bound in nats per sequence, the parameter count and the sampling seconds."""
    from ddkit.contrib.pipeline import AutocastDenoiser
    from ddkit.contrib.pipeline_config import load_pipeline
    from ddkit.contrib.runner import load_run, run_pipeline

    run_dir = out / config["name"]
    if not (run_dir / "eval.json").is_file():
        start = time.perf_counter()
        run_pipeline(load_pipeline(config), run_dir, log=lambda *a, **k: None)
        print(f"trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
    pipeline, _ = load_run(run_dir)
    sampler = pipeline.sampler
    start = time.perf_counter()
    result = sampler.sample(AutocastDenoiser(pipeline.model, pipeline), pipeline.process, num_samples=num,
                            length=length, generator=torch.Generator().manual_seed(seed),
                            parameterization=pipeline.parameterization_for(sampler))
    seconds = time.perf_counter() - start
    nats = json.loads((run_dir / "eval.json").read_text())["continuous"]["nats_per_token"] * length
    return {"result": result, "nats": nats, "seconds": seconds,
            "parameters": sum(p.numel() for p in pipeline.model.parameters())}


def trained_part(num: int, steps: int, sample_steps: int, seed: int, out: Path) -> tuple[dict, dict, dict]:
    law = chain()
    test = chain().sample(num, torch.Generator().manual_seed(seed))
    lengths, bad, extra = {"test split (data)": sample_lengths(test, end_id=VOCAB)}, {}, {}
    mean_length = float((law.length_probs() * torch.arange(SEQ_LEN + 1)).sum())
    for name, config in trained_configs(steps, sample_steps).items():
        run = train_and_sample(name, config, out, num, SEQ_LEN, seed)
        result, nats = run["result"], run["nats"]
        lengths[name], bad[name] = lengths_of(result)
        extra[name] = {"nfe": result.nfe, "bound_nats_per_sequence": nats,
                       "bound_bits_per_char": nats / mean_length / math.log(2),
                       "parameters": run["parameters"], **result.info}
    # the FlexMDM bound of the exact denoiser: how far above the entropy the bound itself lies
    process = ddkit.build("process", "insertion", vocab_size=VOCAB + 1)
    loss = ddkit.build("loss", "flexmdm", process=process)
    draws = 4
    rows = test[:1000].repeat(draws, 1)
    nats = float(loss(InsertionOracle(law, process.insertion), rows,
                      generator=torch.Generator().manual_seed(seed)).nats.sum(-1).mean())
    extra["FlexMDM bound, exact oracle"] = {"nats_per_sequence": nats,
                                            "bits_per_char": nats / mean_length / math.log(2),
                                            "sequences": 1000, "time_samples": draws}
    entropy = law.entropy()
    extra["exact entropy"] = {"nats_per_sequence": entropy, "bits_per_char": entropy / mean_length / math.log(2)}
    return lengths, bad, extra


CORPUS_LEN, CORPUS_BLOCK = 128, 4
CORPUS_BIN = 8  # 89 test paragraphs over 129 lengths: the TV per length would be mostly noise
CORPUS_DATA = {"dataset": {"name": "pydoc_paragraphs", "validation_fraction": 0.1, "test_fraction": 0.1},
               "seq_len": CORPUS_LEN}


def corpus_configs(steps: int, sample_steps: int, pad_id: int) -> dict[str, dict]:
    """The three trainings on the paragraphs: ``pipelines/flexmdm.yaml``'s network, optimiser and
    steps for each; samplers at temperature 1 (the model's own length law)."""
    model = {"width": 64, "depth": 4, "heads": 4, "max_seq_len": CORPUS_LEN}
    train = {"steps": steps, "batch_size": 32, "lr": 3e-3, "warmup_steps": 100, "lr_schedule": "cosine",
             "ema_decay": 0.995, "log_every": 200, "eval_every": steps, "checkpoint_every": steps // 2,
             "progress": False}
    common = {"seed": SEED, "data": CORPUS_DATA, "train": train, "eval": {"time_samples": 8, "split": "test"},
              "sample": {"num_samples": 4, "show": False}}
    per_block = max(1, sample_steps * CORPUS_BLOCK // CORPUS_LEN)
    return {
        "FlexMDM": {**common, "name": "corpus-flexmdm", "model": {"name": "flex_dit", **model},
                    "process": {"name": "insertion"}, "parameterization": {"name": "mean", "time_conditioning": True},
                    "loss": {"name": "flexmdm", "time_sampling": "antithetic"},
                    "sampler": {"name": "flexmdm_tau_leaping", "steps": sample_steps}},
        "masked diffusion + padding": {**common, "name": "corpus-mdm", "model": {"name": "dit", **model},
                                       "process": {"name": "masked", "schedule": "linear"},
                                       "loss": {"name": "continuous_elbo", "time_sampling": "antithetic"},
                                       "sampler": {"name": "ancestral", "steps": sample_steps}},
        "block diffusion + END stop": {**common, "name": "corpus-bd3",
                                       "model": {"name": "block_dit", "block_length": CORPUS_BLOCK, **model},
                                       "process": {"name": "masked", "schedule": "linear"},
                                       "loss": {"name": "block_elbo", "block_length": CORPUS_BLOCK},
                                       "sampler": {"name": "semi_ar", "block_length": CORPUS_BLOCK, "eos_id": pad_id,
                                                   "kv_cache": True,
                                                   "sampler": {"name": "ancestral", "steps": per_block}}},
    }


def corpus_part(num: int, steps: int, sample_steps: int, seed: int, out: Path) -> tuple[dict, dict, dict, Tensor]:
    dataset = {k: v for k, v in CORPUS_DATA["dataset"].items() if k != "name"}
    splits = ddkit.build("dataset", "pydoc_paragraphs", **dataset).load(None, CORPUS_LEN)
    pad_id = splits.info["pad_id"]
    train_lengths = sample_lengths(splits["train"].tokens.long(), end_id=pad_id)
    test = splits["test"].tokens.long()
    lengths, bad = {"test paragraphs (data)": sample_lengths(test, end_id=pad_id)}, {}
    mean_length = float(lengths["test paragraphs (data)"].double().mean())
    extra = {"data": {"paragraphs": splits.info["paragraphs"], "left_out": splits.info["left_out"],
                      "test_mean_characters": mean_length}}
    for name, config in corpus_configs(steps, sample_steps, pad_id).items():
        run = train_and_sample(name, config, out, num, CORPUS_LEN, seed)
        result, nats = run["result"], run["nats"]
        lengths[name] = sample_lengths(result.tokens, end_id=pad_id, lengths=result.lengths)
        bad[name] = malformed(result.tokens, end_id=pad_id)
        extra[name] = {"nfe": result.nfe, "sampling_seconds": run["seconds"],
                       "bound_nats_per_paragraph": nats, "bound_bits_per_char": nats / mean_length / math.log(2),
                       "parameters": run["parameters"], **result.info}
    return lengths, bad, extra, train_lengths


def write(part: str, lengths: dict, bad: dict, extra: dict, out: Path, note: str, *,
          reference: Tensor | None = None, max_length: int = SEQ_LEN,
          reference_name: str = "exact length law", bin_width: int = 1) -> None:
    report = length_report(lengths, chain().length_probs() if reference is None else reference,
                           max_length=max_length, reference_name=reference_name, malformed_counts=bad,
                           bin_width=bin_width)
    out.mkdir(parents=True, exist_ok=True)
    report.plot(out / f"{part}.png", title=note)
    lines = [report.table(), "", "| method | details |", "|---|---|"]
    lines += [f"| {name} | {json.dumps(values, default=float)} |" for name, values in extra.items()]
    (out / f"{part}.md").write_text("\n".join(lines) + "\n")
    (out / f"{part}.json").write_text(json.dumps({**report.to_json(), "details": extra}, indent=1, default=float))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["oracle", "trained", "corpus", "all"], default="all")
    parser.add_argument("--num", type=int, default=4000, help="samples per method")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (trained part)")
    parser.add_argument("--sample-steps", type=int, default=64, help="sampling steps (block diffusion: per block, "
                        "scaled so that the total is the same)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lengths"))
    args = parser.parse_args()
    if args.part in ("oracle", "all"):
        write("oracle", *oracle_part(args.num, args.sample_steps, args.seed), args.out,
              f"markov_end (V = {VOCAB}, N = {SEQ_LEN}): exact denoisers, {args.sample_steps} steps")
    if args.part in ("trained", "all"):
        write("trained", *trained_part(args.num, args.steps, args.sample_steps, args.seed, args.out), args.out,
              f"markov_end (V = {VOCAB}, N = {SEQ_LEN}): trained, {args.steps} steps each")
    if args.part in ("corpus", "all"):
        lengths, bad, extra, train_lengths = corpus_part(args.num, args.steps, args.sample_steps, args.seed, args.out)
        write("corpus", lengths, bad, extra, args.out,
              f"pydoc paragraphs (N = {CORPUS_LEN}): trained, {args.steps} steps each, {args.sample_steps} NFE",
              reference=train_lengths, max_length=CORPUS_LEN, reference_name="training paragraphs",
              bin_width=CORPUS_BIN)


if __name__ == "__main__":
    main()
