"""Kernel backends: Numba and torch give identical results for the same inputs and uniforms,
and both equal an independent brute-force definition of each operation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ddkit
import ddkit.kernels as K
from ddkit.categorical import filter_logits

pytest.importorskip("numba")
from ddkit.plugins.kernels import numba_backend  # noqa: E402

INF = float("inf")
BACKENDS = ("numba", "torch")
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

# -- strategies ----------------------------------------------------------------------------

logit_value = st.one_of(st.sampled_from([-INF, 0.0, 1.0, -1.0, 2.5, -40.0]),  # ties and -inf
                        st.floats(-30, 30, allow_nan=False, allow_infinity=False))
uniform = st.one_of(st.sampled_from([0.0, 0.5, 0.25, 1 / 3, 1 - 2 ** -53]),
                    st.floats(0.0, 1.0, exclude_max=True))
temperature = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.05, 5.0))
top_p = st.one_of(st.none(), st.sampled_from([1.0, 0.5]), st.floats(0.01, 1.0))


@st.composite
def logit_batches(draw, max_rows=5, max_vocab=24):
    rows, V = draw(st.integers(1, max_rows)), draw(st.integers(1, max_vocab))
    values = draw(st.lists(logit_value, min_size=rows * V, max_size=rows * V))
    dtype = draw(st.sampled_from(DTYPES))
    logits = torch.tensor(values, dtype=torch.float64).reshape(rows, V).to(dtype)
    finite = torch.isfinite(logits.double()).any(-1)
    logits[~finite, draw(st.integers(0, V - 1))] = 0.0  # every row needs a finite entry
    u = torch.tensor(draw(st.lists(uniform, min_size=rows, max_size=rows)), dtype=torch.float64)
    return logits, u


def filters(V):
    return st.fixed_dictionaries({"temperature": temperature,
                                  "top_k": st.one_of(st.none(), st.integers(1, V + 2)),
                                  "top_p": top_p})


# -- an independent definition -------------------------------------------------------------


def brute_force(row: list[float], u: float, temperature: float, top_k, top_p):
    """(category, ambiguous): softmax of the filtered row with exact rational sums of
    math.exp weights; ``ambiguous`` when a decision lies within 1e-9 of a boundary, where
    float64 rounding may legitimately go either way."""
    if temperature == 0:
        best = max(row)
        weights = [Fraction(1) if v == best else Fraction(0) for v in row]
        ambiguous = False
    else:
        z = [v / temperature for v in row]
        if top_k is not None and top_k < len(z):
            kth = sorted(z, reverse=True)[top_k - 1]
            z = [v if v >= kth else -INF for v in z]
        m = max(z)
        weights = [Fraction(math.exp(v - m)) if v > -INF else Fraction(0) for v in z]
        total = sum(weights)
        ambiguous = False
        if top_p is not None and top_p < 1:
            keep = []
            for v, w in zip(z, weights):
                before = sum(wi for vi, wi in zip(z, weights) if vi > v)
                ambiguous |= abs(float(before / total) - top_p) < 1e-9
                keep.append(before < Fraction(top_p) * total)
            weights = [w if k else Fraction(0) for w, k in zip(weights, keep)]
    total = sum(weights)
    target = Fraction(u) * total
    cumulative = Fraction(0)
    for j, w in enumerate(weights):
        below, cumulative = cumulative, cumulative + w
        if w > 0 and abs(float((target - below) / total)) < 1e-9:
            ambiguous = True
        if cumulative > target:
            return j, ambiguous or abs(float((cumulative - target) / total)) < 1e-9
    return max(j for j, w in enumerate(weights) if w > 0), True


# -- the reference exponential -------------------------------------------------------------


def test_reference_exp_is_within_two_ulp_and_exact_at_the_edges():
    """Against 50-digit exp (decimal) on a sample, and against math.exp (itself within half an
    ulp) everywhere."""
    from decimal import Decimal, localcontext

    gen = torch.Generator().manual_seed(0)
    x = torch.cat([-torch.rand(20000, generator=gen, dtype=torch.float64) * 708,
                   -torch.rand(20000, generator=gen, dtype=torch.float64) * 0.4,
                   torch.tensor([0.0, -0.0, -1e-300, -707.9, -708.0, -708.1, -745.0, -800.0, -INF],
                                dtype=torch.float64)])
    got = K.reference_exp(x)
    for xi, gi in zip(x.tolist(), got.tolist()):
        if xi >= K.EXP_UNDERFLOW:
            exact = math.exp(xi)
            assert abs(gi - exact) <= 2.5 * math.ulp(exact), xi
    with localcontext() as context:
        context.prec = 50
        for xi, gi in list(zip(x.tolist(), got.tolist()))[::40]:
            if xi >= K.EXP_UNDERFLOW:
                exact = Decimal(xi).exp()
                assert abs(Decimal(gi) - exact) <= 2 * Decimal(math.ulp(gi)), xi
    assert got[-9:-7].tolist() == [1.0, 1.0] and got[-4:].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_exp_coefficients_are_reproducible():
    assert K.derive_exp_coefficients() == K.EXP_COEFFS


def test_numba_exponential_is_the_reference_bit_for_bit():
    from numba import njit

    from ddkit.plugins.kernels._numba_impl import _exp

    @njit
    def exp_all(values, out):
        for i in range(values.shape[0]):
            out[i] = _exp(values[i])

    gen = torch.Generator().manual_seed(1)
    x = torch.cat([-torch.rand(200000, generator=gen, dtype=torch.float64) * 750,
                   -torch.rand(200000, generator=gen, dtype=torch.float64),
                   torch.tensor([0.0, -INF, -707.99, -708.0, -708.01], dtype=torch.float64)])
    out = np.empty(x.shape[0])
    exp_all(x.numpy(), out)
    assert np.array_equal(out.view(np.int64), K.reference_exp(x).numpy().view(np.int64))


# -- categorical -----------------------------------------------------------------------------


@given(batch=logit_batches(), data=st.data())
def test_categorical_backends_agree_with_each_other_and_the_definition(batch, data):
    logits, u = batch
    options = data.draw(filters(logits.shape[1]))
    results = {b: K.categorical(logits, u, backend=b, **options) for b in BACKENDS}
    reference = K.reference_categorical(logits, u, K.TokenFilter(**options))
    assert torch.equal(results["numba"], results["torch"]), (results, reference)
    assert torch.equal(results["numba"], reference)
    for row, ui, got in zip(logits.double().tolist(), u.tolist(), reference.tolist()):
        expected, ambiguous = brute_force(row, ui, **options)
        if not ambiguous:
            assert got == expected, (row, ui, options)


@given(batch=logit_batches(max_rows=3, max_vocab=12), data=st.data())
def test_categorical_support_is_filter_logits(batch, data):
    """The categories the kernels can draw are the finite entries of
    :func:`ddkit.categorical.filter_logits` (itself tested against brute force)."""
    logits, _ = batch
    options = data.draw(filters(logits.shape[1]))
    finite = torch.isfinite(filter_logits(logits, **options))
    for row in range(logits.shape[0]):
        drawn = set()
        for u in torch.linspace(0, 1 - 2 ** -20, 65, dtype=torch.float64).tolist():
            ambiguous = brute_force(logits[row].double().tolist(), u, **options)[1]
            if not ambiguous:
                drawn.add(int(K.categorical(logits[row:row + 1], torch.tensor([u], dtype=torch.float64),
                                            backend="numba", **options)))
        assert all(bool(finite[row, j]) for j in drawn)


@given(seed=st.integers(0, 2 ** 31), V=st.integers(33, 400), k_share=st.floats(0.0, 1.0), tied=st.booleans(),
       top_p=top_p)
def test_top_k_on_wide_rows(seed, V, k_share, tied, top_p):
    """Rows wider than the selection's small-input cut-off, with many ties: the partition
    passes of the k-th largest selection against a full sort."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, V, generator=gen, dtype=torch.float64) * 3
    if tied:
        logits = logits.round()
    k = max(1, int(k_share * V))
    u = torch.rand(3, generator=gen, dtype=torch.float64)
    got = [K.categorical(logits, u, top_k=k, top_p=top_p, backend=b) for b in BACKENDS]
    assert torch.equal(got[0], got[1])
    kth = logits.sort(-1, descending=True).values[:, k - 1]
    assert bool((logits.gather(-1, got[0][:, None]).squeeze(-1) >= kth).all())
    scores, eligible = logits, torch.rand(3, V, generator=gen) < 0.8
    chosen = [K.commit_topk(scores, eligible, torch.tensor([k, k // 2, V]), backend=b) for b in BACKENDS]
    assert torch.equal(chosen[0], chosen[1])
    for b, kb in enumerate([k, k // 2, V]):
        ranked = sorted((j for j in range(V) if eligible[b, j]), key=lambda j: (-float(scores[b, j]), j))
        assert set(torch.nonzero(chosen[0][b]).flatten().tolist()) == set(ranked[:kb])


def test_certified_fast_path_defers_to_the_reference_at_boundaries(monkeypatch):
    """Uniforms that land exactly on a CDF boundary (ties, u = 0, u -> 1) make the torch fast
    path recompute those rows with the reference; both backends still agree."""
    from ddkit.plugins.kernels import torch_backend

    redone = []
    original = torch_backend.reference_categorical

    def spy(rows, uniforms, token_filter):
        redone.append(rows.shape[0])
        return original(rows, uniforms, token_filter)

    monkeypatch.setattr(torch_backend, "reference_categorical", spy)
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -INF, 1.0], [3.0, 1.0, 2.0, 0.5],
                           [-INF, 2.0, 2.0, -INF]])
    u = torch.tensor([0.5, 0.0, 1 - 2 ** -53, 0.5], dtype=torch.float64)
    for options in ({}, {"temperature": 0.5}, {"top_p": 0.9}):
        fast = K.categorical(logits, u, backend="torch", **options)
        assert torch.equal(fast, K.categorical(logits, u, backend="numba", **options))
    assert sum(redone) >= 6
    assert K.categorical(logits[:1], u[:1], backend="torch").tolist() == [2]  # u = 1/2 of 4 ties


@pytest.mark.parametrize("options", [{}, {"temperature": 0.8, "top_k": 40}, {"top_p": 0.95}])
def test_backends_agree_on_a_large_vocabulary(options):
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 50257, generator=gen) * 4
    u = torch.rand(3, generator=gen, dtype=torch.float64)
    assert torch.equal(K.categorical(logits, u, backend="numba", **options),
                       K.categorical(logits, u, backend="torch", **options))


def test_results_do_not_depend_on_the_thread_count():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(5000, 64, generator=gen)
    u = torch.rand(5000, generator=gen, dtype=torch.float64)
    assert numba_backend.SERIAL_WORK < logits.numel()  # two threads take the parallel path
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results += [K.categorical(logits, u, backend=b, top_p=0.9) for b in BACKENDS]
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_frequencies_match_softmax_including_a_one_in_a_billion_category():
    r"""Bulk: 200k draws, chi-square over the five categories at p = 1e-6 (critical value 33.4
    for 4 degrees of freedom).

    Tail: a category of probability :math:`q = 10^{-9}` (in the middle of the row, so its CDF
    interval is :math:`[c, c + q)` with :math:`c` computed independently with exact rational
    sums) would need :math:`\sim 10^{11}` plain draws to be seen a hundred times. Instead the
    uniforms are drawn conditionally on an interval :math:`I \supset [c, c + q)` of length
    :math:`|I| = 10^{-6}`: by the law of total probability :math:`P(j) = P(j \mid u \in I)\,|I|`,
    so the hit rate inside :math:`I` must be :math:`q / |I| = 10^{-3}`. With 200k conditional
    draws the count is Binomial(200k, 1e-3): mean 200, sd 14.1; the acceptance band is
    :math:`\pm 5.3` sd (two-sided p < 1e-7). A float32 sampler fails this: :math:`q` is below
    float32's resolution near :math:`c \approx 0.6`, so the category is never (or far too often)
    drawn."""
    q = 1e-9
    probs = [0.35, 0.25, q, 0.3, 0.1 - q]
    logits = torch.tensor([math.log(p) for p in probs], dtype=torch.float64)
    exact = [Fraction(math.exp(v - max(logits.tolist()))) for v in logits.tolist()]
    total = sum(exact)
    c = float(sum(exact[:2]) / total)
    q_exact = float(exact[2] / total)
    gen = torch.Generator().manual_seed(4)
    n = 200_000
    for backend in BACKENDS:
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        counts = torch.bincount(K.categorical(logits.expand(n, -1), u, backend=backend), minlength=5).double()
        expected = n * torch.tensor([float(e / total) for e in exact], dtype=torch.float64)
        bulk = [0, 1, 3, 4]
        chi2 = float(((counts[bulk] - expected[bulk]) ** 2 / expected[bulk]).sum())
        assert chi2 < 33.4, (backend, counts)
        width = 1e-6
        low = c - width / 2
        u_tail = low + width * torch.rand(n, generator=gen, dtype=torch.float64)
        hits = int((K.categorical(logits.expand(n, -1), u_tail, backend=backend) == 2).sum())
        mean = n * q_exact / width
        assert abs(hits - mean) < 5.3 * math.sqrt(mean * (1 - q_exact / width)), (backend, hits, mean)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_logits_and_uniforms_raise(backend):
    u = torch.tensor([0.5, 0.5], dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN"):
        K.categorical(torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), u, backend=backend)
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        K.categorical(torch.tensor([[0.0, INF], [0.0, 0.0]]), u, backend=backend)
    with pytest.raises(ValueError, match="no finite"):
        K.categorical(torch.tensor([[-INF, -INF], [0.0, 0.0]]), u, backend=backend)
    with pytest.raises(ValueError, match="NaN or \\+inf"):  # overflow through the temperature
        K.categorical(torch.tensor([[1e300, 0.0], [0.0, 0.0]], dtype=torch.float64), u, temperature=1e-10,
                      backend=backend)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        K.categorical(torch.zeros(2, 3), torch.tensor([0.5, 1.0], dtype=torch.float64), backend=backend)
    for bad in (-0.0625, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            K.categorical(torch.zeros(2, 3), torch.tensor([0.5, bad], dtype=torch.float64), backend=backend)
    with pytest.raises(ValueError, match="shape"):
        K.categorical(torch.zeros(2, 3), torch.tensor([0.5], dtype=torch.float64), backend=backend)
    with pytest.raises(ValueError, match="top_k"):
        K.categorical(torch.zeros(2, 3), u, top_k=0, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("argmax", [False, True])
@pytest.mark.parametrize("rows", [4, 12_000])  # the larger one takes Numba's parallel path with two threads
def test_masked_step_raises_for_a_bad_row_only_where_it_unmasks(backend, argmax, rows):
    """The kernels report the worst row of the ones they read (no pass over the rest): a NaN
    row at a position that unmasks raises, one at a clean position or left masked does not."""
    V = 33
    x = torch.full((1, rows), V, dtype=torch.long)
    x[0, 1] = 0
    logits = torch.zeros(1, rows, V)
    logits[0, 1] = float("nan")  # clean: never read
    logits[0, 2] = float("nan")
    p = torch.ones(1, rows, dtype=torch.float64)
    p[0, 2] = 0.0  # stays masked: never read
    u = torch.full((1, rows), 0.5, dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = K.masked_step(x, logits, p, u, u, mask_id=V, argmax=argmax, backend=backend)
        assert out[0, 2] == V and out[0, 1] == 0 and bool((out[0, 3:] < V).all())
        logits[0, rows - 1, 5] = float("inf")
        with pytest.raises(ValueError, match="NaN or \\+inf"):
            K.masked_step(x, logits, p, u, u, mask_id=V, argmax=argmax, backend=backend)
    finally:
        torch.set_num_threads(before)


def test_vocabulary_of_one_and_empty_batches():
    for backend in BACKENDS:
        out = K.categorical(torch.zeros(3, 1), torch.tensor([0.0, 0.5, 0.9], dtype=torch.float64), backend=backend,
                            top_k=1, top_p=0.3)
        assert out.tolist() == [0, 0, 0]
        empty = K.categorical(torch.zeros(0, 7), torch.zeros(0, dtype=torch.float64), backend=backend)
        assert empty.shape == (0,)


# -- masked step ---------------------------------------------------------------------------


@st.composite
def masked_batches(draw):
    B, N, V = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 10))
    mask_share = draw(st.sampled_from([0.0, 1.0, 0.5]))  # none, all and some positions masked
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31)))
    x = torch.randint(0, V, (B, N), generator=gen)
    x[torch.rand(B, N, generator=gen) < mask_share] = V
    logits = (torch.randn(B, N, V, generator=gen) * 3).to(draw(st.sampled_from(DTYPES)))
    logits[torch.rand(B, N, V, generator=gen) < 0.2] = -INF
    logits[..., draw(st.integers(0, V - 1))] = 0.0
    per_row = draw(st.booleans())
    p = torch.rand(B if per_row else (B, N), generator=gen, dtype=torch.float64)
    p[0] = draw(st.sampled_from([0.0, 1.0, 0.5]))
    u_move = torch.rand(B, N, generator=gen, dtype=torch.float64)
    u_token = torch.rand(B, N, generator=gen, dtype=torch.float64)
    return x, logits, p, u_move, u_token


