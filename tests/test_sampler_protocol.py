"""The composable sampler protocol: the loop written once (state, start/step/finished), the
corrector and unmasking-rule composition points, the parameterization passed to ``sample``,
parameters declared once, and samplers written against the earlier protocol."""

import inspect
from typing import Annotated

import pytest
import torch
from pydantic import Field

import ddkit
from ddkit import steps
from ddkit.testing import MarkovChain, OracleDenoiser
from ddkit.testing.oracles import sequence_ids
from ddkit.testing.stats import empirical_distribution, total_variation, tv_bound

V, N = 3, 4


def masked(schedule="linear"):
    return ddkit.build("process", "masked", vocab_size=V, schedule=schedule)


def flat(x_t, t):
    return torch.zeros(*x_t.shape, V)


class Recording:
    """A denoiser that records the times it is called with."""

    def __init__(self):
        self.times = []

    def __call__(self, x_t, t):
        self.times.append(t.clone())
        return torch.zeros(*x_t.shape, V)


class CountingCorrector(ddkit.Corrector):
    """Remasks nothing; records the step and time it ran at and calls the denoiser once."""

    def __init__(self, **common):
        super().__init__(**common)
        self.seen = []

    def correct(self, state):
        self.seen.append((state.step, float(state.t[0])))
        state.calls.log_mean(state.x, state.t)


class RemaskAll(ddkit.Corrector):
    """Masks every free position again (a deliberately bad corrector: the sampler must run
    all its steps when one is present, not stop once nothing is masked)."""

    requires = frozenset({"absorbing"})

    def correct(self, state):
        state.x = torch.where(state.fixed, state.x, state.process.mask_id)


class CommitAll(ddkit.UnmaskingRule):
    """Commits every free masked position at the first step to the mean's argmax."""

    def step(self, state, i, s, t, *, last, tokens, argmax, backend):
        best = state.calls.log_mean(state.x, t).argmax(-1)
        return torch.where(state.free_masked(), best, state.x)


class Plugin:
    @staticmethod
    @ddkit.hookimpl
    def register_correctors(register):
        register("counting", CountingCorrector, summary="test: records when it runs")
        register("remask_all", RemaskAll, summary="test: remasks every free position")

    @staticmethod
    @ddkit.hookimpl
    def register_unmasking_rules(register):
        register("commit_all", CommitAll, summary="test: commit everything at once")


@pytest.fixture(autouse=True, scope="module")
def test_plugin():
    ddkit.get_registry().add_plugin(Plugin, name="test:sampler-protocol", source="tests")
    yield
    ddkit.reset_registry()  # other test modules see only installed plugins


def test_corrector_runs_after_every_kth_step_at_the_same_time_and_counts_in_nfe():
    sampler = ddkit.build("sampler", "ancestral", steps=6, cache=False, corrector={"name": "counting", "every": 2})
    result = sampler.sample(flat, masked(), num_samples=2, length=N, generator=torch.Generator().manual_seed(0),
                            record_trajectory=True)
    grid = ddkit.time_grid(6)
    # after steps 2 and 4, at the time the predictor step reached; never after the last step
    assert sampler.corrector.seen == [(2, float(grid[2])), (4, float(grid[4]))]
    assert result.steps == 6 and result.nfe == 6 + 2
    assert len(result.trajectory) == 7


def test_with_a_corrector_a_masked_sampler_runs_all_its_steps():
    """Without a corrector ancestral stops once nothing is masked; a corrector may remask,
    so the walk goes on to t = 0 (here the corrector remasks everything, so only the last
    step, which has no corrector after it, leaves clean tokens)."""
    plain = ddkit.build("sampler", "ancestral", steps=50).sample(
        flat, masked(), num_samples=2, length=N, generator=torch.Generator().manual_seed(1))
    assert plain.steps < 50
    sampler = ddkit.build("sampler", "ancestral", steps=50, corrector="remask_all")
    result = sampler.sample(flat, masked(), num_samples=2, length=N, generator=torch.Generator().manual_seed(1))
    assert result.steps == 50
    assert bool((result.tokens < V).all())


