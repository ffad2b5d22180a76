"""Every built-in schedule, process and sampler passes the conformance kit (ddkit.testing)."""

import pytest

import ddkit
from ddkit.testing import check_process, check_sampler, check_schedule, parametrize_with_checks

SCHEDULES = ["linear", "cosine", "polynomial", {"name": "polynomial", "exponent": 0.5},
             {"name": "polynomial", "exponent": 3.0}, "geometric",
             {"name": "geometric", "sigma_min": 1e-3, "sigma_max": 10.0}, "loglinear",
             {"name": "loglinear", "eps": 0.0},
             # vector-valued (one alpha per token); unequal exponents in tests/test_genmd4.py
             {"name": "learnable_polynomial", "vocab_size": 4},
             {"name": "learnable_polynomial", "vocab_size": 3, "exponent_init": 0.5, "eps": 1e-4}]


def masked(schedule, V=4):
    return ddkit.build("process", "masked", vocab_size=V, schedule=schedule)


PROCESSES = [masked(s) for s in ("linear", "cosine", {"name": "polynomial", "exponent": 0.5},
                                 "geometric", "loglinear")] + [masked("cosine", V=1), masked("linear", V=9)]
# the other processes have their own files (tests/test_uniform_process.py, test_matrix_process.py)
PROCESSES += [ddkit.build("process", "uniform", vocab_size=4, schedule="cosine"),
              ddkit.build("process", "matrix", vocab_size=3, generator="mask_uniform", schedule="cosine")]
TIMED = {"name": "mean", "time_conditioning": True}

SAMPLERS = [
    ("ancestral", {"steps": 16}),
    ("ancestral", {"steps": 8, "grid": "cosine", "cache": False}),
    ("ancestral", {"steps": 6, "parameterization": {"name": "mean", "time_conditioning": True}}),
    ("ancestral", {"steps": 4, "temperature": 0.8, "top_k": 3, "top_p": 0.9, "final_argmax": True}),
    ("first_hitting", {}),
    ("first_hitting", {"temperature": 0.5, "parameterization": {"name": "mean", "time_conditioning": True}}),
    # also run with the uniform and matrix processes in tests/test_euler_sampler.py and
    # tests/test_analytic_sampler.py
    ("euler", {"steps": 4}),
    ("euler", {"steps": 4, "parameterization": TIMED}),
    ("analytic", {"steps": 4, "top_p": 0.9}),
    ("analytic", {"steps": 4, "parameterization": TIMED}),
    ("semi_ar", {"block_length": 2, "sampler": {"name": "ancestral", "steps": 4}}),
    ("semi_ar", {"block_length": 3, "sampler": {"name": "ancestral", "steps": 3,
                                                "rule": {"name": "remdm", "strategy": "rescale", "eta": 0.5}}}),
    ("ancestral", {"steps": 6, "rule": {"name": "remdm", "strategy": "loop"}}),
    ("ancestral", {"steps": 6, "rule": "maskgit"}),
    ("ancestral", {"steps": 6, "rule": "threshold"}),
]

PAIRS = [(ddkit.build("sampler", name, **params), masked(schedule))
         for name, params in SAMPLERS for schedule in ("cosine", "loglinear")]
PAIRS += [(ddkit.build("sampler", "first_hitting"), masked("geometric", V=2)),
          (ddkit.build("sampler", "ancestral", steps=5), masked("linear", V=1))]
# the uniform process, whose optimal denoiser depends on t: the time-conditioned check has teeth
PAIRS += [(ddkit.build("sampler", name, steps=4, parameterization=TIMED),
           ddkit.build("process", "uniform", vocab_size=3, schedule="cosine"))
          for name in ("ancestral", "euler", "analytic")]


def test_every_registered_schedule_is_covered():
    covered = {s if isinstance(s, str) else s["name"] for s in SCHEDULES}
    builtin = {r.name for r in ddkit.list_components("schedule") if r.source == "ddkit"}
    assert builtin <= covered


# the insertion process (FlexMDM) is not per-token and its samplers need two-headed
# denoisers: tests/test_flexmdm.py checks them against their definition and an exact oracle
NOT_PER_TOKEN = {"insertion"}


def test_every_registered_process_is_covered():
    builtin = {r.name for r in ddkit.list_components("process") if r.source == "ddkit"} - NOT_PER_TOKEN
    covered = {type(p).__name__ for p in PROCESSES}
    assert {type(ddkit.build("process", name, vocab_size=3)).__name__ for name in builtin} <= covered


def test_every_registered_sampler_is_covered():
    builtin = {r.name for r in ddkit.list_components("sampler")
               if r.source == "ddkit" and not r.factory.requires & NOT_PER_TOKEN}
    assert builtin <= {name for name, _ in SAMPLERS}


@parametrize_with_checks([ddkit.build("schedule", s) for s in SCHEDULES])
def test_schedule_conformance(component, check):
    check()


@parametrize_with_checks(PROCESSES)
def test_process_conformance(component, check):
    check()


@parametrize_with_checks(PAIRS)
def test_sampler_conformance(component, check):
    check()


def test_one_call_runs_every_applicable_check():
    schedule_report = check_schedule(ddkit.build("schedule", "cosine"))
    assert [r.status for r in schedule_report.results] == ["passed"] * 7
    process = masked("cosine")
    names = [r.name for r in check_process(process).results]
    assert "check_process_absorbing" in names and "check_process_continuous_elbo_is_limit" in names
    report = check_sampler(ddkit.build("sampler", "first_hitting"), process)
    assert report.ok and len(report.results) == 9


def test_sampler_requirements_are_enforced():
    class WithoutCapabilities(type(masked("cosine"))):
        capabilities = frozenset()

    with pytest.raises(ValueError, match="requires process capabilities \\['absorbing'\\]"):
        check_sampler(ddkit.build("sampler", "first_hitting"), WithoutCapabilities(4, "cosine"))