@given(batch=masked_batches(), argmax=st.booleans(), data=st.data())
def test_masked_step_backends_agree_and_follow_the_definition(batch, argmax, data):
    x, logits, p, u_move, u_token = batch
    V = logits.shape[-1]
    options = data.draw(filters(V))
    out = {b: K.masked_step(x, logits, p, u_move, u_token, mask_id=V, argmax=argmax, backend=b, **options)
           for b in BACKENDS}
    assert torch.equal(out["numba"], out["torch"])
    p_full = (p[:, None] if p.dim() == 1 else p).expand_as(u_move)
    moves = (x == V) & (u_move < p_full)
    assert torch.equal(out["numba"][~moves], x[~moves])
    if bool(moves.any()):
        rows = logits[moves]
        if argmax:
            expected = rows.argmax(-1)
        else:
            expected = K.reference_categorical(rows, u_token[moves], K.TokenFilter(**options))
        assert torch.equal(out["numba"][moves], expected)


def test_masked_step_validates_its_inputs():
    x = torch.full((2, 3), 4)
    u = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="logits must have shape"):
        K.masked_step(x, torch.zeros(2, 4, 4), 0.5, u, u, mask_id=4)
    with pytest.raises(ValueError, match="does not broadcast"):
        K.masked_step(x, torch.zeros(2, 3, 4), torch.ones(5), u, u, mask_id=4)
    with pytest.raises(ValueError, match="no finite"):
        K.masked_step(x, torch.full((2, 3, 4), -INF), 1.0, u, u, mask_id=4, backend="numba")


