"""The hollow transformer (output at d depends on x^-d only), the hollow_elbo loss (masked
NELBO plus the clean-position term) and the hollow pipeline with the informed corrector."""

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ddkit
from ddkit.contrib.models.dit import DiT
from ddkit.contrib.models.hollow import HollowTransformer
from ddkit.testing import LeaveOneOutOracle, MarkovChain
from pipeline_helpers import ROOT, TINY, invoke

HOLLOW = str(ROOT / "pipelines" / "hollow.yaml")


def leave_one_out_violations(net, x, t):
    """Positions d where changing x^d changed output d, and how many outputs at other
    positions changed (the network does depend on its input)."""
    out = net(x, t)
    violations, others = [], 0
    S = net.num_states
    for d in range(x.shape[1]):
        for shift in (1, 2):
            y = x.clone()
            y[:, d] = (x[:, d] + shift) % S
            moved = net(y, t)
            if not torch.equal(out[:, d], moved[:, d]):
                violations.append(d)
            others += int(not torch.equal(torch.cat([out[:, :d], out[:, d + 1:]], 1),
                                          torch.cat([moved[:, :d], moved[:, d + 1:]], 1)))
    return violations, others


@given(seed=st.integers(0, 2**16), length=st.integers(1, 9), depth_mix=st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 2)]),
       time_conditioning=st.booleans(), vocab=st.integers(1, 6))
def test_hollow_output_at_d_never_depends_on_x_d(seed, length, depth_mix, time_conditioning, vocab):
    torch.manual_seed(seed)
    depth, per_mix = depth_mix
    net = HollowTransformer(vocab, width=8, depth=depth, heads=2, layers_per_mix=per_mix, max_seq_len=9,
                            time_conditioning=time_conditioning).eval()
    if time_conditioning:  # adaLN-zero starts as the identity; give the modulation weights
        for block in (*net.blocks, *net.mixers):
            torch.nn.init.normal_(block.modulation.weight, std=0.5)
        torch.nn.init.normal_(net.final_modulation.weight, std=0.5)
    x = torch.randint(0, vocab + 1, (3, length))
    violations, others = leave_one_out_violations(net, x, torch.rand(3))
    assert violations == []
    assert length == 1 or others > 0


def test_the_leave_one_out_check_detects_an_ordinary_transformer():
    torch.manual_seed(0)
    net = DiT(4, width=8, depth=1, heads=2, max_seq_len=6).eval()
    net.num_states = 5
    violations, _ = leave_one_out_violations(net, torch.randint(0, 5, (2, 6)), torch.zeros(2))
    assert len(violations) == 2 * 6


def test_hollow_model_contract_and_errors():
    net = HollowTransformer(5, width=8, depth=2, heads=2, max_seq_len=4)
    assert net.hollow is True and not getattr(DiT(5, width=8, depth=1, heads=2), "hollow", False)
    assert net(torch.randint(0, 6, (2, 4)), torch.zeros(2, 4)).shape == (2, 4, 5)
    assert len(net.mixers) == 1  # layers_per_mix defaults to depth: one mixing block at the end
    with pytest.raises(ValueError, match="layers_per_mix 3 must divide depth 4"):
        HollowTransformer(5, width=8, depth=4, heads=2, layers_per_mix=3)
    with pytest.raises(Exception, match="layers_per_mix 3 must divide depth 4"):
        ddkit.build("model", "hollow", vocab_size=5, width=8, depth=4, heads=2, layers_per_mix=3)
    with pytest.raises(ValueError, match="sequence length 5 exceeds the model's max_seq_len 4"):
        net(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1))
    timed = HollowTransformer(5, width=8, depth=1, heads=2, max_seq_len=4, time_conditioning=True)
    with pytest.raises(ValueError, match="one time per sequence"):
        timed(torch.zeros(1, 4, dtype=torch.long), torch.tensor([[0.1, 0.2, 0.2, 0.2]]))


# -- the loss ------------------------------------------------------------------------------

def hollow_loss(**params):
    process = ddkit.build("process", "masked", vocab_size=5)
    return process, ddkit.build("loss", "hollow_elbo", process=process, **params)


def test_masked_term_is_the_standard_bound_and_clean_term_the_leave_one_out_one():
    torch.manual_seed(0)
    process, loss = hollow_loss(clean_weight=0.5)
    standard = ddkit.build("loss", "continuous_elbo", process=process)
    net = HollowTransformer(5, width=8, depth=2, heads=2, max_seq_len=12)
    x0 = torch.randint(0, 5, (16, 12))
    with torch.no_grad():
        out = loss(net, x0, generator=torch.Generator().manual_seed(1))
        ref = standard(net, x0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.nats, ref.nats) and torch.equal(out.t, ref.t) and out.bound
    # the clean term by hand: weight -alpha'/alpha = 1/(1 - t) at the clean positions (linear schedule)
    g = torch.Generator().manual_seed(1)  # the loss's draws: times, then the noise
    ddkit.sample_times(16, method="antithetic", t_min=1e-4, generator=g)
    x_t = process.sample_marginal(x0, out.t, generator=g)
    with torch.no_grad():
        log_p = torch.log_softmax(net(x_t, torch.zeros(16)), -1)
    nll = -log_p.gather(-1, x0[..., None]).squeeze(-1)
    weight = (1.0 / (1.0 - out.t)).float()[:, None]
    expected = (1 - 1e-4) * torch.where(x_t != 5, weight * nll, 0.0)
    assert torch.allclose(out.clean, expected, rtol=1e-5, atol=1e-6)
    assert bool((out.clean >= 0).all()) and float(out.clean.sum()) > 0
    assert float(out.loss) == pytest.approx(float((out.nats + 0.5 * out.clean).mean()), rel=1e-6)
    assert out.clean_nats_per_token == pytest.approx(float(out.clean.mean()))


