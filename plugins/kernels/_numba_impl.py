r"""The compiled Numba functions behind :mod:`ddkit.plugins.kernels.numba_backend`.

Each categorical draw computes the reference inverse CDF of :mod:`ddkit.kernels` directly,
with the same IEEE operations in the same order as
:func:`ddkit.kernels.reference_categorical` (no fast-math, so no fused multiply-adds or
reassociation), which makes it bit-identical to the torch backend. Work is split over rows
(``prange`` over a few chunks per thread); every row is computed by one thread from its own
uniform, so results do not depend on the thread count. Few signatures are compiled (float32
and float64 logits; int64, bool and float64 elsewhere) and all are cached on disk, in the
directory that :func:`ddkit.plugins.kernels.numba_backend.use_cache_dir` chooses.
"""

from __future__ import annotations

import numpy as np

from .numba_backend import use_cache_dir

use_cache_dir()  # before the first njit: Numba fixes each function's cache location when decorated

from numba import njit, prange  # noqa: E402
from numba.core import types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from ddkit.kernels import (  # noqa: E402
    BAD_UNIFORM,
    EXP_COEFFS,
    EXP_UNDERFLOW,
    LN2_HI,
    LN2_LO,
    LOG2E,
    NAN_OR_POSINF_LOGIT,
    NO_FINITE_LOGIT,
)

_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11 = EXP_COEFFS
_ROUND_MAGIC = 6755399441055744.0  # 1.5 * 2^52: k + magic holds the integer k in its low bits
_ROUND_MAGIC_BITS = 0x4338000000000000
SMALL_TOP_K = 64  #: up to this k, top-k keeps a sorted list of the k largest instead of quickselect


