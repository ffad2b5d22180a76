"""Hypothesis strategies of ddkit.testing.strategies: they draw what they promise, and they
drive property tests of the built-ins."""

import torch
from hypothesis import given
from hypothesis import strategies as st

import ddkit
from ddkit.testing import check_schedule
from ddkit.testing import strategies as dst


@given(dst.rate_matrices(st.integers(1, 6)), dst.times(min_value=0.0, max_value=2.0))
def test_rate_matrices_are_generators_and_exponentiate_to_stochastic_matrices(rates, t):
    S = rates.shape[0]
    assert rates.shape == (S, S) and rates.dtype == torch.float64
    off = rates - torch.diag(torch.diagonal(rates))
    assert bool((off >= 0).all())
    torch.testing.assert_close(rates.sum(-1), torch.zeros(S, dtype=torch.float64), rtol=0, atol=1e-12)
    q = torch.linalg.matrix_exp(t * rates)
    assert bool((q > -1e-9).all())
    torch.testing.assert_close(q.sum(-1), torch.ones(S, dtype=torch.float64), rtol=0, atol=1e-9)


@given(dst.transition_matrices(st.integers(1, 5)), dst.probability_vectors(st.integers(1, 5)))
def test_stochastic_draws(matrix, vector):
    torch.testing.assert_close(matrix.sum(-1), torch.ones(len(matrix), dtype=torch.float64))
    assert bool((matrix >= 0).all()) and bool((vector >= 0).all())
    assert float(vector.sum()) == 1.0 or abs(float(vector.sum()) - 1.0) < 1e-12


@given(dst.time_grids(max_steps=12))
def test_time_grids_decrease_from_one_to_zero(grid):
    assert grid[0] == 1.0 and grid[-1] == 0.0 and grid.dtype == torch.float64
    assert bool((grid[1:] < grid[:-1]).all())


@given(dst.time_pairs(exclude_min=True))
def test_time_pairs_are_ordered(pair):
    s, t = pair
    assert 0.0 < s <= t <= 1.0


@given(dst.vocab_sizes(2, 6).flatmap(
    lambda V: st.tuples(st.just(V), dst.token_batches(V, mask_id=V))))
def test_token_batches_hold_tokens_and_masks(drawn):
    V, x = drawn
    assert x.dtype == torch.long and x.dim() == 2
    assert bool(((x >= 0) & (x <= V)).all())


@given(dst.prompts(3, batch_size=2, length=st.integers(1, 5)))
def test_prompts_are_tokens_or_free(prompt):
    assert prompt.shape[0] == 2
    assert bool(((prompt >= -1) & (prompt < 3)).all())


@given(dst.torch_generators())
def test_generators_replay_from_their_repr(generator):
    seed = int(repr(generator).removeprefix("SeededGenerator(").removesuffix(")"))
    first = torch.rand(3, generator=generator)
    torch.testing.assert_close(first, torch.rand(3, generator=torch.Generator().manual_seed(seed)))


def test_schedules_strategy_draws_every_buildable_registered_schedule():
    names = set()

    @given(dst.schedules())
    def collect(schedule):
        names.add(type(schedule).__name__)

    collect()
    # every built-in scalar schedule; a vector schedule is sized by its process's vocabulary
    builtin = {type(ddkit.build("schedule", r.name)).__name__
               for r in ddkit.list_components("schedule")
               if r.source == "ddkit" and "vocab_size" not in r.params.model_fields}
    assert builtin <= names


@given(dst.schedules(["polynomial", "geometric", "loglinear"], params={
    "polynomial": st.fixed_dictionaries({"exponent": st.floats(0.25, 6.0)}),
    "geometric": st.fixed_dictionaries({"sigma_min": st.floats(1e-5, 1e-2),
                                        "sigma_max": st.floats(5.0, 30.0)}),
    "loglinear": st.fixed_dictionaries({"eps": st.floats(0.0, 5e-3)}),  # tolerance is 1e-2
}))
def test_drawn_schedule_parameters_pass_the_conformance_kit(schedule):
    check_schedule(schedule)


@given(dst.processes(vocab_size=dst.vocab_sizes(1, 5)), dst.torch_generators())
def test_drawn_processes_sample_their_marginals_in_range(process, generator):
    x0 = torch.randint(0, process.vocab_size, (3, 4), generator=generator)
    t = torch.rand(3, generator=generator, dtype=torch.float64)
    x_t = process.sample_marginal(x0, t, generator=generator)
    assert bool(((x_t >= 0) & (x_t < process.num_states)).all())
    probs = process.marginal_probs(x0, t)
    assert bool((probs.gather(-1, x_t[..., None]) > 0).all())