def test_both_terms_reach_the_training_log():
    """metrics() gives the mean masked and clean nats of the training batches since its last
    call; batches without gradients (validation, evaluation) are not counted."""
    torch.manual_seed(0)
    process, loss = hollow_loss()
    net = HollowTransformer(5, width=8, depth=1, heads=2, max_seq_len=8)
    x0 = torch.randint(0, 5, (8, 8))
    outs = [loss(net, x0, generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    with torch.no_grad():
        loss(net, x0, generator=torch.Generator().manual_seed(3))
    logged = loss.metrics()
    assert logged["masked_nats"] == pytest.approx(sum(o.nats_per_token for o in outs) / 2, rel=1e-5)
    assert logged["clean_nats"] == pytest.approx(sum(o.clean_nats_per_token for o in outs) / 2, rel=1e-5)
    assert "masked_nats" not in loss.metrics()  # read once


def test_clean_term_omits_the_top_of_the_time_range_and_is_zero_without_clean_tokens():
    process, loss = hollow_loss(t_min=0.1)
    x0 = torch.randint(0, 5, (4, 6))
    net = HollowTransformer(5, width=8, depth=1, heads=2, max_seq_len=6)
    t = torch.tensor([0.5, 0.95, 1.0, 0.05], dtype=torch.float64)
    x_t = x0.clone()
    x_t[2] = 5  # at t = 1 every token is masked
    masked, clean = loss.terms(net, x0, x_t, t)
    assert bool((clean[0] > 0).all()) and bool((clean[1:3] == 0).all())  # t > 1 - t_min: omitted
    assert bool(torch.isfinite(clean).all())


def test_hollow_elbo_minimised_by_the_exact_leave_one_out_conditionals():
    """At fixed noisy inputs the clean term's expected value over the data is a cross-entropy,
    smallest for the true conditional p(x_0^d | x_t^-d): the exact leave-one-out oracle beats
    a perturbed copy of it (exact expectation by enumeration over the data)."""
    from ddkit.testing.oracles import all_sequences

    V, N = 3, 4
    model = MarkovChain(V, seed=1, concentration=0.5)
    process = ddkit.build("process", "masked", vocab_size=V)
    loss = ddkit.build("loss", "hollow_elbo", process=process)
    hollow = LeaveOneOutOracle(model, process)
    X0, p0 = all_sequences(V, N), model.probabilities(N)
    x_t = X0.clone()
    x_t[:, 1] = V  # positions 0, 2, 3 clean, 1 masked
    t = torch.full((len(X0),), 0.5, dtype=torch.float64)
    noise = torch.randn(1, N, V, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def expected_clean(denoiser):
        return float(p0 @ loss.terms(denoiser, X0, x_t, t)[1].double().sum(-1))

    best = expected_clean(hollow)
    assert all(expected_clean(lambda x, tt, s=s: hollow(x, tt) + s * noise) > best for s in (0.05, 0.3, 1.0))


def test_hollow_elbo_refuses_processes_and_parameterizations_it_cannot_train():
    with pytest.raises(ValueError, match="absorbing .* UniformProcess is not one"):
        ddkit.build("loss", "hollow_elbo", process=ddkit.build("process", "uniform", vocab_size=3))
    with pytest.raises(ValueError, match="mean parameterization; this one predicts 'score'"):
        ddkit.build("loss", "hollow_elbo", process=ddkit.build("process", "masked", vocab_size=3),
                    parameterization="score")


# -- the pipeline --------------------------------------------------------------------------

def test_hollow_pipeline_validates():
    result = invoke("config", "validate", HOLLOW)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_hollow_pipeline_trains_evaluates_and_samples_with_the_informed_corrector(tmp_path):
    """Tiny run: the network reaches the informed corrector through the pipeline's wrapper
    (which keeps hollow = True); the evaluation is the masked term, a finite bound."""
    out = tmp_path / "hollow"
    result = invoke("run", HOLLOW, *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    samples = json.loads((out / "samples.json").read_text())
    assert samples["config"]["sampler"]["corrector"]["name"] == "informed"
    # ancestral with 8 steps, a correction after each of the first 7: at most 15 calls, more than 8
    assert 8 < samples["nfe"] <= 15
    evaluation = json.loads((out / "eval.json").read_text())
    assert math.isfinite(evaluation["continuous"]["nats_per_token"])
