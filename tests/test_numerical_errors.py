"""Numerical failures (NaN logits, a denoiser output of the wrong shape) raise their own error
types, :class:`ddkit.NumericalError` and its subclass :class:`ddkit.DenoiserOutputError`,
wherever they are found: in every built-in sampler, in the losses and in the ELBO estimate."""

import pytest
import torch

import ddkit
from ddkit.contrib.evaluate import estimate_elbo

V = 4
SAMPLERS = [("masked", "ancestral"), ("masked", "euler"), ("masked", "analytic"), ("masked", "first_hitting"),
            ("uniform", "ancestral"), ("uniform", "euler"), ("uniform", "analytic")]


def nan_denoiser(x_t, t):
    return torch.full((*x_t.shape, V), float("nan"))


def narrow_denoiser(x_t, t):
    return torch.zeros(*x_t.shape, V - 1)


@pytest.mark.parametrize("process,sampler", SAMPLERS, ids=[f"{p}-{s}" for p, s in SAMPLERS])
def test_samplers_raise_numerical_errors(process, sampler):
    process = ddkit.build("process", process, vocab_size=V)
    sampler = ddkit.build("sampler", sampler, **({"steps": 4} if sampler != "first_hitting" else {}))
    run = dict(num_samples=2, length=3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ddkit.NumericalError, match="NaN|finite") as info:
        sampler.sample(nan_denoiser, process, **run)
    assert not isinstance(info.value, ddkit.DenoiserOutputError)
    with pytest.raises(ddkit.DenoiserOutputError, match=r"denoiser returned .* shape \(2, 3, 3\); expected \[2, 3, 4\]"):
        sampler.sample(narrow_denoiser, process, **run)


@pytest.mark.parametrize("loss", ["continuous_elbo", "discrete_elbo", "hybrid", "score_entropy"])
def test_losses_raise_on_a_denoiser_of_the_wrong_shape(loss):
    loss = ddkit.build("loss", loss, process=ddkit.build("process", "masked", vocab_size=V))
    with pytest.raises(ddkit.DenoiserOutputError):
        loss(narrow_denoiser, torch.zeros(2, 3, dtype=torch.long), generator=torch.Generator().manual_seed(0))


def test_elbo_estimate_of_a_nan_model_is_a_numerical_error():
    loss = ddkit.build("loss", "continuous_elbo", process=ddkit.build("process", "masked", vocab_size=V))
    with pytest.raises(ddkit.NumericalError, match="NaN or infinite for 4 of 4 sequences"):
        estimate_elbo(nan_denoiser, loss, torch.zeros(4, 3, dtype=torch.long), time_samples=2,
                      seed=0)


def test_numerical_errors_are_ddkit_errors_and_not_config_errors():
    from ddkit.config import ConfigError

    assert issubclass(ddkit.DenoiserOutputError, ddkit.NumericalError)
    assert issubclass(ddkit.NumericalError, ddkit.DDKitError)
    assert not issubclass(ddkit.NumericalError, ConfigError)
