"""The ddkit benchmark suite: prints a table and writes JSON.

Every row times a candidate against its baseline in the same process, alternating the two
round by round (so a change in machine load hits both alike), and reports medians and the
ratio ``baseline / candidate`` (> 1: the candidate is faster; for memory rows, the ratio of
peak extra bytes to the logits tensor).

Sections:

* ``kernels``: each operation of :mod:`ddkit.kernels`, Numba vs torch CPU eager (on
  ``--device cuda``: torch on the GPU vs the ``auto`` CPU backend), at (B, N, V) = (64, 256, 28),
  (16, 1024, 256), (4, 1024, 50257); target: Numba >= 2x at the first two shapes;
* ``memory``: peak extra memory of categorical sampling vs a float64 Gumbel-max over the
  whole tensor (CPU: peak RSS of a fresh process; CUDA: ``max_memory_allocated``);
  target <= 1.2x the logits tensor;
* ``sampler``: a full masked-diffusion sampling run (ancestral, 128 steps) with a trivial
  denoiser (precomputed logits) vs a minimal hand-written loop doing the same math;
  target <= 1.1x;
* ``decoders``: ancestral sampling with the ``remdm`` (rescale) and ``low_confidence``
  unmasking rules, 128 steps, against hand-written loops of the same math, at every shape;
  target <= 1.1x with the Numba backend;
* ``losses``: the masked process's score-entropy loss (mean parameterization, the closed-form
  score path) vs its continuous ELBO on the same draws at (B, N, V) = (4000, 32, 27): the
  same nats, at a cost that should stay a small multiple (before the score path was
  vectorised it looped over the distinct times, ~250x);
* ``train``: training throughput vs a bare PyTorch loop, from ``benchmarks/train_throughput.py``
  when that script exists; target >= 0.95.

    python benchmarks/run.py                          # everything on CPU -> benchmarks/results/cpu.json
    python benchmarks/run.py --sections kernels,memory --quick
    python benchmarks/run.py --device cuda --json "$OUT/bench-cuda.json"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import ddkit
import ddkit.kernels as K

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(64, 256, 28), (16, 1024, 256), (4, 1024, 50257)]
SPEED_TARGET_SHAPES = SHAPES[:2]


# -- timing ----------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


#: a sample shorter than this repeats the call, so that timer resolution and one-off
#: interruptions do not decide the ratio of microsecond-scale operations
MIN_SAMPLE_S = 2e-3


def time_pair(baseline, candidate, device: torch.device, *, budget_s: float, max_rounds: int = 15):
    """Median seconds per call of ``baseline()`` and ``candidate()``, alternating, after one
    warm-up call each; as many rounds as fit in ``budget_s`` (at least 3, or 1 for very slow
    calls). A sample times enough back-to-back calls to last :data:`MIN_SAMPLE_S`."""
    times: dict[str, list[float]] = {"baseline": [], "candidate": []}

    def once(fn, calls=1):
        _sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        return (time.perf_counter() - start) / calls

    first_base, first_cand = once(baseline), once(candidate)
    calls_base = max(1, int(MIN_SAMPLE_S / max(first_base, 1e-9)))
    calls_cand = max(1, int(MIN_SAMPLE_S / max(first_cand, 1e-9)))
    first = first_base * calls_base + first_cand * calls_cand
    rounds = max(1 if first > budget_s else 3, min(max_rounds, int(budget_s / max(first, 1e-9))))
    for _ in range(rounds):
        times["baseline"].append(once(baseline, calls_base))
        times["candidate"].append(once(candidate, calls_cand))
    return statistics.median(times["baseline"]), statistics.median(times["candidate"]), rounds


def row(section, name, shape, baseline, candidate, base_value, cand_value, ratio, unit, target=None,
        met=None, rounds=None, note=""):
    return {"section": section, "name": name, "shape": list(shape) if shape else None, "baseline": baseline,
            "candidate": candidate, "baseline_value": base_value, "candidate_value": cand_value,
            "ratio": ratio, "unit": unit, "target": target, "met": met, "rounds": rounds, "note": note}


# -- kernels ---------------------------------------------------------------------------------


def kernel_cases(shape, device, gen):
    """(name, call(backend) -> result) for every kernel at one shape; inputs on ``device``."""
    B, N, V = shape
    logits = (torch.randn(B, N, V, generator=gen) * 3).to(device)
    u = torch.rand(B, N, generator=gen, dtype=torch.float64).to(device)
    u2 = torch.rand(B, N, generator=gen, dtype=torch.float64).to(device)
    x = torch.full((B, N), V, dtype=torch.long, device=device)  # all masked; a quarter unmask
    scores = torch.randn(B, N, generator=gen, dtype=torch.float64).to(device)
    eligible = (torch.rand(B, N, generator=gen) < 0.5).to(device)
    k = torch.full((B,), max(1, N // 8), dtype=torch.long, device=device)
    x0 = torch.randint(0, V, (B, N), generator=gen).to(device)
    alpha = torch.rand(B, generator=gen, dtype=torch.float64).to(device)
    return [
        ("categorical", lambda b: K.categorical(logits, u, backend=b)),
        ("categorical top-k=50", lambda b: K.categorical(logits, u, top_k=50, backend=b)),
        ("categorical top-p=0.9", lambda b: K.categorical(logits, u, top_p=0.9, backend=b)),
        ("masked_step p=1/4", lambda b: K.masked_step(x, logits, 0.25, u, u2, mask_id=V, backend=b)),
        ("commit_topk k=N/8", lambda b: K.commit_topk(scores, eligible, k, backend=b)),
        ("mask_noise", lambda b: K.mask_noise(x0, alpha, u, mask_id=V, backend=b)),
        ("uniform_noise", lambda b: K.uniform_noise(x0, alpha, u, u2, vocab_size=V, backend=b)),
        ("masked_step p=1/4, remasking", lambda b: K.masked_step(x0, logits, 0.25, u, u2, mask_id=V, remask_prob=alpha,
                                                                  u_remask=u, fixed=eligible, backend=b)),
    ]


def bench_kernels(device, budget_s, log):
    rows = []
    for shape in SHAPES:
        # the same seed for both copies: the CUDA inputs are the CPU inputs, moved
        cpu_cases = kernel_cases(shape, torch.device("cpu"), torch.Generator().manual_seed(0))
        if device.type == "cuda":
            dev_cases = kernel_cases(shape, device, torch.Generator().manual_seed(0))
        for index, (name, call) in enumerate(cpu_cases):
            if device.type == "cuda":
                dev_call = dev_cases[index][1]
                base, cand, rounds = time_pair(lambda: call("auto"), lambda: dev_call("torch"), device,
                                               budget_s=budget_s)
                same = torch.equal(call("auto"), dev_call("torch").cpu())
                cpu_name = K.resolve("auto", name.split()[0], "cpu").name
                rows.append(row("kernels", name, shape, f"{cpu_name} cpu", f"torch {device.type}", base * 1e3,
                                cand * 1e3, base / cand, "ms", rounds=rounds,
                                note="identical to CPU" if same else "DIFFERS from CPU"))
            else:
                base, cand, rounds = time_pair(lambda: call("torch"), lambda: call("numba"), device,
                                               budget_s=budget_s)
                same = torch.equal(call("torch"), call("numba"))
                targeted = tuple(shape) in SPEED_TARGET_SHAPES
                rows.append(row("kernels", name, shape, "torch cpu", "numba", base * 1e3, cand * 1e3, base / cand,
                                "ms", target=">= 2.0" if targeted else None,
                                met=(base / cand >= 2.0) if targeted else None, rounds=rounds,
                                note="identical outputs" if same else "OUTPUTS DIFFER"))
            log(rows[-1])
    return rows


# -- memory ----------------------------------------------------------------------------------

_PEAK_CPU = r"""
import gc, json, sys, torch, ddkit.kernels as K
torch.set_num_threads(int(sys.argv[2]))
B, N, V = json.loads(sys.argv[1])
for backend in ("numba", "torch"):
    K.categorical(torch.randn(4, 64), torch.rand(4, dtype=torch.float64), backend=backend)
