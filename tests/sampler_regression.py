"""Cases for the sampler regression test: every built-in sampler, on several processes and
options, with a fixed seed. ``tests/data/sampler_regression.json`` holds the samples that the
implementation before the composable sampler protocol (commit 30326ba) produced for these
cases; ``test_sampler_regression.py`` checks that today's samplers give them bit for bit.

Re-record only on purpose (a deliberate change of a sampler's law or of its use of the
random stream)::

    python tests/sampler_regression.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import ddkit

DATA = Path(__file__).parent / "data" / "sampler_regression.json"

V, N, B = 5, 7, 3


def denoiser(x_t, t):
    """A fixed, seed-independent function of ``x_t`` and ``t``: logits from a table of
    per-(position, token) weights, a neighbour interaction and a time term."""
    table = torch.sin(torch.arange(N * (V + 1) * V, dtype=torch.float32).reshape(N, V + 1, V) * 1.7)
    rows = table[torch.arange(x_t.shape[1]) % N][None].expand(x_t.shape[0], -1, -1, -1)
    logits = torch.gather(rows, 2, x_t[..., None, None].expand(-1, -1, 1, V)).squeeze(2) * 2.0
    left = torch.roll(x_t, 1, dims=1).float()[..., None]
    logits = logits + 0.3 * torch.cos(left * torch.arange(V, dtype=torch.float32))
    t = torch.as_tensor(t, dtype=torch.float32)
    t = t[:, None, None] if t.dim() == 1 else t[..., None]
    return logits + 1.5 * t * torch.cos(torch.arange(V, dtype=torch.float32) * 0.9)


def prompt() -> torch.Tensor:
    p = torch.full((B, N), -1, dtype=torch.long)
    p[:, 0] = torch.tensor([1, 2, 3])
    p[1, 4] = 0
    p[2, 6] = 4
    return p


PROCESSES = {
    "masked-linear": {"name": "masked", "schedule": "linear"},
    "masked-cosine": {"name": "masked", "schedule": "cosine"},
    "masked-loglinear": {"name": "masked", "schedule": "loglinear"},
    "uniform": {"name": "uniform", "schedule": "cosine"},
    "uniform-loglinear": {"name": "uniform", "schedule": "loglinear"},
    "matrix-gaussian": {"name": "matrix", "generator": "gaussian", "width": 1.0},
}

CASES = [
    ("ancestral", {"steps": 6}, "masked-linear"),
    ("ancestral", {"steps": 6, "backend": "torch"}, "masked-linear"),
    ("ancestral", {"steps": 9, "grid": "cosine", "temperature": 0.7, "top_k": 3}, "masked-cosine"),
    ("ancestral", {"steps": 5, "top_p": 0.8, "final_argmax": True, "cache": False}, "masked-linear"),
    ("ancestral", {"steps": 5, "parameterization": {"name": "mean", "time_conditioning": True}}, "masked-cosine"),
    ("ancestral", {"steps": 64}, "masked-linear"),
    ("ancestral", {"steps": 6, "temperature": 0.0}, "masked-linear"),
    ("ancestral", {"steps": 6}, "uniform"),
    ("ancestral", {"steps": 4, "temperature": 0.5, "top_k": 2, "final_argmax": True}, "uniform"),
    ("ancestral", {"steps": 4, "parameterization": {"name": "mean", "time_conditioning": True}}, "matrix-gaussian"),
    ("euler", {"steps": 6}, "masked-linear"),
    ("euler", {"steps": 8, "grid": "cosine", "temperature": 0.8, "top_p": 0.9}, "masked-cosine"),
    ("euler", {"steps": 6, "parameterization": "score"}, "masked-loglinear"),
    ("euler", {"steps": 6}, "uniform"),
    ("euler", {"steps": 6, "parameterization": "score", "final_argmax": True}, "uniform-loglinear"),
    ("euler", {"steps": 5, "top_k": 2, "cache": False}, "matrix-gaussian"),
    ("analytic", {"steps": 6}, "masked-linear"),
    ("analytic", {"steps": 6, "parameterization": "score"}, "masked-loglinear"),
    ("analytic", {"steps": 5, "temperature": 0.6}, "uniform"),
    ("analytic", {"steps": 5, "parameterization": "score"}, "uniform-loglinear"),
    ("analytic", {"steps": 4}, "matrix-gaussian"),
    ("first_hitting", {}, "masked-linear"),
    ("first_hitting", {"temperature": 0.5, "top_k": 3}, "masked-cosine"),
    ("first_hitting", {"backend": "torch", "top_p": 0.7}, "masked-linear"),
    ("first_hitting", {"parameterization": {"name": "mean", "time_conditioning": True}}, "masked-cosine"),
]


def case_id(i: int) -> str:
    name, params, process = CASES[i]
    return f"{i}-{name}-{process}-" + "-".join(f"{k}={v}" for k, v in sorted(params.items()))


def run_case(i: int, *, with_prompt: bool) -> dict:
    name, params, process_name = CASES[i]
    process = ddkit.build("process", {**PROCESSES[process_name], "vocab_size": V})
    sampler = ddkit.build("sampler", {"name": name, **params})
    generator = torch.Generator().manual_seed(1000 + i)
    kwargs = {"prompt": prompt()} if with_prompt else {"num_samples": B, "length": N}
    result = sampler.sample(denoiser, process, generator=generator, record_trajectory=True, **kwargs)
    return {
        "tokens": result.tokens.tolist(),
        "nfe": result.nfe,
        "steps": result.steps,
        "trajectory": [x.tolist() for x in result.trajectory],
    }


def record() -> dict:
    return {f"{case_id(i)}-{'prompt' if p else 'free'}": run_case(i, with_prompt=p)
            for i in range(len(CASES)) for p in (False, True)}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/sampler_regression.py --write")
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_text(json.dumps(record(), separators=(",", ":")) + "\n")
    print(f"wrote {DATA}")
