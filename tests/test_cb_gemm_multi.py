"""The multi-token-group GEMM (kernel.h gemm_multi, e.g. cb4 AVX2: each weight block decoded once into a buffer for
all groups): exact integer sums against the scalar reference called once per group, over group counts, column ranges,
K spanning several decoded chunks, every table path and the int16 bounds; and lowbit.linear giving the same
results with the multi path on and off."""
import numpy as np
import pytest

import lowbit
from lowbit import _core
from lowbit.formats import cb
from lowbit.formats.repack import interleave
from lowbit.ops import KERNELS, PackedWeight

from kernel_cases import SENTINEL, Acts, int_reference, scalar_twin

MULTI = [pytest.param(k, id=k["name"], marks=[] if k["runnable"] else
                      pytest.mark.skip(reason=f"{k['name']} needs {'+'.join(k['isa'])}"))
         for k in KERNELS if k["gemm_multi"]]
R = 8


class _W:
    """Packed cb4/cb2 weights with random ids into the given tables and given (or unit) scales."""

    def __init__(self, k, N, K, tables, rng, scales=None):
        fmt, nb = k["format"], K // 32
        ids = rng.integers(0, len(tables), (N, nb))
        idx = rng.integers(0, cb.ENTRIES[fmt], (N * nb, 32))
        d = np.ones(N * nb) if scales is None else scales.reshape(-1)
        blocks = cb.make_blocks(d, ids.reshape(-1), idx, fmt).reshape(N, -1)
        self.N, self.K = N, K
        self.aux = cb.prepare_aux(blocks, tables, fmt)
        self.data = interleave(blocks, fmt, N, K, k["R"], k["B"]).reshape(-1)
        self.int_vals = self.aux.astype(np.int64)[ids.reshape(-1)[:, None], idx].reshape(N, K)


def _acts(ng, K, rng, unit_scales=True, value=None):
    acts = [Acts(4, K, rng, unit_scales=unit_scales) for _ in range(ng)]
    for a in acts:
        if value is not None:
            a.q[:] = value
            a.int_vals = a.q.astype(np.int64).reshape(4, K)
            a.bsums = a.q.astype(np.int32).sum(-1).astype(np.int16)
    return acts


def _multi(k, w, acts, n0, n1, pad=3):
    ldo = w.N + pad
    bufs = [a.gemm_buffers(k["act_B"]) for a in acts]
    A = np.concatenate([b[0] for b in bufs])
    bs = np.concatenate([b[1] for b in bufs])
    out = np.full(4 * len(acts) * ldo, SENTINEL, np.float32)
    _core.gemm_multi(k["index"], w.K, w.data, w.aux.reshape(-1), A, bs, out, ldo, n0, n1, w.N, len(acts))
    return out.reshape(-1, ldo)


def _per_group(k, w, acts, n0, n1, pad=3):
    """The kernel's one-group gemm, called once per group (what linear.c did before)."""
    ldo = w.N + pad
    out = np.full((len(acts), 4 * ldo), SENTINEL, np.float32)
    for t, a in enumerate(acts):
        A, bs = a.gemm_buffers(k["act_B"])
        _core.gemm(k["index"], w.K, w.data, w.aux.reshape(-1), A, bs, out[t], ldo, n0, n1, w.N)
    return out.reshape(-1, ldo)


def _tables(fmt, rng):
    """Every table-range path of the AVX2 kernels: full int8, 7-bit, [-16, 16] and the +-64 extremes."""
    E = cb.ENTRIES[fmt]
    yield "full int8", rng.integers(-127, 128, (16, E))
    yield "7-bit", rng.integers(-64, 64, (16, E))
    yield "5-bit", rng.integers(-16, 17, (16, E))
    yield "+-64 only", rng.choice([-64, 64], (16, E))