logits = torch.randn(B, N, V)
u = torch.rand(B, N, dtype=torch.float64)
def gumbel_max():
    g = -torch.log(-torch.log(torch.rand(B, N, V, dtype=torch.float64)))
    return (logits.double() + g).argmax(-1)
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
out = {}
for name, fn in (("numba", lambda: K.categorical(logits, u, backend="numba")),
                 ("torch", lambda: K.categorical(logits, u, backend="torch")),
                 ("gumbel", gumbel_max)):
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")
    base = rss("VmRSS")
    fn()
    out[name] = rss("VmHWM") - base
print(json.dumps(out))
"""


def bench_memory(device, log):
    rows = []
    for shape in SHAPES:
        B, N, V = shape
        logits_bytes = B * N * V * 4
        if device.type == "cuda":
            peaks = _cuda_peaks(shape, device)
        else:
            if not os.access("/proc/self/clear_refs", os.W_OK):
                return [row("memory", "categorical peak", None, "", "", None, None, None, "x logits",
                            note="skipped: /proc/self/clear_refs not writable")]
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
            out = subprocess.run([sys.executable, "-c", _PEAK_CPU, json.dumps(shape), str(torch.get_num_threads())],
                                 capture_output=True, text=True, env=env, check=True)
            peaks = json.loads(out.stdout.strip().splitlines()[-1])
        for backend in [b for b in ("numba", "torch") if b in peaks]:
            ratio = peaks[backend] / logits_bytes
            rows.append(row("memory", f"categorical peak extra ({backend})", shape, "float64 Gumbel-max",
                            backend, peaks["gumbel"] / logits_bytes, ratio, ratio, "x logits",
                            target="<= 1.2", met=ratio <= 1.2,
                            note=f"logits {logits_bytes / 2 ** 20:.1f} MiB; Gumbel-max "
                                 f"{peaks['gumbel'] / 2 ** 20:.1f} MiB, {backend} {peaks[backend] / 2 ** 20:.2f} MiB"))
            log(rows[-1])
    return rows


def _cuda_peaks(shape, device):
    B, N, V = shape
    logits = torch.randn(B, N, V, device=device)
    u = torch.rand(B, N, dtype=torch.float64, device=device)

    def gumbel_max():
        g = -torch.log(-torch.log(torch.rand(B, N, V, dtype=torch.float64, device=device)))
        return (logits.double() + g).argmax(-1)

    peaks = {}
    for name, fn in (("torch", lambda: K.categorical(logits, u, backend="torch")), ("gumbel", gumbel_max)):
        fn()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated(device) - base
    return peaks


# -- sampler overhead ------------------------------------------------------------------------


def hand_written_loop(logits, steps, generator):
    """The minimal masked-diffusion ancestral loop on a linear schedule, uniform grid, with
    the same randomness and math as ddkit's ancestral sampler: per step each masked position
    unmasks iff u < (alpha_s - alpha_t) / (1 - alpha_t) and draws its token by the float64
    inverse CDF of its row of logits; only the rows that unmask are read."""
    B, N, V = logits.shape
    device = logits.device
    x = torch.full((B, N), V, dtype=torch.long, device=device)
    for i in range(steps):
        if not bool((x == V).any()):
            break
        t, s = (steps - i) / steps, (steps - i - 1) / steps  # the uniform grid, as ddkit.time_grid
        alpha_s, alpha_t = 1.0 - s, 1.0 - t  # the linear schedule
        p = 1.0 if i == steps - 1 else (alpha_s - alpha_t) / (1.0 - alpha_t)
        u_move = torch.rand(B, N, generator=generator, dtype=torch.float64, device=device)
        u_token = torch.rand(B, N, generator=generator, dtype=torch.float64, device=device)
        moving = ((x == V) & (u_move < p)).nonzero(as_tuple=True)
        rows = logits[moving].double()
        cdf = (rows - rows.amax(-1, keepdim=True)).exp().cumsum(-1)
        token = torch.searchsorted(cdf, u_token[moving][:, None] * cdf[:, -1:], right=True).squeeze(-1)
        x[moving] = token.clamp_max(V - 1)
    return x


def sampler_against_hand_loop(section, name, candidate, sampler, process, logits, hand, device, budget_s,
                              denoiser=None):
    """A row timing ``sampler`` on the precomputed ``logits`` (or on ``denoiser``, which
    returns them) against ``hand(generator)``, a hand-written loop of the same math, both from
    seed 2; notes whether the samples agree."""
    B, N, _ = logits.shape
    denoiser = denoiser if denoiser is not None else (lambda x_t, t: logits)

    def ddkit_run():
        gen = torch.Generator(device=device).manual_seed(2)
        return sampler.sample(denoiser, process, num_samples=B, length=N, generator=gen, device=device).tokens

    def hand_run():
        return hand(torch.Generator(device=device).manual_seed(2))

    base, cand, rounds = time_pair(hand_run, ddkit_run, device, budget_s=budget_s, max_rounds=9)
    same = torch.equal(hand_run(), ddkit_run())
    ratio = cand / base
    return row(section, name, tuple(logits.shape), "hand-written loop", candidate, base * 1e3, cand * 1e3, ratio,
               "ms", target="<= 1.1", met=ratio <= 1.1, rounds=rounds,
               note="identical samples" if same else "samples differ")


def bench_sampler(device, budget_s, log, steps=128):
    rows = []
    for shape in SHAPES[:2]:
        B, N, V = shape
        logits = (torch.randn(B, N, V, generator=torch.Generator().manual_seed(1)) * 3).to(device)
        process = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
        backends = ["torch"] if device.type == "cuda" else ["numba", "torch"]
        for backend in backends:
            sampler = ddkit.build("sampler", "ancestral", steps=steps, backend=backend)

            rows.append(sampler_against_hand_loop(
                "sampler", f"ancestral {steps} steps, backend={backend}", "ddkit ancestral", sampler, process,
                logits, lambda gen: hand_written_loop(logits, steps, gen), device, budget_s))
            log(rows[-1])
    return rows


def _inverse_cdf(rows, u):
    cdf = (rows - rows.amax(-1, keepdim=True)).exp().cumsum(-1)
    return torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True).squeeze(-1).clamp_max(rows.shape[-1] - 1)


def hand_written_remdm(logits, steps, eta, generator):
    """ReMDM-rescale by hand (linear schedule, uniform grid): the masked step with the
    remasking coefficient, then each clean token of x_t masked again w.p. sigma."""
    B, N, V = logits.shape
    device = logits.device
    x = torch.full((B, N), V, dtype=torch.long, device=device)
    for i in range(steps):
        t, s = (steps - i) / steps, (steps - i - 1) / steps
        alpha_t, alpha_s = 1.0 - t, 1.0 - s
        last = i == steps - 1
        bound = 1.0 if alpha_t == 0 else min(1.0, (1.0 - alpha_s) / alpha_t)
        sigma = 0.0 if last else eta * bound
        p = 1.0 if last else (alpha_s - (1.0 - sigma) * alpha_t) / (1.0 - alpha_t)
        u_move = torch.rand(B, N, generator=generator, dtype=torch.float64, device=device)
        u_token = torch.rand(B, N, generator=generator, dtype=torch.float64, device=device)
        clean = x != V
        moving = ((x == V) & (u_move < p)).nonzero(as_tuple=True)
        x[moving] = _inverse_cdf(logits[moving].double(), u_token[moving])
        if sigma > 0:
            u = torch.rand(B, N, generator=generator, dtype=torch.float64, device=device)
            x[clean & (u < sigma)] = V
    return x


def hand_written_low_confidence(logits, steps, generator):
    """LLaDA low-confidence decoding by hand: per step draw every masked token, commit the
    floor(M/T) (+1 for the first M mod T steps) of highest probability."""
    B, N, V = logits.shape
    device = logits.device
    x = torch.full((B, N), V, dtype=torch.long, device=device)
    for i in range(steps):
        masked = x == V
        if not bool(masked.any()):
            break
        rows = logits[masked].double()
        u = torch.rand(rows.shape[0], generator=generator, dtype=torch.float64, device=device)
        token = _inverse_cdf(rows, u)
        w = (rows - rows.amax(-1, keepdim=True)).exp()
        score = torch.full((B, N), float("-inf"), dtype=torch.float64, device=device)
        score[masked] = w.gather(-1, token[:, None]).squeeze(-1) / w.sum(-1)
        k = N // steps + (i < N % steps) if i < steps - 1 else N
        rank = (-score).argsort(dim=-1, stable=True).argsort(dim=-1)
        candidate = torch.full((B, N), V, dtype=torch.long, device=device)
        candidate[masked] = token
        commit = masked & (rank < k)
        x = torch.where(commit, candidate, x)
    return x


def bench_decoders(device, budget_s, log, steps=128):
    """The decoders of the unmasking rules against hand-written loops of the same math."""
    rows = []
    backend = "torch" if device.type == "cuda" else "numba"
    cases = [("remdm rescale eta=0.05", {"name": "remdm", "strategy": "rescale", "eta": 0.05},
              lambda logits, gen: hand_written_remdm(logits, steps, 0.05, gen)),
             ("low_confidence", "low_confidence", lambda logits, gen: hand_written_low_confidence(logits, steps, gen))]
    for shape in SHAPES:
        B, N, V = shape
        logits = (torch.randn(B, N, V, generator=torch.Generator().manual_seed(1)) * 3).to(device)
        process = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
        for name, rule, hand in cases:
            sampler = ddkit.build("sampler", "ancestral", steps=steps, backend=backend, rule=rule)

            rows.append(sampler_against_hand_loop(
                "decoders", f"{name} {steps} steps, backend={backend}", "ddkit ancestral + rule", sampler, process,
                logits, lambda gen, hand=hand: hand(logits, gen), device, budget_s))
            log(rows[-1])
    return rows


# -- losses ----------------------------------------------------------------------------------


def bench_losses(device, budget_s, log, shape=(4000, 32, 27)):
    B, N, V = shape
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(B, N, V, generator=gen).to(device)
    x0 = torch.randint(0, V, (B, N), generator=gen).to(device)
    process = ddkit.build("process", "masked", vocab_size=V, schedule="cosine")
    elbo = ddkit.build("loss", "continuous_elbo", process=process)
    entropy = ddkit.build("loss", "score_entropy", process=process, parameterization="mean")

    def run(loss):
        return loss(lambda x_t, t: logits, x0, generator=torch.Generator(device=device).manual_seed(4)).nats

    base, cand, rounds = time_pair(lambda: run(elbo), lambda: run(entropy), device, budget_s=budget_s, max_rounds=9)
    same = torch.allclose(run(entropy), run(elbo).double(), rtol=1e-5, atol=1e-6)
    result = row("losses", "masked score_entropy (mean) vs continuous_elbo", shape, "continuous_elbo",
                 "score_entropy", base * 1e3, cand * 1e3, cand / base, "ms", rounds=rounds,
                 note="same nats" if same else "nats differ")
    log(result)
    return [result]


# -- training throughput ---------------------------------------------------------------------


def bench_train(device, log):
    script = ROOT / "benchmarks" / "train_throughput.py"
    if not script.exists():
        return [row("train", "training throughput", None, "bare PyTorch loop", "ddkit train", None, None, None,
                    "", note="skipped: benchmarks/train_throughput.py does not exist")]
    args = [sys.executable, str(script)]
    if device.type == "cuda":
        args += ["pipelines/quickstart.yaml", "device=cuda"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    text = out.stdout + out.stderr
    match = re.search(r"median ratio ddkit train / bare loop: ([0-9.]+)", text)
    rounds = re.findall(r"bare loop ([0-9,]+) tokens/s, ddkit train ([0-9,]+) tokens/s", text)
    if out.returncode != 0 or not match:
        result = row("train", "training throughput", None, "bare PyTorch loop", "ddkit train", None, None, None,
                     "", note=f"train_throughput.py failed (exit {out.returncode}): {text.strip()[-300:]}")
    else:
        ratio = float(match.group(1))
        bare = statistics.median(float(b.replace(",", "")) for b, _ in rounds) if rounds else None
        ours = statistics.median(float(c.replace(",", "")) for _, c in rounds) if rounds else None
        result = row("train", "training throughput (quickstart pipeline)", None, "bare PyTorch loop", "ddkit train",
                     bare, ours, ratio, "tokens/s", target=">= 0.95", met=ratio >= 0.95, rounds=len(rounds),
                     note="from benchmarks/train_throughput.py")
    log(result)
    return [result]


# -- output ----------------------------------------------------------------------------------


def machine_info(device):
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    try:
        import numba

        from ddkit.plugins.kernels import numba_backend

        numba_backend.kernels()
        numba.get_num_threads()  # starts the threading layer
        info.update(numba=numba.__version__, numba_threading_layer=numba.threading_layer(),
                    numba_threads=numba_backend.thread_budget())
    except Exception as exc:  # numba is optional for the CUDA run
        info["numba"] = f"unavailable: {exc}"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3g} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "tokens/s":
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(rows):
    lines = ["| section | row | shape (B, N, V) | baseline | candidate | ratio | target | met | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shape = "(" + ", ".join(map(str, r["shape"])) + ")" if r["shape"] else ""
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['section']} | {r['name']} | {shape} | {r['baseline']} {fmt(r['baseline_value'], r['unit'])} "
                     f"| {r['candidate']} {fmt(r['candidate_value'], r['unit'])} | "
                     f"{'-' if r['ratio'] is None else format(r['ratio'], '.3g')} | {r['target'] or ''} | {met} "
                     f"| {r['note']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--sections", default="kernels,memory,sampler,decoders,losses,train")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/<device>.json")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per row (rounds fit in it)")
    parser.add_argument("--quick", action="store_true", help="budget 0.3 s per row")
    parser.add_argument("--shapes", default="0,1,2", help="indices into the (B, N, V) shapes to run")
    parser.add_argument("--threads", type=int, default=None, help="torch (and so Numba) threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global SHAPES
    SHAPES = [SHAPES[int(i)] for i in args.shapes.split(",")]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    budget = 0.3 if args.quick else args.budget
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    info = machine_info(device)
    print("machine:", json.dumps(info))

    def log(r):
        print(f"[{r['section']}] {r['name']} {r['shape'] or ''}: ratio "
              f"{'-' if r['ratio'] is None else format(r['ratio'], '.3g')} {r['note']}", flush=True)

    rows = []
    started = time.perf_counter()
    for section in sections:
        if section == "kernels":
            rows += bench_kernels(device, budget, log)
        elif section == "memory":
            rows += bench_memory(device, log)
        elif section == "sampler":
            rows += bench_sampler(device, budget, log)
        elif section == "decoders":
            rows += bench_decoders(device, budget, log)
        elif section == "losses":
            rows += bench_losses(device, budget, log)
        elif section == "train":
            rows += bench_train(device, log)
        else:
            parser.error(f"unknown section {section!r}")
    print()
    print(table(rows))
    path = args.json or ROOT / "benchmarks" / "results" / f"{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": info,
              "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