# -- confidence ranking and forward noising ---------------------------------------------------


@given(seed=st.integers(0, 2 ** 31), B=st.integers(1, 4), N=st.integers(1, 12), tied=st.booleans())
def test_commit_topk_matches_a_stable_sort(seed, B, N, tied):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (B, N), generator=gen).double() if tied else torch.randn(B, N, generator=gen)
    scores[torch.rand(B, N, generator=gen) < 0.1] = -INF
    eligible = torch.rand(B, N, generator=gen) < 0.7
    k = torch.randint(0, N + 2, (B,), generator=gen)
    results = [K.commit_topk(scores, eligible, k, backend=b) for b in BACKENDS]
    assert torch.equal(results[0], results[1])
    for b in range(B):
        ranked = sorted((j for j in range(N) if eligible[b, j]), key=lambda j: (-float(scores[b, j]), j))
        expected = set(ranked[:int(k[b])])
        assert {j for j in range(N) if results[0][b, j]} == expected


def test_commit_topk_rejects_nan_scores():
    with pytest.raises(ValueError, match="NaN"):
        K.commit_topk(torch.tensor([[0.0, float("nan")]]), torch.tensor([[True, True]]), 1)


@given(seed=st.integers(0, 2 ** 31), per_row=st.booleans())
def test_forward_noising_backends_agree_with_the_definition(seed, per_row):
    gen = torch.Generator().manual_seed(seed)
    B, N, V = 3, 17, 11
    x0 = torch.randint(0, V, (B, N), generator=gen)
    alpha = torch.rand(B if per_row else (B, N), generator=gen, dtype=torch.float64)
    u = torch.rand(B, N, generator=gen, dtype=torch.float64)
    u2 = torch.rand(B, N, generator=gen, dtype=torch.float64)
    u2[0, 0] = 1 - 2 ** -53
    keep = u < (alpha[:, None] if per_row else alpha)
    masked = [K.mask_noise(x0, alpha, u, mask_id=V, backend=b) for b in BACKENDS]
    assert torch.equal(masked[0], masked[1])
    assert torch.equal(masked[0], torch.where(keep, x0, V))
    uniform = [K.uniform_noise(x0, alpha, u, u2, vocab_size=V, backend=b) for b in BACKENDS]
    assert torch.equal(uniform[0], uniform[1])
    assert torch.equal(uniform[0], torch.where(keep, x0, (u2 * V).floor().long().clamp_max(V - 1)))


