"""The example plugin's own tests, run after `pip install ./contrib/example_plugin`."""

import torch

import ddkit


def test_schedule_endpoints_and_inverse():
    schedule = ddkit.build("schedule", "exponential", rate=2.0)
    assert schedule.endpoints() == (1.0, 0.0) or abs(schedule.endpoints()[1]) < 1e-12
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(schedule.inverse(schedule.alpha(t)), t)


def test_sampler_fills_every_mask():
    process = ddkit.build("process", "masked", vocab_size=3, schedule={"name": "exponential"})
    sampler = ddkit.build("sampler", "any_order", tokens_per_step=2)
    result = sampler.sample(lambda x, t: torch.zeros(*x.shape, 3), process, num_samples=2,
                            length=5, generator=torch.Generator().manual_seed(0))
    assert bool((result.tokens < 3).all())
    assert result.nfe == 3
