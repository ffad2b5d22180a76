"""The code in docs/testing.md runs and says what it shows."""

import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_walkthrough_schedule_passes_and_the_documented_bug_is_caught():
    blocks = python_blocks()
    namespace = {}
    exec(blocks[0], namespace)  # the schedule
    exec(blocks[1].replace("print(report)", "printed = str(report)"), namespace)
    assert namespace["printed"] == "conformance of ExponentialSchedule(): 7 passed"

    from ddkit.testing import check_schedule

    class Forgetful(namespace["ExponentialSchedule"]):
        def alpha_prime(self, t):  # the bug shown on the page: the factor rate forgotten
            return super().alpha_prime(t) / self.rate

    report = check_schedule(Forgetful(), raise_on_failure=False)
    (problem,) = report.problems
    shown = re.search(r"```text\n(.*?)```", DOC.read_text(), flags=re.S).group(1)
    assert "check_schedule_derivative failed for" in shown
    assert "actual = -1.0212927031856107" in shown and "actual = -1.0212927031856107" in problem.message
    assert "expected = -3.06387810955" in problem.message and "t = 0.01" in problem.message


def test_oracle_example_runs():
    block = next(b for b in python_blocks() if "OracleDenoiser(chain, process)" in b)
    namespace = {}
    exec(block, namespace)
    oracle, x0 = namespace["oracle"], namespace["x0"]
    logits = oracle(torch.full_like(x0, 4), torch.full((8,), 0.5))
    assert logits.shape == (8, 32, 4)


def test_time_conditioned_sampler_example_runs_the_time_check():
    block = next(b for b in python_blocks() if "time_conditioning" in b and "check_sampler" in b)
    namespace = {}
    exec(block, namespace)
    report = namespace["report"]
    assert report.ok and "check_sampler_time_conditioned_denoiser" in [r.name for r in report.results]