@given(seed=st.integers(0, 2 ** 31), per_row=st.booleans(), argmax=st.booleans())
def test_masked_step_with_remasking_agrees_with_the_definition(seed, per_row, argmax):
    """With remask_prob the step is the plain masked step, then positions clean in x and free
    become the mask iff u_remask < sigma (the positions that just unmasked keep their token),
    identically on every backend."""
    gen = torch.Generator().manual_seed(seed)
    B, N, V = 3, 17, 5
    x = torch.randint(0, V + 1, (B, N), generator=gen)
    logits = torch.randn(B, N, V, generator=gen)
    p = torch.rand(B, generator=gen, dtype=torch.float64)
    sigma = torch.rand(B if per_row else (B, N), generator=gen, dtype=torch.float64)
    u_move, u_token, u_remask = (torch.rand(B, N, generator=gen, dtype=torch.float64) for _ in range(3))
    free = torch.rand(B, N, generator=gen) < 0.8
    out = [K.masked_step(x, logits, p, u_move, u_token, mask_id=V, argmax=argmax, remask_prob=sigma,
                         u_remask=u_remask, fixed=~free, backend=b) for b in BACKENDS]
    assert torch.equal(out[0], out[1])
    plain = K.masked_step(x, logits, p, u_move, u_token, mask_id=V, argmax=argmax)
    hit = (x != V) & free & (u_remask < (sigma[:, None] if per_row else sigma))
    assert torch.equal(out[0], torch.where(hit, V, plain))
    with pytest.raises(ValueError, match="fixed, a BoolTensor"):
        K.masked_step(x, logits, p, u_move, u_token, mask_id=V, remask_prob=sigma, u_remask=u_remask,
                      fixed=free.long())
    with pytest.raises(ValueError, match="u_remask must be a tensor"):
        K.masked_step(x, logits, p, u_move, u_token, mask_id=V, remask_prob=sigma, fixed=free)
    with pytest.raises(ValueError, match="remask_prob, which is missing"):
        K.masked_step(x, logits, p, u_move, u_token, mask_id=V, u_remask=u_remask, fixed=free)


