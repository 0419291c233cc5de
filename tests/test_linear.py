"""lowbit.linear against float64 numpy: tight on the dequantized operands, loose against the float weights;
thread counts agree bit for bit; LOWBIT_DISABLE_ISA=avx2 selects the scalar kernels."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import lowbit
from lowbit.formats import get_format, q8_0
from lowbit.formats.repack import deinterleave
from lowbit.ops import KERNELS, kernel_for

from kernel_cases import Weights, kernel_params

# fp32 accumulation of K/32 scaled block sums (in any order, FMA or not), relative to Σ|x_q|·|w_q|.
TIGHT_RTOL = 1e-5
# Relative Frobenius error of y against the unquantized float product, per weight format (4-bit codes on
# gaussian weights are ~10% off per weight; Q8_0 activations add ~1%). Measured over MS with N=8R+5, K=256:
# q4_0 0.077-0.092, iq4_nl 0.065-0.092, q8_0 0.006-0.0094.
QUANT_RTOL = {"q4_0": 0.13, "iq4_nl": 0.13, "q8_0": 0.015}

MS = [1, 2, 3, 4, 5, 7, 8, 16, 17]


def dequant_weight(pw) -> np.ndarray:
    f = get_format(pw.fmt)
    k = pw.kernel
    blocks = deinterleave(pw.data, pw.fmt, pw.N, pw.K, k["R"], k["B"])
    return f.dequantize(blocks.reshape(-1, f.block_bytes)).reshape(pw.N, pw.K).astype(np.float64)


def dequant_acts(x) -> np.ndarray:
    x = np.atleast_2d(x)
    return q8_0.dequantize_blocks(q8_0.quantize_blocks(x.reshape(-1, 32))).reshape(x.shape).astype(np.float64)


def check_tight(y, x, pw):
    wq, xq = dequant_weight(pw), dequant_acts(x)
    ref = xq @ wq.T
    bound = TIGHT_RTOL * (np.abs(xq) @ np.abs(wq).T) + 1e-30
    err = np.abs(np.atleast_2d(y).astype(np.float64) - ref)
    assert (err <= bound).all(), f"{pw.kernel['name']}: worst err/bound {np.max(err / bound):.3g}"
    return ref


def data(M, N, K, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((M, K)).astype(np.float32),
            (rng.standard_normal((N, K)) * 0.05).astype(np.float32))


def quantizable(k):
    return get_format(k["format"]).quantize is not None


@pytest.fixture
def threads():
    n = lowbit.get_num_threads()
    yield
    lowbit.set_num_threads(n)


@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("k", kernel_params())
def test_linear_matches_float64(k, M):
    if not quantizable(k):
        pytest.skip(f"{k['format']} has no direct quantizer (tables are learned)")
    N, K = 8 * k["R"] + 5, 256          # enough outputs for a stable error ratio
    x, w = data(M, N, K, M)
    pw = lowbit.pack_weight(w, k["format"], kernel=k["name"])
    y = lowbit.linear(x, pw)
    assert y.shape == (M, N) and y.dtype == np.float32
    check_tight(y, x, pw)
    rel = np.linalg.norm(y - x.astype(np.float64) @ w.T.astype(np.float64)) / np.linalg.norm(x @ w.T)
    assert rel < QUANT_RTOL[k["format"]], f"quantization error {rel:.3g}"


@pytest.mark.parametrize("M", [1, 3, 4, 17])
@pytest.mark.parametrize("k", kernel_params())
def test_linear_packed_from_codes(k, M):
    """Any format, codebooks included: weights built from random codes (tests/kernel_cases.py), through the
    threaded driver, against float64 on the same dequantized operands."""
    N, K = 2 * k["R"] + 3, 160
    rng = np.random.default_rng(M + 40)
    w = Weights(k, N, K, rng, unit_scales=False)
    aux = None if w.aux is None else w.aux.reshape(-1)
    pw = lowbit.PackedWeight(k["format"], N, K, k, w.data, aux)
    x = rng.standard_normal((M, K)).astype(np.float32)
    y = lowbit.linear(x, pw)
    wq, xq = w.dequant(), dequant_acts(x)
    bound = TIGHT_RTOL * (np.abs(xq) @ np.abs(wq).T) + 1e-30
    assert (np.abs(y - xq @ wq.T) <= bound).all()


@pytest.mark.parametrize("fmt", ["q4_0", "iq4_nl", "q8_0"])
def test_linear_1d_and_out(fmt):
    x, w = data(1, 19, 64, 3)
    pw = lowbit.pack_weight(w, fmt)
    y1 = lowbit.linear(x[0], pw)
    assert y1.shape == (19,)
    out = np.full((1, 19), np.nan, np.float32)
    assert lowbit.linear(x, pw, out=out) is out
    np.testing.assert_array_equal(out[0], y1)
    check_tight(y1, x[0], pw)


@pytest.mark.parametrize("fmt", ["q4_0", "iq4_nl", "q8_0"])
def test_thread_counts_identical(fmt, threads):
    """Columns are split across threads but each one is computed the same way: results are bit-identical."""
    _, w = data(1, 301, 512, 100)
    pw = lowbit.pack_weight(w, fmt)
    xs = [data(M, 1, 512, 100 + M)[0] for M in (1, 5, 17, 70)]    # 70 > one 64-row M tile
    results = {}
    for n in (1, 2, 3):
        lowbit.set_num_threads(n)
        assert lowbit.get_num_threads() == n
        results[n] = [lowbit.linear(x, pw) for x in xs]
    for n in (2, 3):
        for x, a, b in zip(xs, results[1], results[n]):
            np.testing.assert_array_equal(a, b, err_msg=f"{fmt} M={len(x)}: 1 vs {n} threads")
    for x, y in zip(xs, results[1]):
        check_tight(y, x, pw)


@pytest.mark.parametrize("fmt", ["q4_0", "iq4_nl", "q8_0"])
def test_large_k_panels(fmt, threads):
    """K=8192 splits each column chunk into several GEMM panels (the last one partial, N=301 leaves a padded
    row group): every thread count gives the same bits, each row equals that row run alone (GEMV)."""
    x, w = data(13, 301, 8192, 21)          # 3 token groups of 4 + 1 GEMV row
    pw = lowbit.pack_weight(w, fmt)
    results = {}
    for n in (1, 2, 3):
        lowbit.set_num_threads(n)
        results[n] = lowbit.linear(x, pw)
    for n in (2, 3):
        np.testing.assert_array_equal(results[1], results[n], err_msg=f"{fmt}: 1 vs {n} threads")
    for i in (0, 5, 12):
        np.testing.assert_array_equal(results[1][i], lowbit.linear(x[i], pw), err_msg=f"{fmt} row {i}")
    check_tight(results[1], x, pw)


def test_large_k_decode():
    x, w = data(1, 64, 14336, 8)
    pw = lowbit.pack_weight(w, "q4_0")
    check_tight(lowbit.linear(x, pw), x, pw)


_SUB = r"""
import json, sys
import numpy as np
import lowbit
from lowbit.ops import kernel_for
d = np.load(sys.argv[1])
names = {f: kernel_for(f)["name"] for f in ("q4_0", "iq4_nl", "q8_0")}
isas = {f: kernel_for(f)["isa"] for f in names}
ys = {f: lowbit.linear(d["x"], lowbit.pack_weight(d["w"], f)) for f in names}
np.savez(sys.argv[2], **ys)
print(json.dumps({"names": names, "isas": isas}))
"""


def test_disable_isa_selects_scalar(tmp_path):
    if not any(k["isa"] and k["usable"] for k in KERNELS):
        pytest.skip("no SIMD kernel usable here: nothing to disable")
    x, w = data(6, 45, 320, 21)
    np.savez(tmp_path / "in.npz", x=x, w=w)
    env = dict(os.environ, LOWBIT_DISABLE_ISA="avx2,neon")
    r = subprocess.run([sys.executable, "-c", _SUB, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    ys = np.load(tmp_path / "out.npz")
    for fmt, name in info["names"].items():
        assert name.endswith("__scalar") and info["isas"][fmt] == [], (fmt, name)
        assert kernel_for(fmt)["name"] != name or not kernel_for(fmt)["isa"]
        pw = lowbit.pack_weight(w, fmt, kernel=name)
        check_tight(ys[fmt], x, pw)
        # and the SIMD path in this process agrees with the scalar one within the same tolerance
        check_tight(lowbit.linear(x, lowbit.pack_weight(w, fmt)), x, lowbit.pack_weight(w, fmt))


@pytest.mark.parametrize("k", kernel_params())
def test_rows_independent_of_batch(k):
    """Row i of a batch equals the same row run alone, bit for bit (gemm rows == gemv): batched serving must not
    change greedy outputs with the batch composition."""
    N, K = 3 * k["R"] + 1, 512
    rng = np.random.default_rng(77)
    w = Weights(k, N, K, rng, unit_scales=False)
    aux = None if w.aux is None else w.aux.reshape(-1)
    pw = lowbit.PackedWeight(k["format"], N, K, k, w.data, aux)
    x = rng.standard_normal((9, K)).astype(np.float32)
    batch = lowbit.linear(x, pw)
    for i in range(9):
        np.testing.assert_array_equal(batch[i], lowbit.linear(x[i], pw), err_msg=f"row {i} of 9")


def test_concurrent_callers_match_sequential(threads):
    """Python threads calling linear at once (the GIL is released) get the same bits as one at a time."""
    import concurrent.futures as cf
    lowbit.set_num_threads(2)
    _, w = data(1, 77, 256, 5)
    pws = [lowbit.pack_weight(w, f) for f in ("q4_0", "q8_0")]
    xs = [data(M, 1, 256, 200 + M)[0] for M in (1, 3, 4, 9, 1, 2, 17, 5)]
    seq = [lowbit.linear(x, pws[i % 2]) for i, x in enumerate(xs)]
    with cf.ThreadPoolExecutor(8) as ex:
        for _ in range(5):
            par = list(ex.map(lambda ix: lowbit.linear(ix[1], pws[ix[0] % 2]), enumerate(xs)))
            for i, (a, b) in enumerate(zip(seq, par)):
                np.testing.assert_array_equal(a, b, err_msg=f"call {i}")