@pytest.mark.parametrize("k", MULTI)
@pytest.mark.parametrize("K", [32, 17 * 32, 2048], ids=["K32", "K544", "K2048"])
def test_multi_exact_against_scalar_per_group(k, K):
    """ng = 1, 2, 5, 16 and 17 (over one pass of 16); n0 > 0 and a partial last row group; K of 1 block, of
    2 decoded chunks (the last partial) and of 4."""
    rng = np.random.default_rng(11 + K)
    ref_k = scalar_twin(k)
    N = 3 * R + 5
    Np = -(-N // R) * R
    for name, tables in _tables(k["format"], rng):
        w = _W(k, N, K, tables, rng)
        for ng in (1, 2, 5, 16, 17):
            acts = _acts(ng, K, rng)
            exact = np.concatenate([int_reference(w, a) for a in acts]).astype(np.float32)
            for n0, n1 in ((0, Np), (R, Np), (2 * R, 3 * R)):
                got = _multi(k, w, acts, n0, n1)
                want = _per_group(ref_k, w, acts, n0, n1)
                hi = min(n1, N)
                msg = f"{k['name']} {name} ng={ng} cols {n0}:{n1}"
                np.testing.assert_array_equal(got, want, err_msg=msg)   # incl. the untouched SENTINEL cells
                np.testing.assert_array_equal(got[:, n0:hi], exact[:, n0:hi], err_msg=msg)
                assert (got[:, :n0] == SENTINEL).all() and (got[:, hi:] == SENTINEL).all(), msg


@pytest.mark.parametrize("k", MULTI)
def test_multi_bit_identical_to_one_group_gemm_with_scales(k):
    """Random fp16 scales: the multi entry accumulates each (row, token) in the same order as the kernel's
    one-group gemm, so the floats agree bit for bit (and with the scalar reference within fp32 rounding)."""
    rng = np.random.default_rng(7)
    N, K, ng = 6 * R + 3, 40 * 32, 5
    for name, tables in _tables(k["format"], rng):
        w = _W(k, N, K, tables, rng, scales=rng.uniform(0.5, 2, (N, K // 32)) / 64)
        acts = _acts(ng, K, rng, unit_scales=False)
        got = _multi(k, w, acts, 0, N)
        np.testing.assert_array_equal(got, _per_group(k, w, acts, 0, N), err_msg=name)
        ref = _per_group(scalar_twin(k), w, acts, 0, N)[:, :N].astype(np.float64)
        np.testing.assert_allclose(got[:, :N], ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max(), err_msg=name)


@pytest.mark.parametrize("k", MULTI)
def test_multi_extremes(k):
    """All weights at +-16, +-17, +-64 or +-127 and all activations at +-127 over 2 chunks and 3 groups: the
    largest int16 partials of each table path."""
    rng = np.random.default_rng(5)
    N, K, E = 2 * R + 1, 33 * 32, cb.ENTRIES[k["format"]]
    for v in (16, 17, 64, 127):
        for sign in (1, -1):
            w = _W(k, N, K, np.array([[v] * E, [-v] * E]), rng)
            acts = _acts(3, K, rng, value=127 * sign)
            got = _multi(k, w, acts, 0, N)[:, :N]
            want = np.concatenate([int_reference(w, a) for a in acts]).astype(np.float32)
            np.testing.assert_array_equal(got, want, err_msg=f"{k['name']} {v} {sign}")


def test_multi_entry_listed():
    """kernels.inc lists cb4_8x16__avx2 with its multi entry (else the tests above would silently run nothing)."""
    k = [k for k in KERNELS if k["name"] == "cb4_8x16__avx2"]
    if not k:
        pytest.skip("no x86 AVX2 kernels in this build")
    assert k[0]["gemm_multi"]


def test_multi_rejects_bad_calls():
    plain = next(k for k in KERNELS if not k["gemm_multi"] and k["runnable"])
    buf = np.zeros(1 << 16, np.uint8)
    out = np.zeros(1 << 14, np.float32)
    with pytest.raises(ValueError, match="no gemm_multi"):
        _core.gemm_multi(plain["index"], 32, buf, np.zeros(256, np.int8), buf, buf, out, 8, 0, 8, 8, 1)
    for k in [k for k in KERNELS if k["gemm_multi"] and k["runnable"]]:
        with pytest.raises(ValueError, match="token group count"):
            _core.gemm_multi(k["index"], 32, buf, np.zeros(256, np.int8), buf, buf, out, 8, 0, 8, 8, 0)
        with pytest.raises(ValueError, match="packed activations"):   # 3 groups need 3 x 136 bytes
            _core.gemm_multi(k["index"], 32, buf, np.zeros(256, np.int8), buf[:300], buf, out, 8, 0, 8, 8, 3)


@pytest.fixture
def multi_switch():
    yield _core.set_gemm_multi
    _core.set_gemm_multi(True)


def _int_input(M, K, rng):
    """Integer activations with a +-127 in every block: Q8_0 scale 1, so every sum is an exact integer."""
    x = rng.integers(-127, 128, (M, K)).astype(np.float32)
    x[:, ::32] = 127 * rng.choice([-1, 1], (M, K // 32))
    return x


@pytest.mark.parametrize("k", MULTI)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_linear_same_with_and_without_multi(k, nthreads, multi_switch):
    """lowbit.linear for M = 4..70 (up to 17 token groups: 2 M tiles, the second of 1 group, which takes the
    per-group gemm) with the multi path on and off: bit for bit equal on float inputs, and equal to the scalar
    kernel on integer inputs (exact sums)."""
    rng = np.random.default_rng(1)
    fmt, E = k["format"], cb.ENTRIES[k["format"]]
    N, K = 5 * R + 3, 17 * 32
    old = lowbit.get_num_threads()
    lowbit.set_num_threads(nthreads)
    try:
        for name, tables in list(_tables(fmt, rng))[:3]:
            n = N * K // 32
            blocks = cb.make_blocks(rng.uniform(0.5, 1, n) / 64, rng.integers(0, 16, n),
                                    rng.integers(0, E, (n, 32)), fmt).reshape(N, -1)
            ones = cb.make_blocks(np.ones(n), rng.integers(0, 16, n), rng.integers(0, E, (n, 32)),
                                  fmt).reshape(N, -1)
            pw = PackedWeight.from_blocks(blocks, fmt, N, K, kernel=k["name"], aux=tables)
            pw1 = PackedWeight.from_blocks(ones, fmt, N, K, kernel=k["name"], aux=tables)
            ref1 = PackedWeight.from_blocks(ones, fmt, N, K, kernel=scalar_twin(k)["name"], aux=tables)
            for M in range(4, 71):
                x = rng.standard_normal((M, K)).astype(np.float32)
                xi = _int_input(M, K, rng)
                multi_switch(True)
                on, on_i = lowbit.linear(x, pw), lowbit.linear(xi, pw1)
                multi_switch(False)
                off = lowbit.linear(x, pw)
                np.testing.assert_array_equal(on, off, err_msg=f"{name} M={M}")
                np.testing.assert_array_equal(on_i, lowbit.linear(xi, ref1), err_msg=f"{name} M={M} vs scalar")
    finally:
        lowbit.set_num_threads(old)
