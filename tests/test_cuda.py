"""The masked-diffusion stack on CUDA tensors (skipped where no GPU is present)."""

import pytest
import torch

import ddkit

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
V = 5


def denoiser(x_t, t):
    assert x_t.is_cuda and t.is_cuda
    pos = torch.arange(x_t.shape[1], device=x_t.device)
    return torch.nn.functional.one_hot(pos % V, V).float().expand(x_t.shape[0], -1, -1) * 2.0


@cuda
@pytest.mark.parametrize("name,params", [("ancestral", {"steps": 16, "top_p": 0.9}), ("first_hitting", {"top_k": 2})])
def test_samplers_run_on_cuda(name, params):
    process = ddkit.build("process", "masked", vocab_size=V, schedule="cosine")
    prompt = torch.full((4, 12), -1, device="cuda")
    prompt[:, :2] = 3
    g = torch.Generator(device="cuda").manual_seed(0)
    result = ddkit.build("sampler", name, **params).sample(denoiser, process, prompt=prompt, generator=g)
    assert result.tokens.is_cuda and result.tokens.dtype == torch.long
    assert bool((result.tokens < V).all()) and bool((result.tokens[:, :2] == 3).all())
    g2 = torch.Generator(device="cuda").manual_seed(0)
    again = ddkit.build("sampler", name, **params).sample(denoiser, process, prompt=prompt, generator=g2)
    assert torch.equal(result.tokens, again.tokens)


@cuda
@pytest.mark.parametrize("loss_name", ["continuous_elbo", "discrete_elbo"])
def test_losses_run_on_cuda_and_match_cpu_closed_forms(loss_name):
    process = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
    x0 = torch.randint(0, V, (8, 16), device="cuda")
    out = ddkit.build("loss", loss_name, process=process)(denoiser, x0,
                                                          generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.nats.is_cuda and bool((out.nats >= 0).all())
    x_t = process.sample_marginal(x0, torch.full((8,), 0.5, device="cuda", dtype=torch.float64))
    probs = process.posterior_probs(x_t, torch.full((8, 16, V), 1.0 / V, device="cuda"),
                                    torch.full((8,), 0.25, device="cuda"), torch.full((8,), 0.5, device="cuda"))
    cpu = process.posterior_probs(x_t.cpu(), torch.full((8, 16, V), 1.0 / V), torch.full((8,), 0.25),
                                  torch.full((8,), 0.5))
    torch.testing.assert_close(probs.cpu(), cpu)