def test_a_corrector_needing_a_capability_is_refused_with_the_process_named():
    sampler = ddkit.build("sampler", "euler", steps=3, corrector="remask_all")
    uniform = ddkit.build("process", "uniform", vocab_size=V)
    with pytest.raises(ValueError, match=r"corrector RemaskAll needs a process with \['absorbing'\]; UniformProcess"):
        sampler.sample(flat, uniform, num_samples=1, length=N)


def test_unmasking_rule_is_chosen_by_name_and_replaces_the_masked_step():
    sampler = ddkit.build("sampler", {"name": "ancestral", "steps": 8, "rule": "commit_all"})

    def prefers_two(x_t, t):
        return 5.0 * torch.nn.functional.one_hot(torch.full(x_t.shape, 2), V).float()

    prompt = torch.tensor([[0, -1, -1, 1]])
    result = sampler.sample(prefers_two, masked(), prompt=prompt)
    assert result.tokens.tolist() == [[0, 2, 2, 1]]
    assert result.steps == 1 and result.nfe == 1


def test_a_remasking_rule_on_a_non_absorbing_process_is_refused():
    sampler = ddkit.build("sampler", "ancestral", steps=3, rule="commit_all")
    with pytest.raises(ValueError, match="unmasking rule CommitAll needs an absorbing process"):
        sampler.sample(flat, ddkit.build("process", "uniform", vocab_size=V), num_samples=1, length=N)


def test_parameterization_given_to_sample_replaces_the_samplers_own():
    """A pipeline hands its parameterization to ``sample``: with time conditioning the
    denoiser sees the grid's times, without it t = 0."""
    sampler = ddkit.build("sampler", "ancestral", steps=4, cache=False)
    plain, timed = Recording(), Recording()
    sampler.sample(plain, masked(), num_samples=1, length=N, generator=torch.Generator().manual_seed(0))
    assert all(float(t.abs().max()) == 0.0 for t in plain.times)
    conditioned = ddkit.build("parameterization", "mean", time_conditioning=True)
    sampler.sample(timed, masked(), num_samples=1, length=N, generator=torch.Generator().manual_seed(0),
                   parameterization=conditioned)
    grid = ddkit.time_grid(4)
    assert [float(t[0]) for t in timed.times] == [float(g) for g in grid[: len(timed.times)]]
    assert sampler.parameterization.time_conditioning is False  # the sampler itself is unchanged


def test_every_builtin_sampler_takes_the_parameterization():
    for record in ddkit.list_components("sampler"):
        if record.source == "ddkit":
            assert record.factory.takes_parameterization(), record.name


def test_a_sampler_overriding_sample_with_the_earlier_signature_keeps_working():
    class Legacy(ddkit.Sampler):
        requires = frozenset({"absorbing"})

        def __init__(self):
            self.parameterization = ddkit.build("parameterization", "mean")

        def sample(self, denoiser, process, *, num_samples=None, length=None, prompt=None,
                   generator=None, device=None, record_trajectory=False):
            self.check_process(process)
            x, fixed = self.initial_state(process, num_samples=num_samples, length=length, prompt=prompt,
                                          generator=generator, device=device)
            calls = ddkit.DenoiserCalls(denoiser, process, self.parameterization)
            tokens = steps.sample_categorical(calls(x, torch.ones(x.shape[0])).exp(), generator=generator)
            return ddkit.SampleResult(tokens=torch.where(fixed, x, tokens), nfe=calls.nfe, steps=1)

    assert not Legacy.takes_parameterization()
    result = Legacy().sample(flat, masked(), num_samples=2, length=N, generator=torch.Generator().manual_seed(0))
    assert result.nfe == 1 and bool((result.tokens < V).all())


