"""Every micro-kernel this CPU can run against the scalar reference of the same layout (and an int64 numpy oracle):
exact integer sums with unit scales, named tolerances with real scales, edge shapes and sub-rectangles."""
import numpy as np
import pytest

from lowbit.ops import KERNELS

from kernel_cases import SENTINEL, Acts, Weights, abs_bound, int_reference, kernel_params, run, scalar_twin

# With real fp16 scales the kernels may reorder/fuse (FMA) the per-block float products: allow this much
# relative to Σ|terms| (a few fp32 ulps per block accumulation, well under one quantization step).
SCALED_RTOL = 2e-6

KS = [32, 64, 96, 4096, 14336]


def n_values(R):
    return sorted({n for n in (1, R - 1, R, R + 1, 2 * R + 3, 3 * R + 1) if n >= 1})


def shape_cases():
    """(K, N-rule) pairs; K=14336 only with two N so the suite stays fast."""
    cases = []
    for K in KS:
        for which in range(6):
            if K == 14336 and which not in (3, 5):
                continue
            cases.append(pytest.param(K, which, id=f"K{K}-n{which}"))
    return cases


def pick_n(R, which):
    return [1, R - 1, R, R + 1, 2 * R + 3, 3 * R + 1][which]


def check_untouched(out, N, n0, n1, rows):
    """Cells outside [n0, min(n1, N)) of each row, and the row padding, keep the sentinel."""
    mask = np.ones(out.shape, bool)
    mask[:rows, n0:min(n1, N)] = False
    assert (out[mask] == SENTINEL).all(), "kernel wrote outside its column range or past N"


@pytest.mark.parametrize("K,which", shape_cases())
@pytest.mark.parametrize("k", kernel_params())
def test_exact_integer_sums(k, K, which):
    R = k["R"]
    N = pick_n(R, which)
    if N < 1:
        pytest.skip(f"N=R-1=0 for R={R}")
    rng = np.random.default_rng(K * 1000 + N * 10)
    w = Weights(k, N, K, rng, unit_scales=True)
    Np = -(-N // R) * R
    for gemm in (False, True):
        a = Acts(4 if gemm else 1, K, rng, unit_scales=True, lim=127 if K <= 4096 else 40)
        got = run(k, w, a, 0, Np, gemm)
        ref = run(scalar_twin(k), w, a, 0, Np, gemm)
        exact = int_reference(w, a).astype(np.float32)
        path = "gemm" if gemm else "gemv"
        np.testing.assert_array_equal(got[:, :N], exact, err_msg=f"{k['name']} {path} vs int64 numpy")
        np.testing.assert_array_equal(ref[:, :N], exact, err_msg=f"scalar reference {path} vs int64 numpy")
        check_untouched(got, N, 0, Np, a.q.shape[0])


@pytest.mark.parametrize("gemm", [False, True], ids=["gemv", "gemm"])
@pytest.mark.parametrize("K", [32, 96, 4096])
@pytest.mark.parametrize("k", kernel_params())
def test_real_scales(k, K, gemm):
    R = k["R"]
    N = 2 * R + 3
    rng = np.random.default_rng(K + 7 * gemm)
    w = Weights(k, N, K, rng, unit_scales=False)
    a = Acts(4 if gemm else 1, K, rng, unit_scales=False)
    Np = -(-N // R) * R
    got = run(k, w, a, 0, Np, gemm)[:, :N].astype(np.float64)
    ref = run(scalar_twin(k), w, a, 0, Np, gemm)[:, :N].astype(np.float64)
    bound = SCALED_RTOL * abs_bound(w, a) + 1e-30
    exact = a.dequant() @ w.dequant().T        # float64 over the same fp16 scales
    assert (np.abs(got - ref) <= bound).all(), f"max excess {np.max(np.abs(got - ref) - bound)}"
    assert (np.abs(got - exact) <= bound).all(), f"max excess vs float64 {np.max(np.abs(got - exact) - bound)}"
    assert np.abs(exact).max() > 0


def sub_ranges(R, N):
    Np = -(-N // R) * R
    return [(R, Np), (0, Np - R), (R, 2 * R), (Np - R, Np), (R, Np - 1)]


@pytest.mark.parametrize("gemm", [False, True], ids=["gemv", "gemm"])
@pytest.mark.parametrize("k", kernel_params())
def test_sub_rectangles(k, gemm):
    """n0 > 0 and n1 < Np: only columns [n0, n1) ∩ [0, N) are written, each equal to the full call's value."""
    R = k["R"]
    N = 3 * R + 1
    K = 96
    rng = np.random.default_rng(5 + gemm)
    w = Weights(k, N, K, rng, unit_scales=True)
    a = Acts(4 if gemm else 1, K, rng, unit_scales=True)
    exact = int_reference(w, a).astype(np.float32)
    rows = a.q.shape[0]
    for n0, n1 in sub_ranges(R, N):
        for kern in (k, scalar_twin(k)):
            got = run(kern, w, a, n0, n1, gemm)
            hi = min(n1, N)
            np.testing.assert_array_equal(got[:, n0:hi], exact[:, n0:hi], err_msg=f"{kern['name']} [{n0},{n1})")
            check_untouched(got, N, n0, n1, rows)


@pytest.mark.parametrize("k", kernel_params())
def test_gemm_rows_match_gemv(k):
    """Each of the four gemm rows equals a gemv on that row alone, bit for bit: the activation layouts agree and
    a row's value does not depend on which path (or batch) computed it (test_linear relies on this too)."""
    R, K, N = k["R"], 128, 2 * k["R"]
    rng = np.random.default_rng(11)
    w = Weights(k, N, K, rng, unit_scales=False)
    a = Acts(4, K, rng, unit_scales=False)
    g = run(k, w, a, 0, N, gemm=True)
    for i in range(4):
        one = Acts.__new__(Acts)
        one.q, one.d, one.bsums, one.int_vals = a.q[i:i + 1], a.d[i:i + 1], a.bsums[i:i + 1], a.int_vals[i:i + 1]
        v = run(k, w, one, 0, N, gemm=False)
        np.testing.assert_array_equal(g[i, :N], v[0, :N], err_msg=f"gemm row {i} vs gemv")


@pytest.mark.parametrize("fmt", ["q4_0", "iq4_nl", "q8_0"])
def test_oracle_values_are_gguf_dequantized_codes(fmt):
    """The int64 oracle's weight values are what gguf's (ggml's) dequantizer reads from the same plain blocks."""
    from gguf import GGMLQuantizationType as T
    from gguf import quants
    k = next(k for k in KERNELS if k["format"] == fmt)
    w = Weights(k, 5, 96, np.random.default_rng(3), unit_scales=True)
    deq = quants.dequantize(w.plain.reshape(5, -1), {"q4_0": T.Q4_0, "iq4_nl": T.IQ4_NL, "q8_0": T.Q8_0}[fmt])
    np.testing.assert_array_equal(deq, w.int_vals.astype(np.float32))
