"""The config fuzzer (``benchmarks/fuzz_configs.py``), small and seeded: 50 mutants of every
pipeline in ``pipelines/`` (a key deleted, a value of another type, numbers out of range,
NaN and infinities, huge integers, unknown plugin names, broken interpolations, nested
junk), each validated in-process by ``ddkit config validate``. Every mutant must be rejected
with a clear message or accepted as valid; none may end in a traceback."""

import importlib.util
import sys

import pytest

from pipeline_helpers import ROOT

spec = importlib.util.spec_from_file_location("fuzz_configs", ROOT / "benchmarks" / "fuzz_configs.py")
fuzz = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = fuzz  # dataclasses look their module up while the class is made
spec.loader.exec_module(fuzz)

PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
MUTANTS = 50


@pytest.mark.parametrize("pipeline", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_every_mutant_is_rejected_clearly_or_accepted(pipeline, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("TEXT8_PATH", raising=False)  # the text8 pipeline's data stays absent: no 100 MB load
    summary = fuzz.fuzz_pipeline(pipeline, MUTANTS, seed=0, folder=tmp_path, seconds=30)
    assert len(summary.outcomes) == MUTANTS
    assert not summary.crashes, "\n".join(f"{o.mutation} {o.where} = {o.value}: {o.detail}" for o in summary.crashes)
    assert summary.count("rejected") >= MUTANTS // 2  # the mutations do reach the checks
    assert {o.mutation for o in summary.outcomes} == set(fuzz.MUTATIONS)


def test_the_fuzzer_is_seeded():
    doc = {"name": "x", "model": {"name": "dit", "width": 8}, "train": {"lr": 0.1, "steps": 3}}
    first = list(fuzz.mutants(doc, 20, fuzz.random.Random(5)))
    assert first == list(fuzz.mutants(doc, 20, fuzz.random.Random(5)))
    assert first != list(fuzz.mutants(doc, 20, fuzz.random.Random(6)))
    assert doc == {"name": "x", "model": {"name": "dit", "width": 8}, "train": {"lr": 0.1, "steps": 3}}


@pytest.mark.parametrize("exit_code,output,exception,result", [
    (0, "p.yaml: valid (vocabulary 8, 100 model parameters)\n", None, "accepted"),
    (2, "Error: invalid configuration in p.yaml (2 problems):\n  - a: bad (got 1)\n  - b: bad (got 2)\n", None,
     "rejected"),
    (1, "Error: p.yaml: the checkpoint is damaged\n", None, "rejected"),
    (1, "", KeyError("torch"), "crashed"),
    (1, "Traceback (most recent call last):\n  ...\n", None, "crashed"),
    (2, "Error: invalid configuration (1 problem):\n  - a: cannot parse\n    full_key: a\n", None, "crashed"),
    (2, "Error: invalid configuration (2 problems):\n  - a: bad\n", None, "crashed"),
    (1, "something went wrong\n", None, "crashed"),
    (0, "", None, "crashed"),
])
def test_the_judge_tells_a_clear_rejection_from_a_crash(exit_code, output, exception, result):
    assert fuzz.judge(exit_code, output, exception)[0] == result
