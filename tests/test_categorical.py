"""Float64 categorical sampling and the logit filters, against brute-force definitions."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ddkit.categorical import filter_logits, sample_categorical

logit_rows = st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=8)


def test_inverse_cdf_picks_the_right_category():
    probs = torch.tensor([0.0, 0.2, 0.0, 0.5, 0.3], dtype=torch.float64)
    cases = {0.0: 1, 0.1999: 1, 0.2: 3, 0.6999: 3, 0.7: 4, 0.999999: 4}
    for u, expected in cases.items():
        got = sample_categorical(probs[None], uniforms=torch.tensor([u], dtype=torch.float64))
        assert int(got[0]) == expected, u


@given(row=logit_rows, u=st.floats(0.0, 1.0, exclude_max=True))
def test_zero_probability_categories_are_never_drawn(row, u):
    logits = torch.tensor(row, dtype=torch.float64)
    logits[0] = float("-inf")
    if bool(torch.isinf(logits).all()):
        return
    probs = logits.softmax(-1)
    k = int(sample_categorical(probs[None], uniforms=torch.tensor([u], dtype=torch.float64))[0])
    assert float(probs[k]) > 0


def test_tail_category_is_drawn_at_its_rate_in_float64():
    """A category of probability 1e-9 owns the uniforms in [1 - 1e-9, 1): drawing uniforms from
    that interval (and just below it) shows the float64 inverse CDF resolves it exactly."""
    probs = torch.tensor([1 - 1e-9, 1e-9], dtype=torch.float64)
    edge = torch.tensor([1 - 1e-9 - 1e-15, 1 - 1e-9 + 1e-15, 1 - 1e-12], dtype=torch.float64)
    got = sample_categorical(probs.expand(3, 2), uniforms=edge)
    assert got.tolist() == [0, 1, 1]


def test_frequencies_match_probabilities():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.1, 0.6, 0.05, 0.25], dtype=torch.float64)
    n = 100_000
    counts = torch.bincount(sample_categorical(probs.expand(n, 4), generator=g), minlength=4).double()
    chi2 = float(((counts - n * probs) ** 2 / (n * probs)).sum())
    assert chi2 < 30.66  # 3 degrees of freedom, p = 1e-6


def test_rows_without_mass_raise():
    with pytest.raises(ValueError, match="positive sum"):
        sample_categorical(torch.zeros(2, 3))


@given(row=logit_rows, k=st.integers(1, 8))
def test_top_k_keeps_the_k_largest(row, k):
    logits = torch.tensor(row, dtype=torch.float64)
    out = filter_logits(logits, top_k=k)
    kept = torch.isfinite(out)
    kth = sorted(row, reverse=True)[min(k, len(row)) - 1]
    assert kept.tolist() == [v >= kth for v in row]


@given(row=logit_rows, p=st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_nucleus(row, p):
    logits = torch.tensor(row, dtype=torch.float64)
    out = filter_logits(logits, top_p=p)
    probs = logits.softmax(-1)
    kept = torch.isfinite(out)
    # every kept entry is needed: the mass strictly above it is < p
    for i in range(len(row)):
        above = float(probs[probs > probs[i]].sum())
        ties_before = float(probs[(probs == probs[i])].sum()) - float(probs[i])
        if kept[i]:
            assert above < p + 1e-12
        else:
            assert above + ties_before >= p - 1e-12
    assert float(probs[kept].sum()) >= min(p, 1.0) - 1e-12


def test_temperature():
    logits = torch.tensor([1.0, 2.0, 4.0])
    torch.testing.assert_close(filter_logits(logits, temperature=2.0), logits.double() / 2)
    assert torch.isfinite(filter_logits(logits, temperature=0.0)).tolist() == [False, False, True]
    with pytest.raises(ValueError):
        filter_logits(logits, temperature=-1.0)
    with pytest.raises(ValueError):
        filter_logits(logits, top_p=0.0)
    with pytest.raises(ValueError):
        filter_logits(logits, top_k=0)
    assert math.isclose(float(filter_logits(logits, temperature=0.5).softmax(-1)[2]),
                        float(torch.tensor([2.0, 4.0, 8.0], dtype=torch.float64).softmax(-1)[2]))
