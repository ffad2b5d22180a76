r"""Samplers against the truth: sampler x steps -> KL, TV, mean true NLL, NFE.

Data comes from a seeded random Markov chain (:class:`ddkit.testing.MarkovChain`); every
sampler is driven by the exact oracle denoiser (:class:`ddkit.testing.OracleDenoiser`), so
the only error left is the sampler's own. On a space small enough to enumerate
(``V^N`` sequences) the empirical law of the samples :math:`\hat p` is compared with the
exact law :math:`p`:

* ``KL`` = :math:`\mathrm{KL}(\hat p \,\|\, p)` (plug-in, nats; biased upwards by about
  (outcomes seen - 1) / 2n, which the row of exact samples shows);
* ``TV`` = :math:`\frac12\|\hat p - p\|_1`;
* ``NLL`` = mean of :math:`-\log p(x)` over the samples (nats per sequence) with its standard
  error; for exact samples its expectation is the entropy :math:`H(X_{1:N})`;
* ``NFE`` = denoiser calls per batch.

The row "exact (chain)" draws directly from the chain: the floor that sampling noise alone
gives. Expected shape: first-hitting matches it; ancestral approaches it as steps grow
(its TV is about c / T). Further tables: the uniform process on the same space, the
decoders of masked diffusion (ReMDM remasking, semi-autoregressive blocks, MaskGIT, LLaDA
low-confidence and Fast-dLLM threshold decoding; fewer samples per row, and the NFE a
sequence would cost sampled alone), the NLL on a larger space (no enumeration), and
predictor–corrector sampling (forward–backward, DFM, informed) against the predictor alone at
equal NFE.

Run::

    OMP_NUM_THREADS=2 python benchmarks/oracle.py            # prints the markdown tables
    OMP_NUM_THREADS=2 python benchmarks/oracle.py --tables decoders   # one table
    OMP_NUM_THREADS=2 python benchmarks/oracle.py --write docs/oracle.md
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

import ddkit
from ddkit.testing import MarkovChain, OracleDenoiser
from ddkit.testing.leave_one_out import LeaveOneOutOracle
from ddkit.testing.oracles import all_sequences, sequence_ids
from ddkit.testing.stats import empirical_distribution, kl_divergence, total_variation, tv_bound

ANCESTRAL_STEPS = (1, 2, 4, 8, 16, 32, 64, 128)
LAW_HEADER = ("| sampler | steps | KL(sampled ‖ true) | TV | mean true NLL (nats/seq) | NFE | seconds |",
              "|---|---|---|---|---|---|---|")


def samplers(length: int):
    yield "first_hitting", "-", ddkit.build("sampler", "first_hitting")
    for steps in ANCESTRAL_STEPS:
        yield "ancestral (uniform grid)", str(steps), ddkit.build("sampler", "ancestral", steps=steps)
    for steps in (4, 16, 64):
        yield "ancestral (cosine grid)", str(steps), ddkit.build("sampler", "ancestral", steps=steps,
                                                                 grid="cosine")
    for name in ("euler", "analytic"):
        for steps in (4, 16, 64):
            yield name, str(steps), ddkit.build("sampler", name, steps=steps)


#: the optimal uniform-diffusion denoiser depends on t
TIMED = {"name": "mean", "time_conditioning": True}


def uniform_samplers():
    for name in ("ancestral", "euler", "analytic"):
        for steps in (4, 16, 64, 256):
            yield name, str(steps), ddkit.build("sampler", name, steps=steps, parameterization=TIMED)


def uniform_table(vocab: int, length: int, num: int, seed: int, schedule: str) -> list[str]:
    """The enumerable table for the uniform process (ancestral, Euler, analytic)."""
    chain = MarkovChain(vocab, seed=seed, concentration=0.5)
    process = ddkit.build("process", "uniform", vocab_size=vocab, schedule=schedule)
    oracle = OracleDenoiser(chain, process)
    truth = chain.probabilities(length)
    lines = [
        f"Uniform process (same chain and space, {schedule} schedule, time-conditioned oracle): "
        f"every token is resampled, so no sampler is exact; all approach the exact samples as "
        f"steps grow.",
        "",
        *LAW_HEADER,
    ]
    return lines + sampler_rows(uniform_samplers(), chain, oracle, process, truth, vocab, num, length, seed)


def law_row(chain: MarkovChain, truth: torch.Tensor, vocab: int, name: str, steps: str, tokens: torch.Tensor,
            nfe: int, seconds: float) -> str:
    """One row of an enumerable table: KL and TV of the samples' law to ``truth``, true NLL."""
    law = empirical_distribution(sequence_ids(tokens, vocab), vocab ** tokens.shape[1])
    return (f"| {name} | {steps} | {kl_divergence(law, truth):.4f} | {total_variation(law, truth):.4f} | "
            f"{nll_summary(chain, tokens)} | {nfe} | {seconds:.2f} |")