@given(seed=st.integers(0, 2 ** 31), B=st.integers(0, 4), N=st.integers(0, 9), value=st.integers(-1, 6))
def test_any_equal_backends_agree_with_the_definition(seed, B, N, value):
    x = torch.randint(0, 6, (B, N), generator=torch.Generator().manual_seed(seed))
    expected = bool((x == value).any())
    assert [K.any_equal(x, value, backend=b) for b in BACKENDS] == [expected] * len(BACKENDS)
    assert K.any_equal(x.t(), value) == expected  # a transposed (non-contiguous) view
    with pytest.raises(ValueError, match="LongTensor"):
        K.any_equal(x.int(), value)


def test_uniform_noise_has_the_marginal_of_the_uniform_process():
    """x_t ~ Cat(alpha x0 + (1 - alpha)/V): chi-square at p < 1e-6 (5 degrees of freedom)."""
    gen = torch.Generator().manual_seed(5)
    n, V, alpha = 60_000, 6, 0.3
    x0 = torch.full((1, n), 2)
    out = K.uniform_noise(x0, alpha, torch.rand(1, n, generator=gen, dtype=torch.float64),
                          torch.rand(1, n, generator=gen, dtype=torch.float64), vocab_size=V)
    probs = torch.full((V,), (1 - alpha) / V, dtype=torch.float64)
    probs[2] += alpha
    counts = torch.bincount(out[0], minlength=V).double()
    assert float(((counts - n * probs) ** 2 / (n * probs)).sum()) < 35.9


