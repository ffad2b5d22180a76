"""The torch kernels on CUDA tensors equal the CPU kernels bit for bit (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

import ddkit.kernels as K

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
INF = float("inf")
FILTERS = [{}, {"temperature": 0.0}, {"temperature": 0.7, "top_k": 5}, {"top_p": 0.9},
           {"temperature": 1.3, "top_k": 40, "top_p": 0.8}]


def inputs(B, N, V, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, N, V, generator=gen) * 3).to(dtype)
    logits[torch.rand(B, N, V, generator=gen) < 0.1] = -INF
    logits[..., 0] = 0.0
    return logits, torch.rand(B, N, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("options", FILTERS)
@pytest.mark.parametrize("shape", [(4, 33, 7), (2, 64, 1000), (1, 8, 50257)])
def test_categorical_on_cuda_equals_cpu(shape, options):
    logits, u = inputs(*shape)
    cpu = K.categorical(logits, u, backend="auto", **options)
    gpu = K.categorical(logits.cuda(), u.cuda(), backend="auto", **options)
    assert gpu.is_cuda and K.resolve("auto", "categorical", "cuda").name == "torch"
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_half_and_double_logits_on_cuda(dtype):
    logits, u = inputs(3, 50, 300, seed=1, dtype=dtype)
    assert torch.equal(K.categorical(logits.cuda(), u.cuda(), top_p=0.95).cpu(), K.categorical(logits, u, top_p=0.95))


def test_boundary_uniforms_are_resolved_like_the_cpu():
    """Ties hit exactly: the CUDA fast path defers to the CPU reference for those rows."""
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -INF, 1.0], [2.0, 2.0, 1.0, 1.0]])
    u = torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64)
    for options in FILTERS:
        assert torch.equal(K.categorical(logits.cuda(), u.cuda(), **options).cpu(),
                           K.categorical(logits, u, backend="numba", **options))


@pytest.mark.parametrize("argmax", [False, True])
def test_masked_step_on_cuda_equals_cpu(argmax):
    logits, u_token = inputs(4, 128, 500, seed=2)
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 500, (4, 128), generator=gen)
    x[torch.rand(4, 128, generator=gen) < 0.6] = 500
    u_move = torch.rand(4, 128, generator=gen, dtype=torch.float64)
    p = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    cpu = K.masked_step(x, logits, p, u_move, u_token, mask_id=500, top_k=50, argmax=argmax)
    gpu = K.masked_step(x.cuda(), logits.cuda(), p.cuda(), u_move.cuda(), u_token.cuda(), mask_id=500, top_k=50,
                        argmax=argmax)
    assert torch.equal(gpu.cpu(), cpu)
    sigma, u_remask = torch.rand(4, 128, generator=gen, dtype=torch.float64), torch.rand(4, 128, generator=gen,
                                                                                         dtype=torch.float64)
    fixed = torch.rand(4, 128, generator=gen) < 0.1
    cpu = K.masked_step(x, logits, p, u_move, u_token, mask_id=500, argmax=argmax, remask_prob=sigma,
                        u_remask=u_remask, fixed=fixed)
    gpu = K.masked_step(x.cuda(), logits.cuda(), p.cuda(), u_move.cuda(), u_token.cuda(), mask_id=500, argmax=argmax,
                        remask_prob=sigma.cuda(), u_remask=u_remask.cuda(), fixed=fixed.cuda())
    assert torch.equal(gpu.cpu(), cpu)


def test_commit_topk_and_noising_on_cuda_equal_cpu():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randint(0, 4, (5, 200), generator=gen).double()
    eligible = torch.rand(5, 200, generator=gen) < 0.5
    k = torch.tensor([0, 1, 10, 100, 300])
    assert torch.equal(K.commit_topk(scores.cuda(), eligible.cuda(), k.cuda()).cpu(),
                       K.commit_topk(scores, eligible, k))
    x0 = torch.randint(0, 9, (5, 200), generator=gen)
    alpha = torch.rand(5, generator=gen, dtype=torch.float64)
    u, u2 = (torch.rand(5, 200, generator=gen, dtype=torch.float64) for _ in range(2))
    assert torch.equal(K.mask_noise(x0.cuda(), alpha.cuda(), u.cuda(), mask_id=9).cpu(),
                       K.mask_noise(x0, alpha, u, mask_id=9))
    assert torch.equal(K.uniform_noise(x0.cuda(), alpha.cuda(), u.cuda(), u2.cuda(), vocab_size=9).cpu(),
                       K.uniform_noise(x0, alpha, u, u2, vocab_size=9))


def test_categorical_peak_memory_on_cuda_is_a_fraction_of_the_logits():
    """A float64 copy of the logits alone would be 2x; the chunked sampler stays far below."""
    logits = torch.randn(8, 1024, 8192, device="cuda")
    u = torch.rand(8, 1024, dtype=torch.float64, device="cuda")
    K.categorical(logits, u)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    K.categorical(logits, u)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 0.5 * logits.numel() * logits.element_size(), extra


def test_numba_backend_refuses_cuda_tensors():
    with pytest.raises(ValueError, match="cannot run"):
        K.categorical(torch.zeros(2, 3, device="cuda"), torch.zeros(2, dtype=torch.float64, device="cuda"),
                      backend="numba")
