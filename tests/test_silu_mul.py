"""silu(gate) * up in C (csrc/ops/llama_ops.c lb_silu_mul_rows; AVX2 with the vector exp of csrc/x86_avx2/vexp.h)
against float64 over ordinary and extreme gates, the scalar loop and the SIMD one; rows do not depend on how many
there are (the server batches decode rows through it) nor on the thread count; bad buffers are refused."""
import numpy as np
import pytest

import lowbit
from lowbit import _core

# elementwise, relative to |ref| (+ a floor for results that underflow toward 0): float32 exp (libm or the
# degree-6 polynomial) and one divide/multiply. Measured worst over test_dense_grid: 2.0e-7 (AVX2), 1.7e-7
# (scalar); the exp polynomial's r^2 coefficient off by 4e-5 (relative) already gives 4.6e-7.
SILU_RTOL = 3e-7
SILU_ATOL = 1e-30
SIMD = [False, True]     # True falls back to the scalar loop where AVX2 is absent: both must hold


def reference(gu, n):
    g, u = gu[:, :n].astype(np.float64), gu[:, n:].astype(np.float64)
    with np.errstate(over="ignore"):
        return g / (1.0 + np.exp(-g)) * u


def gates(M, n, rng):
    gu = (rng.standard_normal((M, 2 * n)) * 6).astype(np.float32)
    special = np.array([0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0, 88.5, -88.5, 100.0, -100.0, 1e4, -1e4, 20.0, -20.0],
                       np.float32)
    k = min(n, len(special))
    gu[0, :k] = special[:k]
    return gu


@pytest.mark.parametrize("simd", SIMD, ids=["scalar", "simd"])
@pytest.mark.parametrize("M, n", [(1, 1536), (1, 7), (3, 13), (64, 1536), (40, 8)])
def test_matches_float64(M, n, simd):
    gu = gates(M, n, np.random.default_rng(M * 7 + n))
    out = np.full((M, n), np.nan, np.float32)
    _core.silu_mul(gu, out, M, simd)
    ref = reference(gu, n)
    assert np.isfinite(out).all()
    err = np.abs(out - ref)
    bound = SILU_RTOL * np.abs(ref) + SILU_ATOL
    assert (err <= bound).all(), f"worst err/bound {np.max(err / bound):.3g}"


@pytest.mark.parametrize("simd", SIMD, ids=["scalar", "simd"])
def test_dense_grid(simd):
    """Every range-reduction interval of the exp: 400k gates evenly over [-87, 87], up = 1."""
    n = 400_000
    g = np.linspace(-87, 87, n).astype(np.float32)
    gu = np.concatenate([g, np.ones(n, np.float32)])[None]
    out = np.empty((1, n), np.float32)
    _core.silu_mul(gu, out, 1, simd)
    ref = reference(gu, n)
    err, bound = np.abs(out - ref), SILU_RTOL * np.abs(ref) + SILU_ATOL
    assert (err <= bound).all(), f"worst err/bound {np.max(err / bound):.3g}"


@pytest.mark.parametrize("simd", SIMD, ids=["scalar", "simd"])
def test_rows_independent_of_batch_and_threads(simd):
    M, n = 70, 1000
    gu = gates(M, n, np.random.default_rng(1))
    outs = []
    k = lowbit.get_num_threads()
    try:
        for t in (1, 2):
            lowbit.set_num_threads(t)
            out = np.empty((M, n), np.float32)
            _core.silu_mul(gu, out, M, simd)
            outs.append(out)
    finally:
        lowbit.set_num_threads(k)
    assert np.array_equal(outs[0], outs[1])
    for r in (0, 33, 69):
        one = np.empty((1, n), np.float32)
        _core.silu_mul(np.ascontiguousarray(gu[r: r + 1]), one, 1, simd)
        assert np.array_equal(one[0], outs[0][r])


def test_bad_calls():
    gu = np.ones((2, 16), np.float32)
    out = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="M >= 1"):
        _core.silu_mul(gu, out, 0)
    with pytest.raises(ValueError, match="not 3 rows"):
        _core.silu_mul(gu, out, 3)
    with pytest.raises(ValueError, match="gate|up"):
        _core.silu_mul(gu[:1], out, 2)
    with pytest.raises(TypeError, match="writable"):
        ro = out.copy()
        ro.flags.writeable = False
        _core.silu_mul(gu, ro, 2)
    assert not out.any()