# -- backend selection -----------------------------------------------------------------------


def test_auto_uses_numba_on_cpu_and_torch_elsewhere(monkeypatch):
    for op in K.OPS:
        assert K.resolve("auto", op, "cpu").name == ("numba" if op in numba_backend.AUTO_OPS else "torch")
        assert K.resolve("auto", op, "cuda").name == "torch"
    monkeypatch.setenv(K.BACKEND_ENV, "torch")
    assert K.resolve("auto", "categorical", "cpu").name == "torch"


def test_backend_errors_name_the_installed_backends():
    with pytest.raises(ValueError, match="cannot run 'categorical' on cuda"):
        K.resolve("numba", "categorical", "cuda")
    with pytest.raises(ValueError, match="Did you mean 'numba'"):
        K.categorical(torch.zeros(1, 2), torch.zeros(1, dtype=torch.float64), backend="numbaa")
    with pytest.raises(ddkit.ParameterError, match="kernel backend"):
        ddkit.build("sampler", "ancestral", backend="cuda-magic")


def test_a_third_party_backend_takes_part_in_auto():
    class Recording(K.KernelBackend):
        name = "recording"
        calls = 0

        def auto_priority(self, op, device):
            return 100 if op == "categorical" else None

        def categorical(self, logits, uniforms, token_filter):
            Recording.calls += 1
            return K.reference_categorical(logits, uniforms, token_filter)

    class Plugin:
        @ddkit.hookimpl
        def register_kernels(self, register):
            register("recording", Recording, summary="test backend")

    registry = ddkit.get_registry()
    registry.add_plugin(Plugin(), name="test:recording", source="test")
    try:
        assert "recording" in K.backend_names()
        out = K.categorical(torch.zeros(2, 3), torch.tensor([0.1, 0.9], dtype=torch.float64))
        assert out.tolist() == [0, 2] and Recording.calls == 1
        assert K.resolve("auto", "masked_step", "cpu").name == "numba"
    finally:
        ddkit.reset_registry()
    assert "recording" not in K.backend_names()


