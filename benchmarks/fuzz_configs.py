"""A seeded fuzzer of pipeline files: every mutant must be rejected with a clear message or
accepted as valid by ``ddkit config validate``, never end in a traceback.

Each mutant is one of the pipelines in ``pipelines/*.yaml`` (read as plain YAML, its
interpolations kept as text) with one random change:

* ``delete``: a key removed;
* ``type``: a value replaced by one of another type (a number by text, text by a list, ...);
* ``range``: a number replaced by one outside any sensible range (negative, zero, 2^63, 10^30);
* ``plugin``: a component's name replaced by one that is not installed (or a qualified name
  of a distribution that does not exist);
* ``nonfinite``: a number replaced by NaN or an infinity;
* ``huge``: an integer replaced by a huge one (10^100, 2^64);
* ``interpolation``: a text value replaced by a broken or forbidden interpolation
  (``${nope}``, an unclosed ``${``, a resolver name that is itself interpolated,
  ``oc.decode``, a self-reference);
* ``nested``: a value or a new key replaced by deeply nested lists and mappings.

The mutant is written to a file and validated in-process (``ddkit config validate FILE``
through click's test runner, so an exception that escapes the command is seen as one). It
ends as

* ``rejected``: a non-zero exit status and a clear message (an ``Error:`` line; an
  ``invalid configuration ... (N problems):`` header followed by exactly N one-line problems);
* ``accepted``: exit status 0 and a ``valid`` line;
* ``crashed``: anything else: an exception, a traceback, a message of another shape, or no
  answer within the time limit.

Run it::

    python benchmarks/fuzz_configs.py                    # 200 mutants per pipeline, seed 0
    python benchmarks/fuzz_configs.py -n 1000 --seed 3 --pipelines quickstart,markov
    python benchmarks/fuzz_configs.py --no-data          # skip loading the data sets (faster)

It prints one row per pipeline (tried, rejected clearly, accepted, crashed) and every crash
with its mutation; the exit status is 1 when a mutant crashed. ``tests/test_config_fuzz.py``
runs a small seeded version of it in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import random
import re
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines"

#: names that no installed plugin has
UNKNOWN_NAMES = ["ditt", "nope", "ancestral2", "nope:ancestral", "ddkit:nope", "", " ", "ANCESTRAL", "a.b", "x" * 300]
#: numbers outside any sensible range
OUT_OF_RANGE = [-1, 0, -(2**63) - 1, 2**63, 10**9, 10**30, -1e308, 1e308, 5e-324, -0.0, 1.5, 0.5]
NON_FINITE = [math.nan, math.inf, -math.inf]
HUGE = [10**100, 2**64, 2**63 - 1, 10**12]
INTERPOLATIONS = ["${nope}", "${data.seq_len", "${oc.env:}", "${oc.env:DDKIT_FUZZ_UNSET}", "${${name}:x}",
                  "${oc.${name}:x}", "${oc.decode:'{a: 1}'}", "${oc.create:{}}", "${oc.select:}", "${..}",
                  "${data}", "${name}x${name}", "\\${escaped}", "${oc.env:HOME}${oc.env:HOME}", "${a.b.c.d}",
                  "${train.steps}", "${sampler}", "${.}", "${}", "$${x}", "${oc.select:nope,${nope}}"]
OTHER_TYPES: list[Any] = ["abc", "", "1e3", "true", [], [1, 2], {}, {"a": 1}, None, True, False, 3, 2.5,
                          "\u00e9\u00df\u2603", "a" * 10_000]
#: the kinds of mutation, in the order of the module docstring
MUTATIONS = ("delete", "type", "range", "plugin", "nonfinite", "huge", "interpolation", "nested")


@dataclass
class Outcome:
    pipeline: str
    mutation: str
    where: str
    value: str
    result: str  # rejected, accepted or crashed
    detail: str = ""


@dataclass
class Summary:
    pipeline: str
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, result: str) -> int:
        return sum(o.result == result for o in self.outcomes)

    @property
    def crashes(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "crashed"]


# -- paths in a plain YAML document --------------------------------------------------------

def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (path, value) below ``node``, containers included (the root excluded)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*prefix, key), value
        yield from paths(value, (*prefix, key))


def set_at(doc: Any, path: tuple, value: Any) -> None:
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def delete_at(doc: Any, path: tuple) -> None:
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def component_names(doc: dict) -> list[tuple]:
    """Paths of component names: a ``name`` key in a mapping, or a plugin given by name."""
    found = [path for path, value in paths(doc) if path[-1] == "name" and len(path) > 1 and isinstance(value, str)]
    sections = ("model", "process", "parameterization", "loss", "sampler")
    found += [(key,) for key in sections if isinstance(doc.get(key), str)]
    return found


def nested_junk(rng: random.Random, depth: int = 0) -> Any:
    if depth >= rng.randint(2, 6):
        return rng.choice([1, "x", None, 2.5, math.nan, "${nope}"])
    if rng.random() < 0.5:
        return [nested_junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "name", "steps", "${x}", "1"]): nested_junk(rng, depth + 1) for _ in range(rng.randint(0, 3))}


# -- mutations -----------------------------------------------------------------------------

def mutate(doc: dict, kind: str, rng: random.Random) -> tuple[dict, str, str] | None:
    """``(mutant, where, new value)`` of one mutation of ``kind``, or ``None`` when ``doc``
    offers no place for it."""
    doc = copy.deepcopy(doc)
    every = list(paths(doc))
    leaves = [(p, v) for p, v in every if not isinstance(v, (dict, list))]
    numbers = [(p, v) for p, v in leaves if isinstance(v, (int, float)) and not isinstance(v, bool)]
    texts = [(p, v) for p, v in leaves if isinstance(v, str)]
    if kind == "delete":
        path, _ = rng.choice(every)
        delete_at(doc, path)
        return doc, dotted(path), "<deleted>"
    if kind == "type":
        path, old = rng.choice(every)
        value = rng.choice([v for v in OTHER_TYPES if type(v) is not type(old)])
    elif kind == "range" and numbers:
        path, _ = rng.choice(numbers)
        value = rng.choice(OUT_OF_RANGE)
    elif kind == "plugin":
        names = component_names(doc)
        if not names:
            return None
        path = rng.choice(names)
        value = rng.choice(UNKNOWN_NAMES)
    elif kind == "nonfinite" and numbers:
        path, _ = rng.choice(numbers)
        value = rng.choice(NON_FINITE)
    elif kind == "huge" and numbers:
        path, _ = rng.choice(numbers)
        value = rng.choice(HUGE)
    elif kind == "interpolation" and texts:
        path, _ = rng.choice(texts)
        value = rng.choice(INTERPOLATIONS)
    elif kind == "nested":
        containers = [()] + [p for p, v in every if isinstance(v, dict)]
        if rng.random() < 0.5:  # a new key holding junk
            parent = rng.choice(containers)
            path = (*parent, rng.choice(["junk", "name", "extra", "1"]))
        else:
            path, _ = rng.choice(every)
        value = nested_junk(rng)
    else:
        return None
    set_at(doc, path, value)
    return doc, dotted(path), repr(value)[:60]


def mutants(doc: dict, count: int, rng: random.Random) -> Iterator[tuple[str, dict, str, str]]:
    """``count`` mutants of ``doc``: ``(mutation, mutant, where, value)``, the mutations taken
    in turn so that each kind gets its share."""
    made = attempts = 0
    while made < count and attempts < 20 * count:
        kind = MUTATIONS[attempts % len(MUTATIONS)]
        attempts += 1
        result = mutate(doc, kind, rng)
        if result is not None:
            made += 1
            yield kind, *result


# -- running and judging -------------------------------------------------------------------

class TimeLimit(Exception):
    """A mutant took longer than the time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`TimeLimit` in this (main) thread after ``seconds``."""
    def expire(signum, frame):
        raise TimeLimit(f"no answer within {seconds:g} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_PROBLEMS = re.compile(r"invalid configuration.* \((\d+) problems?\):$")


def judge(exit_code: int, output: str, exception: BaseException | None) -> tuple[str, str]:
    """``(result, detail)`` of one validation (see the module docstring)."""
    if exception is not None and not isinstance(exception, SystemExit):
        return "crashed", f"{type(exception).__name__}: {str(exception)[:300]}"
    if "Traceback" in output:
        return "crashed", "a traceback in the output"
    lines = output.splitlines()
    if exit_code == 0:
        ok = any(": valid" in line for line in lines)
        return ("accepted", "") if ok else ("crashed", f"exit status 0 without a 'valid' line: {output[:300]}")
    errors = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    if not errors:
        return "crashed", f"exit status {exit_code} without an 'Error:' line: {output[:300]}"
    first = errors[0]
    header = _PROBLEMS.search(lines[first])
    if header is not None:
        count = int(header.group(1))
        problems = lines[first + 1:first + 1 + count]
        rest = lines[first + 1 + count:]
        if len(problems) != count or not all(p.startswith("  - ") for p in problems) or any(r.strip() for r in rest):
            return "crashed", f"{count} problem(s) announced but the lines do not match: {output[:300]}"
    elif any(line.strip() for line in lines[first + 1:]):
        return "crashed", f"an error message of several lines: {output[:300]}"
    return "rejected", lines[first][:200]


def validate(path: Path, *, no_data: bool, seconds: float) -> tuple[str, str]:
    from ddkit.cli import main

    args = ["config", "validate", str(path), *(["--no-data"] if no_data else [])]
    try:
        with time_limit(seconds):
            result = CliRunner().invoke(main, args)
    except TimeLimit as exc:
        return "crashed", str(exc)
    if isinstance(result.exception, TimeLimit):
        return "crashed", str(result.exception)
    return judge(result.exit_code, result.output, result.exception)


def fuzz_pipeline(path: Path, count: int, *, seed: int, folder: Path, no_data: bool = False,
                  seconds: float = 60.0, progress: Callable[[Outcome], None] | None = None) -> Summary:
    """Validate ``count`` mutants of the pipeline file ``path`` (seeded by ``seed`` and the
    file's name); the mutants are written into ``folder``."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    rng = random.Random(f"{seed}:{path.name}")
    summary = Summary(path.stem)
    target = folder / path.name  # beside nothing else: relative paths in the file stay relative to the cwd
    for kind, mutant, where, value in mutants(doc, count, rng):
        target.write_text(yaml.safe_dump(mutant, sort_keys=False, allow_unicode=True), encoding="utf-8")
        result, detail = validate(target, no_data=no_data, seconds=seconds)
        outcome = Outcome(path.stem, kind, where, value, result, detail)
        summary.outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return summary


@contextlib.contextmanager
def memory_limit(gigabytes: float | None):
    """Cap this process's address space, so that a mutant asking for too much memory fails
    to allocate instead of taking the machine's memory from everyone else."""
    if not gigabytes:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (int(gigabytes * 2**30), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def table(summaries: list[Summary]) -> str:
    rows = [("pipeline", "tried", "rejected clearly", "accepted", "crashed")]
    rows += [(s.pipeline, str(len(s.outcomes)), str(s.count("rejected")), str(s.count("accepted")),
              str(s.count("crashed"))) for s in summaries]
    total = [sum(int(r[i]) for r in rows[1:]) for i in range(1, 5)]
    rows.append(("all", *map(str, total)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:-1], "-" * len(lines[0]), lines[-1]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--mutants", type=int, default=200, help="mutants per pipeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pipelines", help="comma-separated names (default: every pipelines/*.yaml)")
    parser.add_argument("--no-data", action="store_true", help="validate with --no-data (no data set is loaded)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="address-space cap of this process (0: none)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every mutant")
    args = parser.parse_args(argv)
    names = args.pipelines.split(",") if args.pipelines else sorted(p.stem for p in PIPELINES.glob("*.yaml"))
    os.chdir(ROOT)  # pipelines name data relative to the repository
    summaries = []

    def progress(o: Outcome) -> None:
        if args.verbose or o.result == "crashed":
            print(f"  {o.pipeline:12} {o.mutation:13} {o.where} = {o.value}: {o.result} {o.detail}", flush=True)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, memory_limit(args.memory_gb):
        for name in names:
            summaries.append(fuzz_pipeline(PIPELINES / f"{name}.yaml", args.mutants, seed=args.seed,
                                           folder=Path(folder), no_data=args.no_data, seconds=args.timeout,
                                           progress=progress))
    print(f"\nddkit config validate{' --no-data' if args.no_data else ''} on {args.mutants} mutants per pipeline "
          f"(seed {args.seed}, {time.perf_counter() - start:.0f} s):\n")
    print(table(summaries))
    kinds = sorted({(o.mutation, o.result) for s in summaries for o in s.outcomes})
    by_kind = {k: sum(o.mutation == k[0] and o.result == k[1] for s in summaries for o in s.outcomes) for k in kinds}
    print("\nby mutation: " + ", ".join(f"{m} {r} {n}" for (m, r), n in by_kind.items()))
    return 1 if any(s.crashes for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
