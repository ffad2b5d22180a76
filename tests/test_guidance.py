"""Classifier-free guidance as a denoiser combinator: the formula, the masked unconditional
pass, w = 0 as the unguided sampler bit for bit, and NFE counting both passes."""

import doctest

import pytest
import torch

import ddkit
import ddkit.guidance
from ddkit.guidance import ClassifierFreeGuidance

V = 4


def masked():
    return ddkit.build("process", "masked", vocab_size=V, schedule="linear")


def net(x_t, t):
    """Logits that depend on every token of the row (so masking the prompt matters)."""
    total = (x_t.float() * torch.arange(1, x_t.shape[1] + 1)).sum(-1, keepdim=True)
    return torch.sin(total[..., None] + torch.arange(V) + torch.arange(x_t.shape[1])[:, None])


PROMPT = torch.tensor([[1, 3, -1, -1, -1, 0], [2, 2, -1, -1, -1, 1]])
CONDITION = PROMPT >= 0


def test_guided_logits_follow_the_formula_and_the_unconditional_pass_masks_the_prompt():
    seen = []

    def recording(x_t, t):
        seen.append(x_t.clone())
        return net(x_t, t)

    x = torch.where(CONDITION, PROMPT, V)
    t = torch.tensor([0.5, 0.5])
    out = ClassifierFreeGuidance(recording, 0.7, condition=CONDITION, mask_id=V)(x, t)
    (batch,) = seen
    assert torch.equal(batch[:2], x) and bool((batch[2:] == V).all())
    uncond = torch.full_like(x, V)
    expected = net(uncond, t) + 1.7 * (net(x, t) - net(uncond, t))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("sampler", [{"name": "ancestral", "steps": 5}, {"name": "first_hitting"},
                                     {"name": "ancestral", "steps": 5, "rule": "low_confidence"}])
def test_scale_zero_is_the_unguided_sampler_bit_for_bit_and_nfe_counts_both_passes(sampler):
    process = masked()

    def draw(denoiser):
        return ddkit.build("sampler", sampler).sample(denoiser, process, prompt=PROMPT,
                                                      generator=torch.Generator().manual_seed(3))

    plain = draw(net)
    zero = draw(ClassifierFreeGuidance(net, 0.0, condition=CONDITION, mask_id=V))
    assert torch.equal(plain.tokens, zero.tokens) and plain.nfe == zero.nfe
    calls = []

    def counted(x_t, t):
        calls.append(len(x_t))
        return net(x_t, t)

    guided = draw(ClassifierFreeGuidance(counted, 2.0, condition=CONDITION, mask_id=V))
    assert guided.nfe == 2 * len(calls) and set(calls) == {2 * len(PROMPT)}  # one batched call, two passes


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="guidance scale"):
        ClassifierFreeGuidance(net, -1.0, condition=CONDITION, mask_id=V)
    with pytest.raises(ValueError, match="guidance scale"):
        ClassifierFreeGuidance(net, float("nan"), condition=CONDITION, mask_id=V)
    with pytest.raises(ValueError, match="condition must be a BoolTensor"):
        ClassifierFreeGuidance(net, 1.0, condition=PROMPT, mask_id=V)


def test_module_example_runs():
    assert doctest.testmod(ddkit.guidance).failed == 0