# -- samplers --------------------------------------------------------------------------------


def _denoiser(V):
    def denoiser(x_t, t):
        pos = torch.arange(x_t.shape[1], dtype=torch.float32)
        masks = (x_t == V).float().sum(-1, keepdim=True)
        return torch.stack([torch.sin(pos * (k + 1) + masks) * 3 for k in range(V)], -1)
    return denoiser


@pytest.mark.parametrize("name,params", [("ancestral", {"steps": 12}), ("ancestral", {"steps": 5, "top_p": 0.8}),
                                         ("ancestral", {"steps": 3, "final_argmax": True, "temperature": 0.7}),
                                         ("first_hitting", {"top_k": 3})])
def test_samplers_give_identical_samples_on_every_backend(name, params):
    V = 7
    process = ddkit.build("process", "masked", vocab_size=V, schedule="cosine")
    tokens = []
    for backend in BACKENDS:
        sampler = ddkit.build("sampler", name, backend=backend, **params)
        result = sampler.sample(_denoiser(V), process, num_samples=5, length=9,
                                generator=torch.Generator().manual_seed(6))
        tokens.append(result.tokens)
    assert torch.equal(tokens[0], tokens[1])
    assert bool((tokens[0] < V).all())


# -- memory and forks ------------------------------------------------------------------------

