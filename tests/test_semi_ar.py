"""Semi-autoregressive blocks around any masked sampler: block order, prompts, step budgets,
NFE, end-of-sequence stopping, and exactness with the oracle denoiser."""

import pytest
import torch

import ddkit
from ddkit.testing import MarkovChain, OracleDenoiser
from ddkit.testing.oracles import sequence_ids
from ddkit.testing.stats import empirical_distribution, total_variation, tv_bound

V = 3


def masked():
    return ddkit.build("process", "masked", vocab_size=V, schedule="linear")


def flat(x_t, t):
    return torch.zeros(*x_t.shape, V)


def semi_ar(block_length, inner, **kwargs):
    return ddkit.build("sampler", "semi_ar", block_length=block_length, sampler=inner, **kwargs)


@pytest.mark.parametrize("inner", [{"name": "ancestral", "steps": 4},
                                   {"name": "ancestral", "steps": 3, "rule": "low_confidence"},
                                   {"name": "ancestral", "steps": 6, "rule": {"name": "remdm", "strategy": "cap",
                                                                             "eta": 0.3}},
                                   {"name": "ancestral", "steps": 4, "rule": "threshold"},
                                   {"name": "first_hitting"}])
def test_blocks_are_generated_left_to_right_after_the_prompt(inner):
    sampler = semi_ar(3, inner)
    prompt = torch.full((2, 11), -1)
    prompt[:, :2] = torch.tensor([0, 1])
    result = sampler.sample(flat, masked(), prompt=prompt, generator=torch.Generator().manual_seed(0),
                            record_trajectory=True)
    assert bool((result.tokens < V).all()) and result.tokens[:, :2].tolist() == [[0, 1]] * 2
    # blocks [2,5), [5,8), [8,11): a later block only starts once the earlier ones are done
    for x in result.trajectory:
        filled = x != V
        for later, earlier in ((slice(5, 8), slice(2, 5)), (slice(8, 11), slice(5, 8))):
            assert not bool((filled[:, later].any(-1) & ~filled[:, earlier].all(-1)).any())
    assert len(result.trajectory) == result.steps + 1


def test_each_block_gets_the_inner_step_budget_and_nfe_adds_up():
    sampler = semi_ar(4, {"name": "ancestral", "steps": 5, "cache": False, "rule": "low_confidence"})
    result = sampler.sample(flat, masked(), num_samples=2, length=12, generator=torch.Generator().manual_seed(0))
    assert result.steps == 3 * 4  # low_confidence commits at least one per step: 4 steps fill 4 positions
    assert result.nfe == result.steps


def test_one_block_is_the_inner_sampler():
    inner = {"name": "ancestral", "steps": 6}
    a = ddkit.build("sampler", inner).sample(flat, masked(), num_samples=3, length=6,
                                             generator=torch.Generator().manual_seed(4))
    b = semi_ar(6, inner).sample(flat, masked(), num_samples=3, length=6, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.tokens, b.tokens) and a.nfe == b.nfe and a.steps == b.steps


def test_end_of_sequence_stops_generation():
    def prefers_eos(x_t, t):
        return 8.0 * torch.nn.functional.one_hot(torch.full(x_t.shape, 2), V).float()

    sampler = semi_ar(2, {"name": "ancestral", "steps": 2}, eos_id=2)
    result = sampler.sample(prefers_eos, masked(), num_samples=2, length=10, generator=torch.Generator().manual_seed(0))
    assert bool((result.tokens == 2).all())
    assert result.nfe <= 2  # the first block already ends every sequence
    with pytest.raises(ValueError, match="eos_id must be a clean token id"):
        semi_ar(2, {"name": "ancestral"}, eos_id=7).sample(flat, masked(), num_samples=1, length=4)


def test_an_inner_sampler_that_overrides_sample_is_refused():
    class Legacy(ddkit.Sampler):
        def sample(self, denoiser, process, **kwargs):
            raise AssertionError

    with pytest.raises(ValueError, match="inner sampler on the step protocol"):
        ddkit.build("sampler", "semi_ar", sampler=Legacy())


def test_semi_ar_ancestral_with_the_oracle_samples_the_data_law():
    """Blocks of an exact walk are exact: with the exact denoiser (which sees later blocks
    masked) and first hitting (exact simulation) inside each block, the samples follow the
    data law (total variation within the McDiarmid bound, failure probability 1e-6)."""
    N, draws = 4, 20_000
    chain = MarkovChain(V, seed=1, concentration=0.5)
    process = masked()
    sampler = semi_ar(2, {"name": "first_hitting"})  # exact CTMC simulation inside each block
    result = sampler.sample(OracleDenoiser(chain, process), process, num_samples=draws, length=N,
                            generator=torch.Generator().manual_seed(0))
    law = empirical_distribution(sequence_ids(result.tokens, V), V**N)
    truth = chain.probabilities(N)
    assert float(total_variation(law, truth)) < tv_bound(truth, draws)
