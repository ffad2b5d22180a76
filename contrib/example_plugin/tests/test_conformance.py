"""The example plugin runs ddkit's conformance kit on its own components.

This is what a third-party author writes: one parametrized test over every applicable check
(``ddkit.testing.parametrize_with_checks``), and a check against an exact oracle.
"""

import torch

import ddkit
from ddkit.testing import MarkovChain, OracleDenoiser, parametrize_with_checks
from ddkit.testing.oracles import sequence_ids
from ddkit.testing.stats import empirical_distribution, total_variation, tv_bound

SCHEDULES = [ddkit.build("schedule", "exponential"), ddkit.build("schedule", "exponential", rate=0.5),
             ddkit.build("schedule", "exponential", rate=8.0)]
PROCESS = ddkit.build("process", "masked", vocab_size=4, schedule={"name": "exponential"})
SAMPLERS = [ddkit.build("sampler", "any_order"), ddkit.build("sampler", "any_order", tokens_per_step=3)]


@parametrize_with_checks(SCHEDULES + [PROCESS] + [(sampler, PROCESS) for sampler in SAMPLERS])
def test_conformance(component, check):
    check()


def test_one_token_per_step_with_the_oracle_samples_the_data_distribution():
    """Unmasking one uniformly chosen position at a time from the exact posterior is exact
    any-order sampling: the samples follow the data law (total variation within the
    McDiarmid bound, failure probability 1e-6)."""
    V, N, draws = 3, 4, 20_000
    chain = MarkovChain(V, seed=0, concentration=0.5)
    process = ddkit.build("process", "masked", vocab_size=V, schedule="exponential")
    result = ddkit.build("sampler", "any_order").sample(
        OracleDenoiser(chain, process), process, num_samples=draws, length=N,
        generator=torch.Generator().manual_seed(0))
    truth = chain.probabilities(N)
    law = empirical_distribution(sequence_ids(result.tokens, V), V**N)
    assert total_variation(law, truth) <= tv_bound(truth, draws)
