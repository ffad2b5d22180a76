r"""The ``matrix`` process (a CTMC given by a rate matrix on the clock :math:`-\log\alpha_t`):
conformance of every built-in generator, equality with the uniform and masked processes, the
matrix exponential, generator structure, validation of a user-supplied ``rates`` (Python and
YAML), and its bound with the exact oracle."""

import math

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

import ddkit
from ddkit.plugins.processes.matrix import (
    closed_classes,
    generator_exponential,
    stationary_distribution,
)
from ddkit.testing import MarkovChain, OracleDenoiser, check_process
from ddkit.testing.oracles import all_sequences
from ddkit.testing.strategies import rate_matrices

F64 = torch.float64


def matrix(V=3, **params):
    return ddkit.build("process", "matrix", vocab_size=V, **params)


GENERATORS = [
    {"generator": "uniform"},
    {"generator": "absorbing"},
    {"generator": "gaussian", "width": 0.5},
    {"generator": "banded", "bandwidth": 1, "rate_scale": 3.0},
    {"generator": "mask_uniform", "uniform_fraction": 0.4},
    {"generator": "custom", "rates": [[-1.0, 1.0, 0.0], [0.5, -1.0, 0.5], [0.0, 2.0, -2.0]]},
    {"generator": "uniform", "schedule": "loglinear"},
]


@pytest.mark.parametrize("params", GENERATORS, ids=lambda p: "-".join(str(v) for v in p.values()))
def test_conformance(params):
    check_process(matrix(3, **params))


def test_uniform_generator_is_the_uniform_process():
    ours, theirs = matrix(4, generator="uniform", schedule="cosine"), \
        ddkit.build("process", "uniform", vocab_size=4, schedule="cosine")
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=F64)
    s = t * 0.7
    assert torch.allclose(ours.transition_matrix(s, t), theirs.transition_matrix(s, t), atol=1e-14)
    assert torch.allclose(ours.marginal_matrix(t), theirs.marginal_matrix(t), atol=1e-14)
    assert torch.allclose(ours.rate_matrix(t[1:4]), theirs.rate_matrix(t[1:4]), atol=1e-12)
    gen = torch.Generator().manual_seed(0)
    x0, x_t = torch.randint(0, 4, (2, 3, 6), generator=gen)
    mean = torch.softmax(torch.randn(3, 6, 4, generator=gen, dtype=F64), -1)
    tt, ss = t[1:4], s[1:4]
    assert torch.allclose(ours.posterior_probs(x_t, mean, ss, tt), theirs.posterior_probs(x_t, mean, ss, tt),
                          atol=1e-12)
    assert torch.allclose(ours.continuous_elbo(x0, x_t, mean.log(), tt),
                          theirs.continuous_elbo(x0, x_t, mean.log(), tt), atol=1e-10)
    assert ours.capabilities == theirs.capabilities == frozenset() and ours.mask_id is None


def test_absorbing_generator_is_the_masked_process():
    ours, theirs = matrix(4, generator="absorbing"), ddkit.build("process", "masked", vocab_size=4)
    assert ours.capabilities == frozenset({"absorbing"}) and ours.mask_id == theirs.mask_id == 4
    t = torch.tensor([0.0, 0.2, 0.6, 1.0], dtype=F64)
    assert torch.allclose(ours.transition_matrix(t * 0.5, t), theirs.transition_matrix(t * 0.5, t), atol=1e-14)
    assert torch.allclose(ours.marginal_matrix(t), theirs.marginal_matrix(t), atol=1e-14)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 4, (3, 6), generator=gen)
    x_t = torch.where(torch.rand(3, 6, generator=gen) < 0.5, x0, 4)
    log_mean = ddkit.build("parameterization", "mean").log_mean(
        lambda x, t: torch.randn(3, 6, 4, generator=gen), x_t, t[1:], ours).double()
    inner = torch.tensor([0.2, 0.6, 0.97], dtype=F64)  # at alpha_t = 0 the dense form is 0 * inf
    assert torch.allclose(ours.continuous_elbo(x0, x_t, log_mean, inner),
                          theirs.continuous_elbo(x0, x_t, log_mean, inner), atol=1e-10)
    # a custom matrix with the same structure is recognised as masked diffusion
    custom = matrix(2, generator="custom", rates=[[-1, 0, 1], [0, -1, 1], [0, 0, 0]])
    assert custom.mask_id == 2 and "absorbing" in custom.capabilities
    assert matrix(4, generator="mask_uniform", uniform_fraction=0.0).capabilities == frozenset({"absorbing"})


def test_mask_uniform_is_not_masked_diffusion():
    p = matrix(3, generator="mask_uniform", uniform_fraction=0.5)
    assert p.capabilities == frozenset() and p.mask_id is None and p.absorbing_state == 3
    assert torch.equal(p.prior_probs(), torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64))
    q = p.marginal_matrix(torch.tensor(0.5, dtype=F64))
    assert float(q[0, 1]) > 0  # a clean token can become another clean token


