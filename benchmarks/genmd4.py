"""GenMD4 against MD4 (one and two draws of x_t per time) at an equal training budget.

Three runs of ``pipelines/genmd4.yaml`` that differ only in the schedule and the number of
draws (same network, data, steps, batch, learning rate, seed, evaluation):

* ``genmd4``: the learnable per-character schedule, two draws per time (REINFORCE LOO);
* ``md4-2``: the linear schedule, two draws per time (the same loss and cost per step);
* ``md4-1``: the linear schedule, one draw per time (half the network evaluations per step);
* ``md4-1-long``: the same for twice the steps (as many network evaluations as the others).

Each run is ``ddkit run`` (training, validation NELBO with the EMA weights, samples). The
script writes ``results.json``: validation bits/char with its standard error; each run's
difference from ``md4-2`` paired over the same validation sequences (their variation cancels);
the learned exponent of every character with its frequency in the training text. The figure
shows the learned exponents per character and the validation curves.

    python benchmarks/genmd4.py --steps 1200 --out runs/genmd4-compare --figures docs
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

#: name -> (overrides, steps as a multiple of --steps, draws of x_t per time)
VARIANTS = {
    "genmd4": ([], 1, 2),
    "md4-2": (["process.schedule=linear"], 1, 2),
    "md4-1": (["process.schedule=linear", "loss.samples=1"], 1, 1),
    "md4-1-long": (["process.schedule=linear", "loss.samples=1"], 2, 1),  # as many network passes as 2 draws
}
ROOT = Path(__file__).resolve().parents[1]
#: characters rarer than this in the training text are left out of the figure and the ranking
MIN_FREQUENCY = 1e-3


def run_variant(name: str, overrides: list[str], steps: int, out: Path) -> Path:
    run_dir = out / name
    if (run_dir / "eval.json").is_file():
        return run_dir  # done before: keep it
    every = max(1, steps // 4)
    command = [sys.executable, "-m", "ddkit.cli", "run", str(ROOT / "pipelines" / "genmd4.yaml"), *overrides,
               f"train.steps={steps}", f"train.eval_every={every}", f"train.checkpoint_every={every}",
               "train.progress=false", "--out", str(run_dir)]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    return run_dir


def learned_exponents(run_dir: Path) -> list[dict]:
    """Every character's exponent w_v and its frequency in the training text."""
    from ddkit.contrib.runner import load_run

    pipeline, _ = load_run(run_dir, load_data=True)
    w = pipeline.process.schedule.exponents.detach().cpu()
    tokens = pipeline.data["train"].chunks(pipeline.config.data.seq_len).flatten()
    counts = torch.bincount(tokens, minlength=len(w)).double()
    frequency = counts / counts.sum()
    rows = [{"token": i, "char": pipeline.tokenizer.decode([i]), "exponent": float(w[i]),
             "frequency": float(frequency[i])} for i in range(len(w))]
    return sorted(rows, key=lambda r: -r["exponent"])


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (ties broken by order, fine for continuous values)."""
    ranks = [torch.tensor(values).argsort().argsort().double() for values in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


@torch.no_grad()
def per_sequence_nelbo(run_dir: Path, time_samples: int, seed: int = 0) -> torch.Tensor:
    """The run's NELBO of every validation sequence in bits/char, averaged over
    ``time_samples`` draws of the loss (its own number of x_t draws per time)."""
    from ddkit.contrib.runner import load_run

    pipeline, _ = load_run(run_dir, load_data=True)
    chunks = pipeline.data["validation"].chunks(pipeline.config.data.seq_len)
    loss = pipeline.eval_loss()
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(len(chunks), dtype=torch.float64)
    for _ in range(time_samples):
        for start in range(0, len(chunks), 64):
            batch = chunks[start:start + 64]
            total[start:start + len(batch)] += loss(pipeline.model, batch, generator=generator).nats.double().mean(-1)
    return total / time_samples / math.log(2)


def paired_differences(out: Path, time_samples: int) -> dict[str, dict[str, float]]:
    """Each run against md4-2 on the same validation sequences: the mean per-sequence
    difference in bits/char and its standard error (sequence-to-sequence variation, shared by
    the runs, cancels)."""
    values = {name: per_sequence_nelbo(out / name, time_samples) for name in VARIANTS}
    reference = values["md4-2"]
    differences = {}
    for name, value in values.items():
        if name != "md4-2":
            diff = value - reference
            differences[f"{name} - md4-2"] = {"mean": float(diff.mean()),
                                              "standard_error": float(diff.std() / math.sqrt(len(diff)))}
    return differences


def validation_curve(run_dir: Path) -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [(r["step"], r["bits_per_token"]) for r in records if r["split"] == "validation"]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["exponents"] if r["frequency"] >= MIN_FREQUENCY]
    fig, (ax_w, ax_curve) = plt.subplots(2, 1, figsize=(11, 7.5), gridspec_kw={"height_ratios": [3, 2]})
    labels = ["␣" if r["char"] == " " else repr(r["char"])[1:-1] for r in rows]
    colours = plt.cm.viridis([min(1.0, math.log10(r["frequency"] / MIN_FREQUENCY) / 2) for r in rows])
    exponents = [r["exponent"] for r in rows]
    ax_w.bar(range(len(rows)), exponents, color=colours)
    ax_w.axhline(1.0, color="gray", lw=0.8, ls="--", label="initial w = 1 (linear schedule)")
    ax_w.set_ylim(min(exponents) - 0.05, max(exponents) + 0.05)
    ax_w.set_xticks(range(len(rows)), labels, fontsize=7)
    ax_w.set_ylabel("learned exponent w_v")
    ax_w.set_title(f"GenMD4 after {results['steps']} steps: alpha_(t,v) = 1 - t^(w_v), characters with frequency "
                   f">= {MIN_FREQUENCY:.1%}\n(colour: frequency, log scale, yellow >= {MIN_FREQUENCY * 100:.0%}); "
                   f"large w_v = masked late, unmasked early by the sampler", fontsize=10)
    ax_w.legend(loc="upper right")
    for name, run in results["runs"].items():
        steps, bits = zip(*run["validation_curve"])
        passes = [step * run["draws"] for step in steps]
        ax_curve.plot(passes, bits, "o-", label=f"{name} ({run['steps']} steps x {run['draws']} draws): "
                                                f"{run['bits_per_char']:.3f} ± {run['bits_se']:.3f}")
    ax_curve.set_xlabel("network passes per training sequence (steps x draws)")
    ax_curve.set_ylabel("validation NELBO, bits/char")
    ax_curve.legend()
    ax_curve.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3600, help="optimizer steps per run (the quickstart's 3600)")
    parser.add_argument("--out", type=Path, default=Path("runs/genmd4-compare"))
    parser.add_argument("--figures", type=Path, default=None, help="also write the figure into this folder")
    parser.add_argument("--time-samples", type=int, default=32, help="loss draws per sequence for the paired comparison")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"steps": args.steps, "runs": {}}
    for name, (overrides, multiple, draws) in VARIANTS.items():
        run_dir = run_variant(name, overrides, multiple * args.steps, args.out)
        evaluation = json.loads((run_dir / "eval.json").read_text())["continuous"]
        results["runs"][name] = {"steps": multiple * args.steps, "draws": draws,
                                 "bits_per_char": evaluation["bits_per_token"],
                                 "bits_se": evaluation["bits_standard_error"],
                                 "validation_curve": validation_curve(run_dir)}
    results["paired"] = paired_differences(args.out, args.time_samples)
    results["exponents"] = learned_exponents(args.out / "genmd4")
    common = [r for r in results["exponents"] if r["frequency"] >= MIN_FREQUENCY]
    results["spearman_exponent_frequency"] = spearman([r["exponent"] for r in common],
                                                      [r["frequency"] for r in common])
    (args.out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    for folder in filter(None, (args.out, args.figures)):
        plot(results, folder / "genmd4_exponents.png")
    for name, run in results["runs"].items():
        print(f"{name:10s} {run['steps']} steps x {run['draws']} draws: {run['bits_per_char']:.4f} ± "
              f"{run['bits_se']:.4f} bits/char")
    for name, diff in results["paired"].items():
        print(f"{name}: {diff['mean']:+.4f} ± {diff['standard_error']:.4f} bits/char (paired over validation sequences)")
    common = [r for r in results["exponents"] if r["frequency"] >= MIN_FREQUENCY]
    print(f"characters with frequency >= {MIN_FREQUENCY:.1%}: {len(common)}; Spearman correlation of w_v with "
          f"frequency: {results['spearman_exponent_frequency']:.2f}")
    print("largest exponents (unmasked earliest):",
          ", ".join(f"{r['char']!r} {r['exponent']:.2f} ({r['frequency']:.2%})" for r in common[:12]))
    print("smallest exponents (unmasked latest):",
          ", ".join(f"{r['char']!r} {r['exponent']:.2f} ({r['frequency']:.2%})" for r in common[-12:]))


if __name__ == "__main__":
    main()
