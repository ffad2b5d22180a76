"""Findings from measuring the decoders (benchmarks/oracle.py): ReMDM's loop strategy with an
eta above its plateau's bound."""

import pytest
import torch

import ddkit

V = 4


@pytest.mark.parametrize("eta", [0.2, 0.5])
def test_loop_eta_above_the_plateau_bound_is_refused_or_keeps_the_plateau(eta):
    """On the plateau alpha is frozen at alpha_on, so the remasking bound is
    sigma_max = min(1, (1 - alpha_on) / alpha_on) = 1/9 for the default alpha_on = 0.9, and a
    mask unmasks w.p. eta * alpha_on / (1 - alpha_on): above the bound that is more than 1.
    Either the rule refuses such an eta, naming it and the bound, or the plateau still keeps
    the expected number of masks at (1 - alpha_on) per position, as the docstring says."""
    try:
        rule = ddkit.build("unmasking_rule", "remdm", strategy="loop", eta=eta)
    except (ddkit.ParameterError, ValueError) as exc:
        assert str(eta) in str(exc)
        return
    process = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
    steps, draws, length = 40, 4000, 8
    sampler = ddkit.build("sampler", "ancestral", steps=steps, rule=rule)

    def uniform(x_t, t):
        return torch.zeros(*x_t.shape, V)

    result = sampler.sample(uniform, process, num_samples=draws, length=length,
                            generator=torch.Generator().manual_seed(0), record_trajectory=True)
    grid = ddkit.time_grid(steps)
    plateau = [i + 1 for i in range(steps) if rule.t_off < float(grid[i]) <= rule.t_on]
    fractions = torch.tensor([float((result.trajectory[i] == V).double().mean()) for i in plateau])
    # 4000 x 8 positions: the fraction's standard deviation is below 0.002
    assert torch.allclose(fractions, torch.full_like(fractions, 1 - rule.alpha_on), atol=0.02), fractions


def test_semi_ar_counts_both_passes_of_classifier_free_guidance():
    """ClassifierFreeGuidance declares evaluations_per_call = 2 and DenoiserCalls counts it, but
    semi_ar calls the denoiser through a view of its own (a plain function over the block), so
    inside blocks each guided call counts once: NFE must be twice the number of guided calls."""
    process = ddkit.build("process", "masked", vocab_size=V)
    calls = []

    def network(x_t, t):
        calls.append(x_t.shape[0])
        return torch.zeros(*x_t.shape, V)

    prompt = torch.tensor([[0, 1, -1, -1, -1, -1, -1, -1]])
    guided = ddkit.guidance.ClassifierFreeGuidance(network, 1.0, condition=prompt >= 0, mask_id=process.mask_id)
    blocks = ddkit.build("sampler", "semi_ar", block_length=4,
                         sampler={"name": "ancestral", "steps": 4, "rule": "low_confidence"})
    result = blocks.sample(guided, process, prompt=prompt, generator=torch.Generator().manual_seed(0))
    assert calls and all(batch == 2 for batch in calls)  # both passes in one batched call
    assert result.nfe == 2 * len(calls)
    plain = ddkit.build("sampler", "ancestral", steps=4, rule="low_confidence")
    calls.clear()
    result = plain.sample(guided, process, prompt=prompt, generator=torch.Generator().manual_seed(0))
    assert result.nfe == 2 * len(calls)  # what ancestral alone already counts
