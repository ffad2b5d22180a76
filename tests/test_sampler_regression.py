"""The built-in samplers give, for a fixed seed, exactly the samples (tokens, NFE, steps and
trajectory) that they gave before they were rewritten on the composable sampler protocol
(recorded at commit 30326ba; see ``sampler_regression.py``)."""

import json

import pytest

from sampler_regression import CASES, DATA, case_id, run_case

RECORDED = json.loads(DATA.read_text())


@pytest.mark.parametrize("with_prompt", [False, True], ids=["free", "prompt"])
@pytest.mark.parametrize("i", range(len(CASES)), ids=[case_id(i) for i in range(len(CASES))])
def test_samples_bit_identical_to_recorded(i, with_prompt):
    key = f"{case_id(i)}-{'prompt' if with_prompt else 'free'}"
    assert run_case(i, with_prompt=with_prompt) == RECORDED[key]


def test_every_sampler_that_was_rewritten_is_covered():
    assert {"ancestral", "euler", "analytic", "first_hitting"} <= {name for name, _, _ in CASES}