@intrinsic
def _float_bits(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


@njit(cache=True)
def _exp(x):
    """:func:`ddkit.kernels.reference_exp` for one float64; the integer k is read from the bits
    of ``k + 1.5 * 2^52`` (exact for integral k), so the loops that call it vectorise on AVX2."""
    xc = max(x, EXP_UNDERFLOW)
    k = np.floor(xc * LOG2E + 0.5)
    r = (xc - k * LN2_HI) - k * LN2_LO
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    s0 = (_C0 + _C1 * r) + (_C2 + _C3 * r) * r2
    s1 = (_C4 + _C5 * r) + (_C6 + _C7 * r) * r2
    s2 = (_C8 + _C9 * r) + (_C10 + _C11 * r) * r2
    p = (s0 + s1 * r4) + s2 * r8
    ki = _float_bits(k + _ROUND_MAGIC) - _ROUND_MAGIC_BITS
    value = p * _bits_float((ki + 1023) << 52)
    return 0.0 if x < EXP_UNDERFLOW else value


@njit(cache=True)
def _scaled(value, tau):
    z = np.float64(value)
    return z if tau == 1.0 else z / tau


@njit(cache=True)
def _kth_largest(values, n, k, a, b):
    """The k-th largest (1-based, with multiplicity) of ``values[:n]``: quickselect whose
    partition copies the larger entries to ``a`` and the smaller to ``b`` with branch-free
    conditional increments (no mispredicted branches); each pass reads one of the three
    arrays and writes at indices never ahead of its reads, so it can work in place."""
    source = 0  # 0: values, 1: a, 2: b
    m = n
    target = k
    while True:
        current = values if source == 0 else (a if source == 1 else b)
        if m <= 32:
            rest = current[:m].copy()
            rest.sort()
            return rest[m - target]
        x, y, z = current[0], current[m // 2], current[m - 1]
        pivot = max(min(x, y), min(max(x, y), z))
        above = 0
        below = 0
        for i in range(m):
            v = current[i]
            a[above] = v
            above += v > pivot
            b[below] = v
            below += v < pivot
        if target <= above:
            source, m = 1, above
        elif target <= m - below:
            return pivot
        else:
            target -= m - below
            source, m = 2, below


@njit(cache=True)
def _kth_largest_small(values, k, buf):
    """The k-th largest of ``values`` for small k: one pass keeping the k largest seen so far
    in ``buf[:k]`` (sorted, decreasing); a value enters only if it beats the current k-th."""
    n = 0
    for j in range(values.shape[0]):
        v = values[j]
        if n == k:
            if not v > buf[k - 1]:
                continue
            i = k - 1
        else:
            i = n
            n += 1
        while i > 0 and buf[i - 1] < v:
            buf[i] = buf[i - 1]
            i -= 1
        buf[i] = v
    return buf[k - 1]


@njit(cache=True)
def _row_max(row):
    """(max, any NaN) of a row, with four independent accumulators (max is exact in any order)."""
    V = row.shape[0]
    m0 = m1 = m2 = m3 = -np.inf
    bad = False
    j = 0
    while j + 4 <= V:
        v0, v1, v2, v3 = np.float64(row[j]), np.float64(row[j + 1]), np.float64(row[j + 2]), np.float64(row[j + 3])
        bad |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3)
        m0, m1, m2, m3 = max(m0, v0), max(m1, v1), max(m2, v2), max(m3, v3)
        j += 4
    while j < V:
        v0 = np.float64(row[j])
        bad |= v0 != v0
        m0 = max(m0, v0)
        j += 1
    return max(max(m0, m1), max(m2, m3)), bad


@njit(cache=True)
def _nucleus_scan(values, n, limit, m):
    """Visit ``values[:n]`` (sorted increasing) from the largest; return (True, g) for the
    first value group g whose larger entries hold ``limit`` already, else (False, 0)."""
    before = 0.0
    i = n - 1
    while i >= 0:
        g = values[i]
        if not before < limit:
            return True, g
        while i >= 0 and values[i] == g:
            before += _exp(g - m)
            i -= 1
    return False, 0.0


@njit(cache=True)
def _nucleus(row, tau, m, top_p, w, buf):
    r"""Top-p on the weights ``w`` (step 4 of the reference): zero every value group whose
    larger entries already hold ``top_p`` of the mass.

    Only a prefix of the decreasing order is sorted: entries with weight below
    :math:`\theta = (1 - p) T / (2V)` hold less than :math:`(1 - p) T / 2` together, so the
    cut lies among the entries with :math:`z \ge` the smallest :math:`z` of weight
    :math:`\ge \theta`; the sums over that prefix are the reference's sums. Should rounding
    ever put the cut outside it, the whole row is sorted."""
    V = w.shape[0]
    total = 0.0
    for j in range(V):
        total += w[j]
    limit = top_p * total
    theta = (1.0 - top_p) * total / (2.0 * V)
    z_floor = np.inf
    for j in range(V):
        if w[j] >= theta and w[j] > 0.0:
            z_floor = min(z_floor, _scaled(row[j], tau))
    n, positive = _gather_prefix(row, tau, w, buf, z_floor)
    cut, g = _nucleus_scan(buf, n, limit, m)
    if not cut and n < positive:  # only through rounding: use every entry
        n, positive = _gather_prefix(row, tau, w, buf, -np.inf)
        cut, g = _nucleus_scan(buf, n, limit, m)
    if cut:
        for j in range(V):
            if w[j] > 0.0 and _scaled(row[j], tau) <= g:
                w[j] = 0.0


@njit(cache=True)
def _gather_prefix(row, tau, w, buf, z_floor):
    """Sort into ``buf[:n]`` the z of the entries with positive weight and z >= z_floor;
    returns (n, number of entries with positive weight)."""
    n = 0
    positive = 0
    for j in range(w.shape[0]):
        if w[j] > 0.0:
            positive += 1
            z = _scaled(row[j], tau)
            if z >= z_floor:
                buf[n] = z
                n += 1
    buf[:n].sort()
    return n, positive


@njit(cache=True)
def _weights(row, tau, top_k, top_p, w, buf):
    """Steps 1-4 of the reference: the filtered weights of one row into ``w``; returns 0, or
    an error code (then ``w`` is undefined). ``buf``: scratch ``[2, V]``."""
    V = row.shape[0]
    m, bad = _row_max(row)
    if bad:
        return NAN_OR_POSINF_LOGIT
    if tau != 0.0 and tau != 1.0:
        m = m / tau
    if m == np.inf:
        return NAN_OR_POSINF_LOGIT
    if m == -np.inf:
        return NO_FINITE_LOGIT
    if tau == 0.0:
        for j in range(V):
            w[j] = 1.0 if np.float64(row[j]) == m else 0.0
        return 0
    if top_k == 0:
        for j in range(V):
            w[j] = _exp(_scaled(row[j], tau) - m)
    else:
        for j in range(V):
            w[j] = _scaled(row[j], tau)
        if top_k * 32 <= V:
            kth = _kth_largest_small(w, top_k, buf[0])
        else:
            kth = _kth_largest(w, V, top_k, buf[0], buf[1])
        for j in range(V):
            w[j] = _exp(w[j] - m) if w[j] >= kth else 0.0
    if top_p < 1.0:
        _nucleus(row, tau, m, top_p, w, buf[0])
    return 0


@njit(cache=True)
def _search(cdf, u):
    """Step 5 of the reference on a cumulative row: the first j with ``cdf[j] > u * cdf[-1]``,
    else the last j where the CDF increases."""
    V = cdf.shape[0]
    target = u * cdf[V - 1]
    lo, hi = 0, V
    while lo < hi:
        mid = (lo + hi) >> 1
        if cdf[mid] > target:
            hi = mid
        else:
            lo = mid + 1
    if lo == V:  # u within an ulp of 1
        lo = V - 1
        while lo > 0 and cdf[lo] == cdf[lo - 1]:
            lo -= 1
    return lo


@njit(cache=True)
def _cumsum4(w):
    """In-place sequential cumulative sums of the four rows of ``w``, interleaved: four
    independent dependency chains, each in the reference's order."""
    c0 = c1 = c2 = c3 = 0.0
    for j in range(w.shape[1]):
        c0 += w[0, j]
        c1 += w[1, j]
        c2 += w[2, j]
        c3 += w[3, j]
        w[0, j] = c0
        w[1, j] = c1
        w[2, j] = c2
        w[3, j] = c3


@njit(cache=True)
def _argmax_row(row):
    m = -np.inf
    index = NO_FINITE_LOGIT
    for j in range(row.shape[0]):
        v = np.float64(row[j])
        if v != v or v == np.inf:
            return NAN_OR_POSINF_LOGIT
        if v > m:
            m = v
            index = j
    return index


@njit(cache=True)
def _bad_uniform(u):
    """1 if ``u`` is outside [0, 1) or NaN, else 0 (branch-free, so loops stay vectorisable)."""
    return np.int64((u < 0.0) | (u >= 1.0) | (u != u))


@njit(cache=True)
def sample_span(logits, selected, uniforms, out, tau, top_k, top_p, argmax, lo, hi, w, buf):
    """``out[i]`` for ``i`` in ``selected[lo:hi]``: the category of ``logits[i]`` drawn with
    ``uniforms[i]`` (or the first maximal entry with ``argmax``), or an error code. Rows go
    four at a time so their sequential cumulative sums interleave (``w``: scratch ``[4, V]``,
    ``buf``: ``[2, V]``). Returns the lowest code written (0: none), so that the caller needs
    no pass over ``out`` to find one."""
    worst = 0
    t = lo
    while t < hi:
        if argmax:
            code = _argmax_row(logits[selected[t]])
            out[selected[t]] = code
            worst = min(worst, code)
            t += 1
            continue
        group = min(4, hi - t)
        for r in range(group):
            if _bad_uniform(uniforms[selected[t + r]]):
                code = BAD_UNIFORM
            else:
                code = _weights(logits[selected[t + r]], tau, top_k, top_p, w[r], buf)
            if code != 0:
                w[r, :] = 1.0  # placeholder row, result replaced by the code below
                worst = min(worst, code)
            out[selected[t + r]] = code
        for r in range(group, 4):
            w[r, :] = 0.0
        _cumsum4(w)
        for r in range(group):
            i = selected[t + r]
            if out[i] == 0:
                out[i] = _search(w[r], uniforms[i])
        t += group
    return worst


@njit(parallel=True, cache=True)
def sample_rows(logits, selected, uniforms, out, tau, top_k, top_p, argmax, chunks):
    """:func:`sample_span` over all of ``selected``, split in ``chunks`` contiguous parts (a
    few per thread, each with its own scratch); returns the lowest code written (0: none)."""
    n = selected.shape[0]
    V = logits.shape[1]
    chunks = min(n, chunks)
    worst = np.zeros(max(chunks, 1), np.int64)
    for c in prange(chunks):
        w = np.empty((4, V))
        buf = np.empty((2, V))
        worst[c] = sample_span(logits, selected, uniforms, out, tau, top_k, top_p, argmax, c * n // chunks,
                               (c + 1) * n // chunks, w, buf)
    return worst.min()


@njit(cache=True)
def _count_bad(u):
    """How many entries of the contiguous array ``u`` lie outside [0, 1) or are NaN (a loop
    of its own, so that it vectorises)."""
    flat = u.reshape(-1)
    bad = 0
    for i in range(flat.shape[0]):
        bad += _bad_uniform(flat[i])
    return bad


@njit(cache=True)
def select_moving(x, p_unmask, u_move, u_token, mask_id, out, sigma, u_remask, fixed, remask):
    """The pass over positions of a masked reverse step: copies ``x`` into ``out`` and returns
    the flat indices of the positions that unmask, ``x == mask_id`` and ``u_move < p``
    (``p_unmask``: ``[B, 1]`` per sequence or ``[B, N]``), and whether every uniform lies in
    [0, 1). With ``remask``, a position clean in ``x`` and not ``fixed`` is written as the mask
    iff ``u_remask < sigma`` (``[B, 1]`` or ``[B, N]``); without, those three are not read."""
    B, N = x.shape
    step = 1 if p_unmask.shape[1] > 1 else 0
    remask_step = 1 if sigma.shape[1] > 1 else 0
    selected = np.empty(B * N, np.int64)
    n = 0
    for b in range(B):
        for j in range(N):
            token = x[b, j]
            if token == mask_id:
                if u_move[b, j] < p_unmask[b, j * step]:
                    selected[n] = b * N + j
                    n += 1
            elif remask and not fixed[b, j] and u_remask[b, j] < sigma[b, j * remask_step]:
                token = mask_id
            out[b, j] = token
    bad = _count_bad(u_move) + _count_bad(u_token)
    if remask:
        bad += _count_bad(u_remask)
    return selected[:n], bad == 0


@njit(cache=True)
def commit_topk(scores, eligible, k, out):
    """Per row, the ``k[b]`` eligible positions of highest score, ties to the lower position
    (serial: a batch of sequences is small work, below the cost of waking threads)."""
    B, N = scores.shape
    buf = np.empty(N)
    above = np.empty(N)
    below = np.empty(N)
    for b in range(B):
        n = 0
        for j in range(N):
            out[b, j] = False
            if eligible[b, j]:
                buf[n] = scores[b, j]
                n += 1
        take = min(k[b], n)
        if take > 0:
            kth = _kth_largest(buf, n, take, above, below)
            ties = take
            for j in range(N):
                if eligible[b, j] and scores[b, j] > kth:
                    ties -= 1
            for j in range(N):
                if eligible[b, j]:
                    s = scores[b, j]
                    if s > kth:
                        out[b, j] = True
                    elif s == kth and ties > 0:
                        out[b, j] = True
                        ties -= 1


@njit(cache=True)
def any_equal(x, value):
    """Whether some entry of the 2-D array ``x`` equals ``value``; stops at the first one."""
    B, N = x.shape
    for b in range(B):
        for j in range(N):
            if x[b, j] == value:
                return True
    return False


@njit(cache=True)
def mask_noise(x0, keep, uniforms, mask_id, out):
    """``out = x0`` where ``u < keep``, else ``mask_id``; returns whether every uniform lies
    in [0, 1). (``keep[b, j * step]``: one loop for ``[B, 1]`` and ``[B, N]`` that vectorises.)"""
    B, N = x0.shape
    step = 1 if keep.shape[1] > 1 else 0
    bad = 0
    for b in range(B):
        for j in range(N):
            u = uniforms[b, j]
            bad += _bad_uniform(u)
            out[b, j] = x0[b, j] if u < keep[b, j * step] else mask_id
    return bad == 0


@njit(cache=True)
def uniform_noise(x0, keep, u_keep, u_token, vocab_size, out):
    """``out = x0`` where ``u_keep < keep``, else ``floor(u_token * V)``; returns whether
    every uniform lies in [0, 1). The truncation goes through int32 (AVX2 converts four
    float64 to int32 at once, not to int64); exact since ``u_token * V < V < 2^31``."""
    B, N = x0.shape
    step = 1 if keep.shape[1] > 1 else 0
    bad = 0
    for b in range(B):
        for j in range(N):
            u, v = u_keep[b, j], u_token[b, j]
            bad += _bad_uniform(u) + _bad_uniform(v)
            replacement = min(np.int64(np.int32(v * vocab_size)), vocab_size - 1)
            out[b, j] = x0[b, j] if u < keep[b, j * step] else replacement
    return bad == 0


@njit(cache=True)
def token_probability(logits, tokens, out):
    """``out[r]``: the probability of ``tokens[r]`` under the softmax of row ``r`` (the
    reference: reference exp, sequential sum), NaN for a row whose maximum is NaN or
    infinite."""
    for r in range(logits.shape[0]):
        row = logits[r]
        m, bad = _row_max(row)
        if bad or m == np.inf or m == -np.inf:
            out[r] = np.nan
            continue
        total = 0.0
        for j in range(row.shape[0]):
            total += _exp(np.float64(row[j]) - m)
        out[r] = _exp(np.float64(row[tokens[r]]) - m) / total