def sampler_rows(named_samplers, chain, oracle, process, truth, vocab: int, num: int, length: int,
                 seed: int) -> list[str]:
    """:func:`law_row` for every ``(name, steps, sampler)`` driven by the oracle."""
    rows = []
    for name, steps, sampler in named_samplers:
        start = time.perf_counter()
        result = sampler.sample(oracle, process, num_samples=num, length=length,
                                generator=torch.Generator().manual_seed(seed + 2))
        rows.append(law_row(chain, truth, vocab, name, steps, result.tokens, result.nfe,
                            time.perf_counter() - start))
    return rows


def nll_summary(chain: MarkovChain, tokens: torch.Tensor) -> str:
    nll = -chain.log_prob(tokens)
    return f"{float(nll.mean()):.4f} ± {float(nll.std()) / math.sqrt(len(nll)):.4f}"


def enumerable_table(vocab: int, length: int, num: int, seed: int, schedule: str) -> list[str]:
    chain = MarkovChain(vocab, seed=seed, concentration=0.5)
    process = ddkit.build("process", "masked", vocab_size=vocab, schedule=schedule)
    oracle = OracleDenoiser(chain, process)
    truth = chain.probabilities(length)
    outcomes = vocab**length

    lines = [
        f"Enumerable space: V = {vocab}, N = {length} ({outcomes} sequences), {num} samples per "
        f"row, masked process with the {schedule} schedule, chain seed {seed}. Exact entropy "
        f"H(X_1:N) = {chain.entropy(length):.4f} nats; TV bound for exact sampling at "
        f"failure probability 1e-6: {tv_bound(truth, num):.4f}.",
        "",
        *LAW_HEADER,
    ]
    start = time.perf_counter()
    exact = chain.sample(num, length, torch.Generator().manual_seed(seed + 1))
    lines.append(law_row(chain, truth, vocab, "exact (chain)", "-", exact, 0, time.perf_counter() - start))
    return lines + sampler_rows(samplers(length), chain, oracle, process, truth, vocab, num, length, seed)


# -- the decoders of masked diffusion -------------------------------------------------------

DECODER_STEPS = (4, 16, 64, 256)
THRESHOLDS = (0.5, 0.7, 0.9, 0.95)

#: what a row's sampler is, for the "kind" column (explained under the table)
EXACT, CONVERGES, REMASKS, CONFIDENCE = "exact", "T → ∞", "remasking", "confidence"
KINDS = {
    EXACT: "an exact sampler of the law at any budget",
    CONVERGES: "a sampler of the law whose error vanishes as the steps grow (low_confidence with random "
               "remasking commits one uniformly chosen position per step once T ≥ N, which is exact)",
    REMASKS: "ReMDM remasking whose σ per step does not shrink with the step size (cap, rescale, loop) or "
             "differs between positions (conf): each step keeps every position's marginal (conf not even "
             "that) but several positions move at once, so the joint law is kept only approximately and the "
             "error need not vanish as T grows",
    CONFIDENCE: "a confidence decoder: it favours confident tokens and does not sample the law",
}


class TabulatedOracle:
    """The time-independent oracle denoiser of the masked process as a table over every
    noisy sequence (``(V + 1)^N`` rows): the same float64 logits, one lookup per call
    instead of a forward-backward pass, so the decoder table can afford many steps."""

    def __init__(self, oracle: OracleDenoiser, length: int):
        if not oracle.time_independent:
            raise ValueError(f"only a time-independent oracle can be tabulated, got {oracle!r}")
        self.num_states = oracle.process.num_states
        states = all_sequences(self.num_states, length)
        self.table = oracle(states, torch.full((len(states),), oracle.reference_time, dtype=torch.float64))

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.table[sequence_ids(x_t, self.num_states)]