def test_a_sampler_with_neither_step_nor_sample_says_so():
    class Empty(ddkit.Sampler):
        pass

    with pytest.raises(NotImplementedError, match="Empty implements neither step"):
        Empty().sample(flat, masked(), num_samples=1, length=N)


def test_state_lives_on_the_state_not_the_sampler():
    """One sampler object runs two samplings with different step counts of its grid (the
    per-run grid is in ``state.scratch``); identical seeds give identical samples."""
    sampler = ddkit.build("sampler", "ancestral", steps=5)
    a = sampler.sample(flat, masked(), num_samples=3, length=N, generator=torch.Generator().manual_seed(3))
    sampler.sample(flat, masked("cosine"), num_samples=1, length=2, generator=torch.Generator().manual_seed(4))
    b = sampler.sample(flat, masked(), num_samples=3, length=N, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens) and a.nfe == b.nfe


def test_a_new_grid_sampler_in_a_few_lines_samples_the_data_law():
    """A sampler on the template needs only its step: the masked posterior step by hand with
    the reusable pieces; with the exact denoiser its samples follow the data law (total
    variation within the McDiarmid bound, failure probability 1e-6)."""

    class Posterior(ddkit.GridSampler):
        requires = frozenset({"absorbing"})

        def step(self, state):
            t, s = self.times(state)
            state.x = steps.posterior_step(state, state.calls.log_mean(state.x, t), s, t, tokens=self.tokens,
                                           last=self.last_step(state))
            state.t = s

    chain = MarkovChain(V, seed=2, concentration=0.5)
    process = masked()
    draws = 20_000
    result = Posterior(steps=4).sample(OracleDenoiser(chain, process), process, num_samples=draws, length=N,
                                       generator=torch.Generator().manual_seed(0))
    law = empirical_distribution(sequence_ids(result.tokens, V), V**N)
    truth = chain.probabilities(N)
    assert float(total_variation(law, truth)) < tv_bound(truth, draws)


def test_sampler_parameters_are_declared_once_in_the_signature():
    """The params model of every built-in sampler is derived from its ``__init__`` (with the
    shared parameters inherited through ``**kwargs``), and its YAML fields are unchanged."""
    fields = {r.name: set(r.params.model_fields) for r in ddkit.list_components("sampler") if r.source == "ddkit"}
    grid = {"steps", "grid", "cache", "final_argmax", "corrector", "temperature", "top_k", "top_p", "parameterization"}
    assert fields["ancestral"] == grid | {"backend", "rule"}
    assert fields["euler"] == fields["analytic"] == grid
    assert fields["first_hitting"] == {"temperature", "top_k", "top_p", "parameterization", "backend"}
    params = ddkit.get_registry().get("sampler", "ancestral").params
    for bad in ({"steps": 0}, {"temperature": -1.0}, {"temperature": float("nan")}, {"top_p": 1.5},
                {"backend": "banana"}, {"grid": "log"}):
        with pytest.raises(ddkit.ParameterError):
            ddkit.build("sampler", "ancestral", **bad)
    assert params.model_fields["steps"].default == inspect.signature(ddkit.GridSampler.__init__).parameters["steps"].default


def test_corrector_every_is_validated_through_the_inherited_signature():
    with pytest.raises(ddkit.ParameterError, match="every"):
        ddkit.build("sampler", "ancestral", corrector={"name": "counting", "every": 0})
    assert set(ddkit.get_registry().get("corrector", "counting").params.model_fields) == {"every"}


def test_a_plugin_sampler_declares_its_own_parameter_in_one_place():
    class Every(ddkit.TokenSampler):
        def __init__(self, k: Annotated[int, Field(ge=2)] = 3, **token_params):
            super().__init__(**token_params)
            self.k = k

    model = ddkit.params_model(Every)
    assert set(model.model_fields) == {"k", "temperature", "top_k", "top_p", "parameterization"}
    assert model().k == 3
    with pytest.raises(Exception, match="greater than or equal to 2"):
        model(k=1)
