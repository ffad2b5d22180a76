"""Corrector overhead: ancestral sampling with a corrector against a hand-written loop of the
same math, with a trivial denoiser (precomputed logits), so that only the samplers' own work
is timed.

* ``forward_backward`` on the masked process (linear schedule, uniform grid): after each
  predictor step but the last, masks unmask w.p. ``1 - exp(-h / (1 - alpha_s))`` to a draw from
  the logits and clean tokens are masked w.p. ``1 - exp(-h / alpha_s)``, ``h = 1.5 (t - s)``;
* ``informed`` (``k = 4``, ``tau = 1``): the 4 clean tokens of lowest log-probability plus
  Gumbel noise are redrawn from their rows.

Both hand-written loops draw the same uniforms in the same order as ddkit, so the samples are
identical (reported per row). Rows alternate the two runs (:func:`run.time_pair`); the target
is ddkit / hand-written <= 1.1 on the CPU with the Numba backend. Shapes are ``run.py``'s
``(B, N, V)``.

    python benchmarks/correctors_speed.py                  # prints the table
    python benchmarks/correctors_speed.py --shapes 0,1 --json benchmarks/results/correctors/cpu-1thread.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import ddkit
from run import SHAPES, _inverse_cdf, machine_info, sampler_against_hand_loop, table  # benchmarks/run.py, next to this

STEPS = 64
MULTIPLIER = 1.5
K, TAU = 4, 1.0


class Logits:
    """A denoiser that returns fixed logits; ``hollow`` declares the capability the informed
    corrector checks (the logits do not depend on the input at all)."""

    hollow = True

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, x_t, t):
        return self.logits


def predictor_step(x, logits, i, steps, generator):
    """ddkit's ancestral step on the linear schedule: masks unmask w.p. (alpha_s - alpha_t) /
    (1 - alpha_t) (1 on the last step) to the float64 inverse CDF of their logits row."""
    B, N, V = logits.shape
    t, s = (steps - i) / steps, (steps - i - 1) / steps
    alpha_s, alpha_t = 1.0 - s, 1.0 - t
    p = 1.0 if i == steps - 1 else (alpha_s - alpha_t) / (1.0 - alpha_t)
    return unmask(x, logits, p, generator), t, s


def unmask(x, logits, p, generator):
    B, N, V = logits.shape
    u_move = torch.rand(B, N, generator=generator, dtype=torch.float64)
    u_token = torch.rand(B, N, generator=generator, dtype=torch.float64)
    moving = ((x == V) & (u_move < p)).nonzero(as_tuple=True)
    x = x.clone()
    x[moving] = _inverse_cdf(logits[moving].double(), u_token[moving])
    return x


def hand_written_forward_backward(logits, steps, generator):
    B, N, V = logits.shape
    x = torch.full((B, N), V, dtype=torch.long)
    for i in range(steps):
        x, t, s = predictor_step(x, logits, i, steps, generator)
        if i == steps - 1:
            break
        h = MULTIPLIER * (t - s)
        alpha = 1.0 - s
        clean = x != V
        rates = torch.tensor([1.0 / (1.0 - alpha), 1.0 / alpha], dtype=torch.float64)  # lambda_s, beta_s
        p_unmask, p_remask = -torch.expm1(-(h * rates))
        x = unmask(x, logits, p_unmask, generator)
        u = torch.rand(B, N, generator=generator, dtype=torch.float64)
        x[clean & (u < p_remask)] = V
    return x


def hand_written_informed(logits, steps, generator):
    B, N, V = logits.shape
    x = torch.full((B, N), V, dtype=torch.long)
    for i in range(steps):
        x, _, _ = predictor_step(x, logits, i, steps, generator)
        if i == steps - 1:
            break
        clean = x != V
        rows = logits[clean].double()
        current = torch.zeros(B, N, dtype=torch.float64)
        current[clean] = rows.gather(-1, x[clean][:, None]).squeeze(-1) - torch.logsumexp(rows, -1)
        u = torch.rand(B, N, generator=generator, dtype=torch.float64).clamp_min(torch.finfo(torch.float64).tiny)
        priority = TAU * -torch.log(-torch.log(u)) - current
        key = (-priority).masked_fill(~clean, float("nan"))  # NaN sorts last: never chosen
        rank = key.argsort(dim=-1, stable=True).argsort(dim=-1)
        chosen = clean & (rank < K)
        u_token = torch.rand(B, N, generator=generator, dtype=torch.float64)
        x[chosen] = _inverse_cdf(logits[chosen].double(), u_token[chosen])
    return x


CASES = {
    "forward_backward": ({"name": "forward_backward", "step_multiplier": MULTIPLIER}, hand_written_forward_backward),
    "informed": ({"name": "informed", "k": K, "temperature": TAU}, hand_written_informed),
}


def bench(shapes, budget_s, log):
    rows = []
    for shape in shapes:
        B, N, V = shape
        logits = torch.randn(B, N, V, generator=torch.Generator().manual_seed(1)) * 3
        denoiser = Logits(logits)
        process = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
        for name, (corrector, hand) in CASES.items():
            sampler = ddkit.build("sampler", "ancestral", steps=STEPS, backend="numba", cache=False, corrector=corrector)
            rows.append(sampler_against_hand_loop(
                "correctors", f"ancestral {STEPS} steps + {name}, backend=numba", "ddkit ancestral + corrector",
                sampler, process, logits, lambda gen, hand=hand: hand(logits, STEPS, gen), torch.device("cpu"),
                budget_s, denoiser=denoiser))
            log(rows[-1])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="0,1", help="indices into run.py's (B, N, V) shapes")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per row")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows there")
    args = parser.parse_args()
    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")]
    info = machine_info(torch.device("cpu"))
    print("machine:", json.dumps(info))
    started = time.perf_counter()
    rows = bench(shapes, args.budget, lambda r: print(f"[{r['section']}] {r['name']} {r['shape']}: ratio "
                                                       f"{r['ratio']:.3g} {r['note']}", flush=True))
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "seconds": round(time.perf_counter() - started, 1),
                                         "rows": rows}, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