class PerSequenceCalls:
    """Counts for every sequence the denoiser calls it would cost if it were sampled alone
    with the output cache: a call counts where its tokens changed since its previous call
    and, unless the rule remasks (then the sampler runs all its steps), it still has a mask.
    Batched, NFE is the largest count; threshold decoding's NFE depends on the sequence."""

    def __init__(self, denoiser, mask_id: int, remasks: bool):
        self.denoiser, self.mask_id, self.remasks = denoiser, mask_id, remasks
        self.previous: torch.Tensor | None = None
        self.calls: torch.Tensor | None = None

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.previous is None:
            changed = torch.ones(x_t.shape[0], dtype=torch.bool)
            self.calls = torch.zeros(x_t.shape[0], dtype=torch.long)
        else:
            changed = (x_t != self.previous).any(-1)
        if not self.remasks:
            changed &= (x_t == self.mask_id).any(-1)
        self.calls += changed
        self.previous = x_t.clone()
        return self.denoiser(x_t, t)


def ancestral(steps: int, rule=None) -> dict:
    return {"name": "ancestral", "steps": steps, **({} if rule is None else {"rule": rule})}


def in_blocks(block_length: int, blocks: int, steps: int, rule=None) -> dict:
    """Semi-autoregressive blocks sharing a total budget of ``steps``."""
    return {"name": "semi_ar", "block_length": block_length, "sampler": ancestral(max(1, steps // blocks), rule)}


def decoders(length: int):
    """``(decoder, steps label, kind, sampler spec)`` of every row of the decoder table."""
    yield "first_hitting", "-", EXACT, {"name": "first_hitting"}
    half, blocks = length // 2, -(-length // (length // 2))
    per_block = "(T/2 per block)"
    rows = [
        ("ancestral", CONVERGES, lambda T: ancestral(T)),
        (f"semi_ar, block_length {half}, ancestral inside", CONVERGES, lambda T: in_blocks(half, blocks, T)),
        ("remdm cap (η = 0.008, the default)", REMASKS, lambda T: ancestral(T, {"name": "remdm", "strategy": "cap"})),
        ("remdm cap, η = 0.1", REMASKS, lambda T: ancestral(T, {"name": "remdm", "strategy": "cap", "eta": 0.1})),
        ("remdm rescale (η = 0.015, the default)", REMASKS,
         lambda T: ancestral(T, {"name": "remdm", "strategy": "rescale"})),
        ("remdm rescale, η = 0.5", REMASKS,
         lambda T: ancestral(T, {"name": "remdm", "strategy": "rescale", "eta": 0.5})),
        ("remdm conf", REMASKS, lambda T: ancestral(T, {"name": "remdm", "strategy": "conf"})),
        ("remdm loop (η = 0.02, the default)", REMASKS, lambda T: ancestral(T, {"name": "remdm", "strategy": "loop"})),
        ("remdm loop, η = 0.1", REMASKS, lambda T: ancestral(T, {"name": "remdm", "strategy": "loop", "eta": 0.1})),
        ("remdm fb (forward-backward, clamped)", CONVERGES,
         lambda T: ancestral(T, {"name": "remdm", "strategy": "fb"})),
        ("maskgit (choice_temperature 4.5, cosine)", CONFIDENCE, lambda T: ancestral(T, "maskgit")),
        ("maskgit, choice_temperature 0", CONFIDENCE,
         lambda T: ancestral(T, {"name": "maskgit", "choice_temperature": 0.0})),
        ("low_confidence", CONFIDENCE, lambda T: ancestral(T, "low_confidence")),
        (f"low_confidence in blocks of {half}", CONFIDENCE, lambda T: in_blocks(half, blocks, T, "low_confidence")),
        ("low_confidence, remasking: random", CONVERGES,
         lambda T: ancestral(T, {"name": "low_confidence", "remasking": "random"})),
    ]
    for name, kind, spec in rows:
        for steps in DECODER_STEPS:
            label = f"{steps} {per_block}" if spec(steps)["name"] == "semi_ar" else str(steps)
            yield name, label, kind, spec(steps)
    for threshold in THRESHOLDS:
        yield (f"threshold {threshold}", f"{length} (= N)", CONFIDENCE,
               ancestral(length, {"name": "threshold", "threshold": threshold}))


def remasks(sampler) -> bool:
    """Whether the sampler's (or its inner sampler's) unmasking rule may remask."""
    inner = getattr(sampler, "inner", sampler)
    return bool(getattr(getattr(inner, "rule", None), "remasks", False))


def decoder_table(vocab: int, length: int, num: int, seed: int, schedule: str) -> list[str]:
    """The decoders of masked diffusion on the enumerable space, driven by the exact oracle."""
    chain = MarkovChain(vocab, seed=seed, concentration=0.5)
    process = ddkit.build("process", "masked", vocab_size=vocab, schedule=schedule)
    oracle = TabulatedOracle(OracleDenoiser(chain, process), length)
    truth = chain.probabilities(length)
    lines = [
        f"Decoders of masked diffusion (same chain and space, masked process with the {schedule} "
        f"schedule, the exact oracle), {num} samples per row (fewer than above, so the floor is "
        f"higher: TV bound for exact sampling at failure probability 1e-6: {tv_bound(truth, num):.4f}). "
        f"Temperature 1, no top-k / top-p. *NFE/seq* is the mean number of denoiser calls a "
        f"sequence would cost sampled alone with the output cache (batched, *NFE* is the largest). "
        f"Kinds: " + "; ".join(f"*{kind}*: {text}" for kind, text in KINDS.items()) + ".",
        "",
        "| decoder | kind | steps T | KL(sampled ‖ true) | TV | mean true NLL (nats/seq) | NFE | NFE/seq | "
        "seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    exact = chain.sample(num, length, torch.Generator().manual_seed(seed + 1))
    law = empirical_distribution(sequence_ids(exact, vocab), vocab**length)
    lines.append(f"| exact (chain) | {EXACT} | - | {kl_divergence(law, truth):.4f} | {total_variation(law, truth):.4f} | "
                 f"{nll_summary(chain, exact)} | 0 | 0 | - |")
    for name, steps, kind, spec in decoders(length):
        sampler = ddkit.build("sampler", spec)
        counted = PerSequenceCalls(oracle, process.mask_id, remasks(sampler))
        start = time.perf_counter()
        result = sampler.sample(counted, process, num_samples=num, length=length,
                                generator=torch.Generator().manual_seed(seed + 2))
        seconds = time.perf_counter() - start
        law = empirical_distribution(sequence_ids(result.tokens, vocab), vocab**length)
        lines.append(f"| {name} | {kind} | {steps} | {kl_divergence(law, truth):.4f} | "
                     f"{total_variation(law, truth):.4f} | {nll_summary(chain, result.tokens)} | {result.nfe} | "
                     f"{float(counted.calls.double().mean()):.2f} | {seconds:.2f} |")
    return lines


CORRECTOR_BUDGETS = (4, 8, 16, 32, 64)


class TabulatedHollow:
    """The exact leave-one-out conditionals (:class:`ddkit.testing.leave_one_out.LeaveOneOutOracle`)
    as a table over every noisy sequence; ``hollow = True`` for the informed corrector."""

    hollow = True

    def __init__(self, chain: MarkovChain, process, length: int):
        self.num_states = process.num_states
        states = all_sequences(self.num_states, length)
        self.table = LeaveOneOutOracle(chain, process)(states, torch.full((len(states),), 0.5, dtype=torch.float64))

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.table[sequence_ids(x_t, self.num_states)]


def corrected(steps: int, corrector=None) -> dict:
    return {"name": "ancestral", "steps": steps, **({} if corrector is None else {"corrector": corrector})}


def correctors(budget: int):
    """``(corrector label, sampler spec)`` of the rows at one NFE budget: the predictor alone
    with the whole budget, and half the steps with a correction after each (one call each)."""
    half = max(1, budget // 2)
    yield "none", corrected(budget)
    yield "forward_backward (step ×1.5)", corrected(half, {"name": "forward_backward"})
    yield "dfm (c = 10 (t(1-t))^¼)", "dfm"
    yield "informed k = 1, τ = 1", corrected(half, {"name": "informed"})
    yield "informed k = 2, τ = 1", corrected(half, {"name": "informed", "k": 2})
    yield "informed k = 1, τ = ∞ (Gibbs)", corrected(half, {"name": "informed", "temperature": math.inf})


def dfm_within(budget: int, denoiser, process, length: int, seed: int) -> tuple[dict | None, int]:
    """The DFM corrector's sub-steps are adaptive: the most predictor steps (at least 2, so
    that it corrects once) whose total NFE, measured on a small batch, stays within the
    budget; ``(None, NFE of 2 steps)`` if none does."""
    for steps in range(max(2, budget // 2), 1, -1):
        spec = corrected(steps, {"name": "dfm"})
        nfe = ddkit.build("sampler", spec).sample(denoiser, process, num_samples=256, length=length,
                                                  generator=torch.Generator().manual_seed(seed)).nfe
        if nfe <= budget:
            return spec, nfe
    return None, nfe


def corrector_table(vocab: int, length: int, num: int, seed: int, schedule: str) -> list[str]:
    """Predictor alone against predictor + corrector at equal NFE, driven by the exact oracle
    (and, for the informed corrector, the exact leave-one-out conditionals)."""
    chain = MarkovChain(vocab, seed=seed, concentration=0.5)
    process = ddkit.build("process", "masked", vocab_size=vocab, schedule=schedule)
    oracle = TabulatedOracle(OracleDenoiser(chain, process), length)
    hollow = TabulatedHollow(chain, process, length)
    truth = chain.probabilities(length)
    lines = [
        f"Predictor–corrector sampling at equal NFE ([correctors.md](correctors.md); same chain and space, "
        f"masked process with the {schedule} schedule), {num} samples per row; TV bound for exact "
        f"sampling at failure probability 1e-6: {tv_bound(truth, num):.4f}. The predictor is ancestral "
        f"sampling on a uniform grid, alone with the whole budget of T steps or with T/2 steps and a "
        f"correction after each but the last (one call each; the DFM corrector's adaptive sub-steps "
        f"set its T: the most steps within the budget). Forward–backward and DFM use the exact "
        f"posterior; the informed corrector uses the exact leave-one-out conditionals (a hollow "
        f"oracle). NFE counts every call for the batch (the predictor alone skips calls once nothing "
        f"changes).",
        "",
        "| NFE budget | corrector | steps T | NFE | KL(sampled ‖ true) | TV | mean true NLL (nats/seq) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    exact = chain.sample(num, length, torch.Generator().manual_seed(seed + 1))
    law = empirical_distribution(sequence_ids(exact, vocab), vocab**length)
    lines.append(f"| - | exact (chain) | - | 0 | {kl_divergence(law, truth):.4f} | {total_variation(law, truth):.4f} | "
                 f"{nll_summary(chain, exact)} | - |")
    for budget in CORRECTOR_BUDGETS:
        for label, spec in correctors(budget):
            if spec == "dfm":
                spec, smallest = dfm_within(budget, oracle, process, length, seed)
                if spec is None:
                    lines.append(f"| {budget} | {label} | 2 | {smallest} (over the budget) | - | - | - | - |")
                    continue
            informed = spec.get("corrector", {}).get("name") == "informed"
            start = time.perf_counter()
            result = ddkit.build("sampler", spec).sample(hollow if informed else oracle, process, num_samples=num,
                                                         length=length, generator=torch.Generator().manual_seed(seed + 2))
            seconds = time.perf_counter() - start
            law = empirical_distribution(sequence_ids(result.tokens, vocab), vocab**length)
            lines.append(f"| {budget} | {label} | {spec['steps']} | {result.nfe} | {kl_divergence(law, truth):.4f} | "
                         f"{total_variation(law, truth):.4f} | {nll_summary(chain, result.tokens)} | {seconds:.2f} |")
    return lines


def large_table(vocab: int, length: int, num: int, seed: int, schedule: str) -> list[str]:
    chain = MarkovChain(vocab, seed=seed, concentration=0.3)
    process = ddkit.build("process", "masked", vocab_size=vocab, schedule=schedule)
    oracle = OracleDenoiser(chain, process)
    lines = [
        f"Larger space: V = {vocab}, N = {length}, {num} samples per row. Exact entropy "
        f"H(X_1:N) = {chain.entropy(length):.4f} nats "
        f"({chain.entropy_rate():.4f} nats/token in the stationary limit).",
        "",
        "| sampler | steps | mean true NLL (nats/seq) | NFE | seconds |",
        "|---|---|---|---|---|",
    ]
    exact = chain.sample(num, length, torch.Generator().manual_seed(seed + 1))
    lines.append(f"| exact (chain) | - | {nll_summary(chain, exact)} | 0 | - |")
    for name, steps, sampler in samplers(length):
        if name.startswith("ancestral (cosine"):
            continue
        start = time.perf_counter()
        result = sampler.sample(oracle, process, num_samples=num, length=length,
                                generator=torch.Generator().manual_seed(seed + 2))
        lines.append(f"| {name} | {steps} | {nll_summary(chain, result.tokens)} | {result.nfe} | "
                     f"{time.perf_counter() - start:.2f} |")
    return lines


TABLES = ("masked", "uniform", "decoders", "large", "correctors")
DECODER_SAMPLES = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=4)
    parser.add_argument("--length", type=int, default=6)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--large-vocab", type=int, default=8)
    parser.add_argument("--large-length", type=int, default=32)
    parser.add_argument("--large-samples", type=int, default=10_000)
    parser.add_argument("--schedule", default="cosine")
    parser.add_argument("--decoder-samples", type=int, default=DECODER_SAMPLES,
                        help="samples per row of the decoder table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES),
                        help="which tables to compute (default: all)")
    parser.add_argument("--write", metavar="PATH", help="also write the tables to this markdown file")
    args = parser.parse_args()

    tables = {
        "masked": lambda: enumerable_table(args.vocab, args.length, args.samples, args.seed, args.schedule),
        "uniform": lambda: uniform_table(args.vocab, args.length, args.samples, args.seed, args.schedule),
        "decoders": lambda: decoder_table(args.vocab, args.length, args.decoder_samples, args.seed, args.schedule),
        "large": lambda: large_table(args.large_vocab, args.large_length, args.large_samples, args.seed,
                                     args.schedule),
        "correctors": lambda: corrector_table(args.vocab, args.length, args.samples, args.seed, args.schedule),
    }
    lines = []
    for name in TABLES:
        if name in args.tables:
            lines += ([""] if lines else []) + tables[name]()
    lines += ["", f"Measured with torch {torch.__version__} on {platform.machine()} "
                  f"({torch.get_num_threads()} threads), ddkit {ddkit.__version__}."]
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(args.write, "w") as f:
            f.write(HEADER + text + "\n")


HEADER = """# Samplers against exact answers (oracle report)

Generated by `benchmarks/oracle.py` (see its docstring; rerun with
`OMP_NUM_THREADS=2 python benchmarks/oracle.py --write docs/oracle.md`).

Data comes from a seeded random first-order Markov chain; every sampler uses the exact
oracle denoiser (`ddkit.testing.OracleDenoiser`: the posterior marginals p(x_0^n | x_t) by
forward-backward), so the numbers measure the sampler alone, not a model. The row
"exact (chain)" draws from the chain directly: its KL and TV are the floor that finite
sampling alone produces (the plug-in KL is biased upwards by about (outcomes seen - 1)/2n).
First-hitting simulates the reverse process exactly and sits at that floor; ancestral
sampling with T steps unmasks several tokens per step independently, which costs about
c/T in total variation, and approaches the floor as T grows. NFE counts denoiser calls
for the whole batch (the ancestral sampler skips calls when no token changed).
Euler (τ-leaping) takes one step of the reverse rates per grid step (first order in the step
size, like ancestral); the analytic (Tweedie) step with the mean parameterization is the
process's posterior, so it samples what ancestral samples. The second table repeats the
comparison for the uniform process.

The third table measures the decoders of masked diffusion ([decoders.md](decoders.md)) the same way:
ReMDM remasking (each strategy, with the paper's η, which were tuned for T = 1024 on
OpenWebText and barely remask at these T, and with a larger η where the strategy has one),
semi-autoregressive blocks of N/2 with ancestral inside, MaskGIT, LLaDA low-confidence (with
and without blocks, and its random variant) and Fast-dLLM threshold decoding (T = N, so it
can finish). It uses fewer samples per row than the first table and a tabulated oracle (the
same posteriors, looked up). The confidence decoders are not samplers of the data law: their
rows say how far from it they land, and a true NLL below the entropy means they favour
likely sequences. The plug-in KL and the TV have a floor set by the sample size; the mean true
NLL with its standard error shows a biased law first.

The last table compares predictor–corrector sampling ([correctors.md](correctors.md)) with
the predictor alone at equal NFE: half the predictor steps, a correction after each.
The test suite checks the same statements with statistical bounds
(`tests/test_testing_oracle_samplers.py`).

"""


if __name__ == "__main__":
    main()
