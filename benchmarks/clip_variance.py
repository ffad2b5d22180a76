r"""BD3-LM's clipped-noise variance table on a trained block-diffusion run.

For every candidate interval :math:`[\beta, \omega]` of mask rates
(:meth:`ddkit.plugins.losses.block_elbo.BlockELBO.candidate_intervals`: the full range and
BD3-LM's 36 intervals of widths 0.5 … 0.9) the variance of the per-block NELBO over the
blocks of each validation batch, summed over the batches
(:meth:`~ddkit.plugins.losses.block_elbo.BlockELBO.interval_variances`, one noise seed for all
intervals), with the mean clipped loss beside it (biased: not a bound). This is the table the
``clip: search`` option minimises at each validation.

    python benchmarks/clip_variance.py runs/bd3
    python benchmarks/clip_variance.py runs/bd3 --batches 4 --json out.json
"""

from __future__ import annotations

import argparse
import json

import torch

from ddkit.contrib.pipeline import AutocastDenoiser
from ddkit.contrib.runner import load_run


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run of pipelines/bd3.yaml (any block_elbo run)")
    parser.add_argument("--batches", type=int, default=4, help="validation batches")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)

    pipeline, _ = load_run(args.run, load_data=True, device="cpu")
    loss = pipeline.loss
    if not hasattr(loss, "interval_variances"):
        raise SystemExit(f"{args.run}: the loss is {type(loss).__name__}, not block_elbo")
    chunks = pipeline.data["validation"].chunks(pipeline.config.data.seq_len)
    batches = list(chunks[: args.batches * args.batch_size].split(args.batch_size))
    denoiser = AutocastDenoiser(pipeline.model, pipeline)
    rows = []
    with torch.no_grad():
        for interval, variance in loss.interval_variances(denoiser, batches, seed=args.seed):
            clipped = loss.clipped(None if interval == (loss.t_min, 1.0) else interval)
            generator = torch.Generator().manual_seed(args.seed)
            nats = torch.cat([clipped(denoiser, b, generator=generator).nats.double().mean(-1) for b in batches])
            rows.append({"interval": list(interval), "variance": variance, "mean_nats": float(nats.mean())})
    rows.sort(key=lambda row: row["variance"])
    print(f"{'interval':>16}  {'variance':>10}  {'mean loss (nats/token)':>22}")
    for row in rows:
        low, high = row["interval"]
        print(f"  [{low:5.3f}, {high:5.3f}]  {row['variance']:10.4f}  {row['mean_nats']:22.4f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"run": args.run, "block_length": loss.block_length, "rows": rows}, out, indent=1)
    return rows


if __name__ == "__main__":
    main()
