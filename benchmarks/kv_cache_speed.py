r"""Semi-autoregressive sampling of a block-causal model with and without the KV cache.

``semi_ar`` over blocks of ``L'`` with ``ancestral`` inside (``L'`` steps per block) on an
untrained ``block_dit`` (speed does not depend on the weights): without the cache every
denoiser call runs the whole sequence of ``N`` tokens; with it a call runs the block's
``L'`` tokens against the cached keys and values, plus one commit pass per finished block.
Both draw from the same seed and must give the same tokens (checked, and reported).
Tokens per second are medians over ``--repeats`` timed draws after one warm-up draw.

    python benchmarks/kv_cache_speed.py                      # N = 1024, L' = 16
    python benchmarks/kv_cache_speed.py --length 256 --block 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import ddkit


def draw(model, process, sampler, batch: int, length: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    result = sampler.sample(model, process, num_samples=batch, length=length, generator=generator)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=1024, help="N")
    parser.add_argument("--block", type=int, default=16, help="L'")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = ddkit.build("model", "block_dit", vocab_size=args.vocab, width=args.width, depth=args.depth,
                        heads=args.heads, block_length=args.block, max_seq_len=args.length).to(args.device).eval()
    process = ddkit.build("process", "masked", vocab_size=args.vocab, schedule="linear")
    rows, tokens = {}, {}
    with torch.inference_mode():
        for cached in (False, True):
            sampler = ddkit.build("sampler", "semi_ar", block_length=args.block, kv_cache=cached,
                                  sampler={"name": "ancestral", "steps": args.block})
            draw(model, process, sampler, args.batch, args.length, seed=0)  # warm-up
            times = []
            for _ in range(args.repeats):
                result, seconds = draw(model, process, sampler, args.batch, args.length, seed=1)
                times.append(seconds)
            name = "cached" if cached else "uncached"
            tokens[name] = result.tokens
            median = statistics.median(times)
            rows[name] = {"seconds": median, "tokens_per_s": args.batch * args.length / median, "nfe": result.nfe,
                          "commit_passes": result.info.get("commit_passes", 0), "all_seconds": times}
    same = bool(torch.equal(tokens["cached"], tokens["uncached"]))
    report = {"length": args.length, "block_length": args.block, "batch": args.batch,
              "model": {"width": args.width, "depth": args.depth, "heads": args.heads, "vocab": args.vocab},
              "device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.machine(), "rows": rows, "speedup": rows["uncached"]["seconds"] / rows["cached"]["seconds"],
              "same_tokens": same}
    for name, row in rows.items():
        print(f"{name:9s} {row['seconds']:8.2f} s  {row['tokens_per_s']:10.1f} tokens/s  NFE {row['nfe']}  "
              f"commit passes {row['commit_passes']}")
    print(f"speed-up from the cache: {report['speedup']:.1f}x; identical tokens: {same}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=1)
    if not same:
        raise SystemExit("cached and uncached samples differ")
    return report


if __name__ == "__main__":
    main()