def test_generator_exponential_against_closed_forms_and_matrix_exp():
    clocks = torch.tensor([0.0, 1e-3, 0.5, 3.0, 40.0, 700.0], dtype=F64)
    V = 5
    uni = torch.full((V, V), 1 / V, dtype=F64) - torch.eye(V, dtype=F64)
    keep, moved = torch.exp(-clocks)[:, None, None], -torch.expm1(-clocks)[:, None, None]
    exact = keep * torch.eye(V, dtype=F64) + moved / V
    assert torch.allclose(generator_exponential(uni, clocks), exact, rtol=1e-12, atol=0)
    a, b = 0.7, 0.2  # two states: P(0 -> 1) = a/(a+b) (1 - e^{-(a+b)c}), relative accuracy kept
    two = torch.tensor([[-a, a], [b, -b]], dtype=F64)
    p01 = a / (a + b) * -torch.expm1(-(a + b) * clocks)
    assert torch.allclose(generator_exponential(two, clocks)[:, 0, 1], p01, rtol=1e-12, atol=0)
    R = matrix(6, generator="gaussian", width=0.2).rates
    assert torch.allclose(generator_exponential(R, clocks[:5]),
                          torch.linalg.matrix_exp(clocks[:5, None, None] * R), atol=1e-10)


@given(rates=rate_matrices(st.integers(2, 5), max_rate=5.0), seed=st.integers(0, 2**31))
def test_generator_exponential_is_stochastic_and_a_semigroup(rates, seed):
    c = torch.rand(2, generator=torch.Generator().manual_seed(seed), dtype=F64) * 3
    e = generator_exponential(rates, torch.cat([c, c.sum()[None]]))
    assert bool((e >= 0).all())
    assert torch.allclose(e.sum(-1), torch.ones(3, rates.shape[0], dtype=F64), atol=1e-12)
    assert torch.allclose(e[0] @ e[1], e[2], atol=1e-11)


def test_builtin_generators_have_their_documented_structure():
    V = 6
    gauss = matrix(V, generator="gaussian", width=0.3).rates
    scale = 4.0 / ((V - 1) ** 2 * 0.3)
    Z = sum(math.exp(-scale * n * n) for n in range(-(V - 1), V))
    assert math.isclose(float(gauss[1, 4]), math.exp(-scale * 9) / Z, rel_tol=1e-12)
    assert torch.allclose(gauss, gauss.T)
    band = matrix(V, generator="banded", bandwidth=2).rates
    i = torch.arange(V)
    off = (i[:, None] - i[None, :]).abs()
    assert bool((band[(off > 0) & (off <= 2)] == 0.25).all()) and bool((band[off > 2] == 0).all())
    for rates in (gauss, band, matrix(V, generator="uniform").rates):
        assert torch.allclose(stationary_distribution(rates), torch.full((V,), 1 / V, dtype=F64))
    assert torch.allclose(matrix(V, generator="banded", rate_scale=5.0).rates,
                          5.0 * matrix(V, generator="banded").rates)
    hybrid = matrix(3, generator="mask_uniform", uniform_fraction=0.3).rates
    assert math.isclose(float(hybrid[0, 3]), 0.7) and math.isclose(float(hybrid[0, 1]), 0.1)
    assert bool((hybrid[3] == 0).all()) and torch.allclose(hybrid.sum(-1), torch.zeros(4, dtype=F64))


def test_closed_classes():
    chain = torch.tensor([[-1, 1, 0], [0, -1, 1], [0, 0, 0]], dtype=F64)
    assert closed_classes(chain) == [[2]]
    two = torch.tensor([[0, 0, 0], [1, -2, 1], [0, 0, 0]], dtype=F64)
    assert closed_classes(two) == [[0], [2]]
    cycle = torch.tensor([[-1, 1, 0], [0, -1, 1], [1, 0, -1]], dtype=F64)
    assert closed_classes(cycle) == [[0, 1, 2]]


@pytest.mark.parametrize("rates,message", [
    ([[-1, 1], [1, -1], [0, 0]], "square"),
    ([[-1, 1, 0], [1, -1, 0], [0, 0, 0], [0, 0, 0]], "square"),
    ([[-1, 1], [1, -1], [1, -1]], "square"),
    ([[-1, 1, 0, 0], [0, -1, 1, 0], [0, 0, -1, 1], [1, 0, 0, -1]], "3 x 3"),
    ([[1, -1, 0], [1, -1, 0], [1, 0, -1]], ">= 0"),
    ([[-1, 1, 0], [1, -2, 0], [1, 0, -1]], "sum to 0"),
    ([[-1, 1, 0], [1, -1, 0], [0, 0, 0]], "one closed class"),
    ([[0, 0, 0], [0, 0, 0], [0, 0, 0]], "all zero"),
    ([[-1, 1, float("inf")], [1, -1, 0], [1, 0, -1]], "finite"),
])
def test_invalid_rates_are_rejected_with_a_clear_message(rates, message):
    with pytest.raises(ddkit.ParameterError, match=message):
        matrix(3 if len(rates) != 4 else 2, generator="custom", rates=rates)


