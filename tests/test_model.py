"""The DiT denoiser: the contract's shapes, bidirectional attention, rotary embeddings
against a direct rotation, adaLN time conditioning (identity at initialisation)."""

import math

import pytest
import torch

import ddkit
from ddkit.contrib.models.dit import DiT, apply_rotary, rotary_tables

V = 7


def tiny(**kw):
    torch.manual_seed(0)
    return DiT(V, **{"width": 16, "depth": 2, "heads": 2, "max_seq_len": 12, **kw})


def test_denoiser_contract_shapes():
    net = ddkit.build("model", {"name": "dit", "vocab_size": V, "width": 16, "depth": 1, "heads": 2})
    x = torch.randint(0, V + 1, (3, 10))
    assert net(x, torch.rand(3)).shape == (3, 10, V)
    assert net(x, torch.rand(3, 10)).shape == (3, 10, V)
    assert net.embed.num_embeddings == V + 1  # the mask has its own embedding


def test_errors_for_bad_shapes_and_lengths():
    net = tiny()
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 12"):
        net(torch.zeros(1, 13, dtype=torch.long), torch.zeros(1))
    with pytest.raises(ValueError, match=r"x_t must be \[B, N\]"):
        net(torch.zeros(13, dtype=torch.long), torch.zeros(1))
    with pytest.raises(ddkit.ParameterError, match="must split into 3 heads"):
        ddkit.build("model", {"name": "dit", "vocab_size": V, "width": 16, "heads": 3})


def test_attention_is_bidirectional():
    net = tiny().eval()
    x = torch.randint(0, V, (1, 10))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % V
    out_x, out_y = net(x, torch.zeros(1)), net(y, torch.zeros(1))
    assert not torch.allclose(out_x[0, 0], out_y[0, 0])  # the first position sees the last


def test_relative_positions_matter():
    net = tiny().eval()
    for p in net.parameters():  # larger weights than the initialisation: sharp attention
        torch.nn.init.normal_(p, std=0.5)
    x = torch.full((1, 8), 3)
    x[0, 0] = 1
    out = net(x, torch.zeros(1))
    # the same token at different distances from the distinct first token
    assert not torch.allclose(out[0, 2], out[0, 6], atol=1e-4)
    # rotary embeddings are relative: identical tokens everywhere give identical outputs
    same = net(torch.full((1, 8), 3), torch.zeros(1))
    torch.testing.assert_close(same[0, 0], same[0, 5])


def test_rotary_is_a_rotation_by_position_angle():
    D, N = 8, 6
    cos, sin = rotary_tables(N, D, base=100.0)
    x = torch.randn(1, 1, N, D)
    out = apply_rotary(x, cos, sin)
    for n in range(N):
        for i in range(D // 2):
            angle = n * 100.0 ** (-2 * i / D)
            rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            expected = rot @ x[0, 0, n, 2 * i:2 * i + 2]
            torch.testing.assert_close(out[0, 0, n, 2 * i:2 * i + 2], expected, atol=1e-5, rtol=1e-5)
    # dot products depend on the offset only: <R_m q, R_n k> = <R_{m+s} q, R_{n+s} k>
    q, k = torch.randn(D), torch.randn(D)
    qs = apply_rotary(q.expand(1, 1, N, D), cos, sin)[0, 0]
    ks = apply_rotary(k.expand(1, 1, N, D), cos, sin)[0, 0]
    torch.testing.assert_close(qs[1] @ ks[3], qs[2] @ ks[4], atol=1e-5, rtol=1e-5)


def test_without_time_conditioning_t_is_ignored():
    net = tiny().eval()
    x = torch.randint(0, V + 1, (2, 9))
    torch.testing.assert_close(net(x, torch.zeros(2)), net(x, torch.ones(2)))


def test_adaln_starts_as_identity_and_then_uses_t():
    net = tiny(time_conditioning=True).eval()
    x = torch.randint(0, V + 1, (2, 9))
    torch.testing.assert_close(net(x, torch.zeros(2)), net(x, torch.full((2,), 0.7)))
    torch.nn.init.normal_(net.blocks[0].modulation.weight, std=0.5)
    a, b = net(x, torch.zeros(2)), net(x, torch.full((2,), 0.7))
    assert not torch.allclose(a, b)
    per_token = torch.zeros(2, 9)
    per_token[:, 4:] = 0.7  # [B, N] times condition each token separately
    c = net(x, per_token)
    assert not torch.allclose(c, a)


def test_gradients_reach_every_parameter():
    net = tiny(time_conditioning=True)
    for p in net.modules():
        if isinstance(p, torch.nn.Linear) and p.weight.abs().sum() == 0:
            torch.nn.init.normal_(p.weight, std=0.1)  # leave the adaLN-zero start for this check
    process = ddkit.build("process", "masked", vocab_size=V)
    loss = ddkit.build("loss", "continuous_elbo", process=process,
                       parameterization={"name": "mean", "time_conditioning": True})
    out = loss(net, torch.randint(0, V, (4, 12)), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert out.loss.item() > 0