_PEAK_SCRIPT = r"""
import gc, torch, ddkit.kernels as K
torch.set_num_threads(1)
for backend in ("numba", "torch"):  # compile / load before measuring
    K.categorical(torch.randn(4, 64), torch.rand(4, dtype=torch.float64), backend=backend)
logits = torch.randn(16, 512, 4096)
u = torch.rand(16, 512, dtype=torch.float64)
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
for backend in ("numba", "torch"):
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    base = rss("VmRSS")
    K.categorical(logits, u, backend=backend)
    print(backend, (rss("VmHWM") - base) / (logits.numel() * 4))
"""


def test_categorical_never_materialises_float64_logits():
    """Peak extra resident memory while sampling 128 MiB of float32 logits stays a small
    fraction of the logits on both backends (a float64 copy alone would be 2x). Measured in a
    fresh process with the peak RSS reset just before the call and glibc returning freed
    blocks to the system at once."""
    import os
    import subprocess
    import sys

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True, env=env,
                         check=True)
    ratios = dict(line.split() for line in out.stdout.strip().splitlines())
    assert set(ratios) == set(BACKENDS)
    assert all(float(r) < 0.5 for r in ratios.values()), ratios


def _fork_worker_result(index):
    gen = torch.Generator().manual_seed(index)
    logits = torch.randn(9000, 33, generator=gen)  # above SERIAL_WORK: a parallel launch with 2 threads
    u = torch.rand(9000, generator=gen, dtype=torch.float64)
    return K.categorical(logits, u, backend="numba", top_p=0.9)


class _KernelDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return _fork_worker_result(index)


def _two_threads(worker_id):
    torch.set_num_threads(2)  # DataLoader workers start with one; ask for the parallel path


def test_numba_kernels_run_in_forked_dataloader_workers():
    """The parent launches Numba's thread pool first; forked workers then run the same
    parallel kernels (fork-safe threading layer) and get the parent's results."""
    import numba

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = [_fork_worker_result(i) for i in range(4)]
    finally:
        torch.set_num_threads(before)
    assert numba_backend.SERIAL_WORK < 9000 * 33
    loader = torch.utils.data.DataLoader(_KernelDataset(), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork", worker_init_fn=_two_threads)
    got = list(loader)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    import os

    assert numba.threading_layer() in ("workqueue", "tbb") or "NUMBA_THREADING_LAYER" in os.environ


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [-0.25, 1.0, float("nan")])
def test_every_operation_rejects_uniforms_outside_the_unit_interval(backend, bad):
    """The torch backend is checked by ddkit before the call; Numba (``checks_uniforms``)
    checks inside its kernels, including uniforms that the step does not otherwise read."""
    B, N, V = 2, 5, 3
    good = torch.full((B, N), 0.5, dtype=torch.float64)
    spoiled = good.clone()
    spoiled[1, 3] = bad
    x = torch.full((B, N), V, dtype=torch.long)
    x0 = torch.zeros(B, N, dtype=torch.long)
    logits = torch.zeros(B, N, V)
    calls = {
        "categorical": lambda u: K.categorical(logits, u, backend=backend),
        "masked_step u_move": lambda u: K.masked_step(x, logits, 0.5, u, good, mask_id=V, backend=backend),
        # p_unmask = 0: no position moves, yet the unread u_token is checked
        "masked_step u_token": lambda u: K.masked_step(x, logits, 0.0, good, u, mask_id=V, backend=backend),
        "mask_noise": lambda u: K.mask_noise(x0, 0.5, u, mask_id=V, backend=backend),
        "masked_step u_remask": lambda u: K.masked_step(x0, logits, 0.5, good, good, mask_id=V, remask_prob=0.5,
                                                        u_remask=u, fixed=x0 < 0, backend=backend),
        "uniform_noise u_keep": lambda u: K.uniform_noise(x0, 0.5, u, good, vocab_size=V, backend=backend),
        "uniform_noise u_token": lambda u: K.uniform_noise(x0, 0.5, good, u, vocab_size=V, backend=backend),
    }
    for name, call in calls.items():
        call(good)
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            call(spoiled)
            pytest.fail(f"{name} accepted a uniform of {bad}")
