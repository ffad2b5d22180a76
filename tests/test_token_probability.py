"""The token_probability kernel: the Numba and torch backends give the reference bit for bit,
it equals the softmax, and bad inputs are refused."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddkit
import ddkit.kernels as kernels
from ddkit.kernels import reference_token_probability


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 300), st.sampled_from([torch.float32, torch.float64]),
       st.floats(0.1, 30.0), st.integers(0, 2**31 - 1))
def test_backends_equal_the_reference_bit_for_bit_and_the_softmax(rows, vocab, dtype, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=gen, dtype=torch.float64) * scale).to(dtype)
    if vocab > 1:
        logits[0, 0] = float("-inf")  # filtered entries are allowed
    tokens = torch.randint(0, vocab, (rows,), generator=gen)
    reference = reference_token_probability(logits, tokens)
    for backend in ("numba", "torch"):
        assert torch.equal(kernels.token_probability(logits, tokens, backend=backend), reference), backend
    softmax = torch.softmax(logits.double(), -1).gather(-1, tokens[:, None]).squeeze(-1)
    torch.testing.assert_close(reference, softmax, rtol=1e-13, atol=1e-300)


def test_shapes_and_errors():
    logits = torch.randn(2, 3, 5)
    tokens = torch.randint(0, 5, (2, 3))
    assert kernels.token_probability(logits, tokens).shape == (2, 3)
    with pytest.raises(ValueError, match="tokens must lie in 0..4"):
        kernels.token_probability(logits, torch.full((2, 3), 5))
    with pytest.raises(ValueError, match="LongTensor of shape"):
        kernels.token_probability(logits, tokens[:, :2])
    bad = logits.clone()
    bad[1, 2, 0] = float("nan")
    for backend in ("numba", "torch"):
        with pytest.raises(ddkit.NumericalError, match="NaN or infinite"):
            kernels.token_probability(bad, tokens, backend=backend)
    assert kernels.token_probability(torch.empty(0, 5), torch.empty(0, dtype=torch.long)).shape == (0,)
