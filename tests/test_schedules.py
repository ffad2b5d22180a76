"""Schedules: monotone, endpoints, alpha' against finite differences, inverse of alpha."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ddkit

# (name, parameters, documented endpoints (alpha_0, alpha_1))
SCHEDULES = [
    ("linear", {}, (1.0, 0.0)),
    ("cosine", {}, (1.0, 0.0)),
    ("polynomial", {"exponent": 2.0}, (1.0, 0.0)),
    ("polynomial", {"exponent": 0.5}, (1.0, 0.0)),
    ("polynomial", {"exponent": 3.5}, (1.0, 0.0)),
    ("geometric", {}, (math.exp(-1e-4), math.exp(-20.0))),
    ("geometric", {"sigma_min": 1e-3, "sigma_max": 5.0}, (math.exp(-1e-3), math.exp(-5.0))),
    ("loglinear", {}, (1.0, 1e-3)),
    ("loglinear", {"eps": 0.0}, (1.0, 0.0)),
]
IDS = [f"{n}-{p}" if p else n for n, p, _ in SCHEDULES]
times = st.floats(0.0, 1.0, allow_nan=False)


@pytest.fixture(scope="module", params=SCHEDULES, ids=IDS)
def schedule(request):
    name, params, endpoints = request.param
    built = ddkit.build("schedule", name, **params)
    built.documented_endpoints = endpoints
    return built


def test_endpoints(schedule):
    assert schedule.endpoints() == pytest.approx(schedule.documented_endpoints, abs=1e-15)


@given(s=times, t=times)
def test_monotone_decreasing(schedule, s, t):
    s, t = min(s, t), max(s, t)
    a = schedule.alpha(torch.tensor([s, t], dtype=torch.float64))
    assert a[0] >= a[1]
    assert 0.0 <= float(a[1]) and float(a[0]) <= 1.0


@given(t=st.floats(0.01, 0.99))
def test_derivative_matches_central_difference(schedule, t):
    h = 1e-6
    ts = torch.tensor([t - h, t + h, t], dtype=torch.float64)
    a = schedule.alpha(ts)
    numeric = (a[1] - a[0]) / (2 * h)
    exact = schedule.alpha_prime(ts[2:])[0]
    assert abs(float(numeric - exact)) <= 1e-5 * max(1.0, abs(float(exact)))
    assert float(exact) <= 0.0


@given(t=times)
def test_inverse_of_alpha_is_identity(schedule, t):
    assert schedule.invertible
    tt = torch.tensor([t], dtype=torch.float64)
    recovered = schedule.inverse(schedule.alpha(tt))
    # the inverse is ill-conditioned where alpha is flat (alpha' -> 0): compare in alpha too
    assert abs(float(schedule.alpha(recovered) - schedule.alpha(tt))) < 1e-12 or abs(float(recovered - tt)) < 1e-6


def test_cosine_formula():
    s = ddkit.build("schedule", "cosine")
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    torch.testing.assert_close(s.alpha(t), 1 - torch.cos(math.pi / 2 * (1 - t)))


def test_loglinear_weight_is_one_over_t():
    for eps in (0.0, 1e-3, 0.1):
        s = ddkit.build("schedule", "loglinear", eps=eps)
        t = torch.linspace(0.01, 1, 50, dtype=torch.float64)
        weight = -s.alpha_prime(t) / (1 - s.alpha(t))
        torch.testing.assert_close(weight, 1 / t)


def test_geometric_is_sigma_form():
    s = ddkit.build("schedule", "geometric", sigma_min=1e-4, sigma_max=20.0)
    a0, a1 = s.endpoints()
    assert a0 == pytest.approx(math.exp(-1e-4))
    assert a1 == pytest.approx(math.exp(-20.0))


@pytest.mark.parametrize("spec", [
    {"name": "polynomial", "exponent": -1},
    {"name": "geometric", "sigma_min": 2.0, "sigma_max": 1.0},
    {"name": "loglinear", "eps": 1.0},
    {"name": "linear", "slope": 2},
])
def test_bad_parameters_are_rejected(spec):
    with pytest.raises(ddkit.ParameterError, match=spec["name"]):
        ddkit.build("schedule", spec)
