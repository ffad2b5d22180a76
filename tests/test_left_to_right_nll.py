"""The exact NLL of a masked model decoded left to right (``eval.left_to_right``): the exact
NLL with the exact denoiser, a normalised distribution for any network (enumeration), and the
run's evaluation reports it beside the bound."""

import itertools
import math

import pytest
import torch

import ddkit
from ddkit.contrib.evaluate import left_to_right_nll
from ddkit.testing import MarkovChain, OracleDenoiser


def test_with_the_exact_denoiser_it_is_the_exact_nll():
    chain = MarkovChain(3, seed=2, concentration=0.7)
    process = ddkit.build("process", "masked", vocab_size=3, schedule="linear")
    x0 = chain.sample(20, 6, torch.Generator().manual_seed(0))
    mean = ddkit.build("parameterization", "mean")
    result = left_to_right_nll(OracleDenoiser(chain, process), process, mean, x0, batch_size=7)
    exact = float(-chain.log_prob(x0).double().mean()) / 6
    assert result.nats_per_token == pytest.approx(exact, rel=1e-6)  # the mean parameterization normalises in float32
    assert result.sequences == 20 and result.tokens_per_sequence == 6


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_it_is_a_normalised_distribution_for_any_network(schedule):
    """sum over all V^N sequences of exp(-N * nll(x)) = 1, for a random time-conditioned net."""
    torch.manual_seed(0)
    V, N = 3, 4
    net = ddkit.build("model", "dit", vocab_size=V, width=16, depth=1, heads=2, max_seq_len=N,
                      time_conditioning=True).double().eval()
    process = ddkit.build("process", "masked", vocab_size=V, schedule=schedule)
    mean = ddkit.build("parameterization", "mean", time_conditioning=True)
    every = torch.tensor(list(itertools.product(range(V), repeat=N)))
    total = 0.0
    for x in every:  # one at a time: the per-sequence values
        total += math.exp(-N * left_to_right_nll(net, process, mean, x[None]).nats_per_token)
    assert total == pytest.approx(1.0, abs=1e-5)  # float32 normalisation inside the parameterization


def test_refuses_a_process_that_is_not_masked():
    process = ddkit.build("process", "uniform", vocab_size=3, schedule="linear")
    with pytest.raises(ValueError, match="masked"):
        left_to_right_nll(lambda x, t: torch.zeros(*x.shape, 3), process, ddkit.build("parameterization", "mean"),
                          torch.zeros(2, 4, dtype=torch.long))