def test_extra_state_must_be_absorbing_and_options_must_match_the_generator():
    with pytest.raises(ddkit.ParameterError, match="must be absorbing"):
        matrix(2, generator="custom", rates=[[-1, 0, 1], [0, -1, 1], [1, 0, -1]])
    with pytest.raises(ddkit.ParameterError, match="needs rates"):
        matrix(3, generator="custom")
    with pytest.raises(ddkit.ParameterError, match="applies only to generator 'banded'"):
        matrix(3, generator="gaussian", bandwidth=2)
    with pytest.raises(ddkit.ParameterError, match="applies only to generator 'custom'"):
        matrix(2, generator="uniform", rates=[[-1, 1], [1, -1]])
    with pytest.raises(ddkit.ParameterError):
        matrix(3, generator="nonexistent")
    with pytest.raises(ddkit.ParameterError):
        matrix(3, generator="banded", rate_scale=0.0)


def test_rates_from_yaml_as_a_nested_list():
    """A YAML file passes R as a nested list of numbers; no code is evaluated."""
    text = """
    process:
      name: matrix
      vocab_size: 3
      generator: custom
      schedule: cosine
      rates:
        - [-2, 1, 1]
        - [1, -2, 1]
        - [0.5, 0.5, -1]
    """
    spec = yaml.safe_load(text)["process"]
    p = ddkit.build("process", spec)
    assert torch.equal(p.rates, torch.tensor(spec["rates"], dtype=F64))
    assert torch.allclose(p.prior_probs() @ p.rates, torch.zeros(3, dtype=F64), atol=1e-14)
    bad = yaml.safe_load(text.replace("[0.5, 0.5, -1]", "[0.5, 0.5, .nan]"))["process"]
    with pytest.raises(ddkit.ParameterError):
        ddkit.build("process", bad)
    with pytest.raises(ddkit.ParameterError):
        ddkit.build("process", {**spec, "rates": "[[-1, 1], [1, -1]]"})


def endpoint_quadrature(nodes):
    r"""Nodes and weights on :math:`[0, 1]` for integrands with power singularities at both ends
    (near :math:`t = 1` the clock :math:`-\log(1-t)` meets the generator's spectral gap):
    Gauss–Legendre in :math:`u` after :math:`t = c(c(u))`, :math:`c(u) = (1 - \cos \pi u)/2`."""
    u, w = np.polynomial.legendre.leggauss(nodes)
    u, w = (u + 1) / 2, w / 2
    inner = (1 - np.cos(np.pi * u)) / 2
    t = (1 - np.cos(np.pi * inner)) / 2
    jacobian = np.pi / 2 * np.sin(np.pi * inner) * np.pi / 2 * np.sin(np.pi * u)
    return t, w * jacobian


def test_oracle_elbo_equals_the_exact_nll_for_a_gaussian_generator():
    r"""The generic CTMC integrand (score entropy with the mean's ratios) with the exact oracle
    integrates to :math:`-\log p(x_0)` (``alpha_1 = 0``: the prior is reached exactly); exact
    enumeration of the :math:`V^N` noisy sequences and :func:`endpoint_quadrature` in time
    (its error here is about 1e-11)."""
    V, N = 3, 3
    chain = MarkovChain(V, seed=4, concentration=0.5)
    process = matrix(V, generator="gaussian", width=1.0, rate_scale=2.0)
    oracle = OracleDenoiser(chain, process)
    states = all_sequences(V, N)
    x0 = chain.sample(2, N, torch.Generator().manual_seed(0))
    t_nodes, weights = endpoint_quadrature(48)
    t = torch.tensor(t_nodes, dtype=F64).repeat_interleave(len(states))
    x_t = states.repeat(len(t_nodes), 1)
    logits = oracle(x_t, t)
    for i in range(len(x0)):
        rows = x0[i].expand(len(x_t), -1)
        log_q = process.marginal_probs(rows, t).log().gather(-1, x_t[..., None])[..., 0].sum(-1)
        integrand = process.continuous_elbo(rows, x_t, logits, t).sum(-1)
        values = (log_q.exp() * integrand).reshape(len(t_nodes), len(states)).sum(-1)
        elbo = float((torch.tensor(weights) * values).sum())
        assert abs(elbo - float(-chain.log_prob(x0[i:i + 1]))) < 1e-8


@pytest.mark.parametrize("module", ["ddkit.plugins.processes.matrix", "ddkit.plugins.processes.uniform",
                                    "ddkit.plugins.parameterizations.score"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
