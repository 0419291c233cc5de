"""Bad input raises a Python exception that names the problem; nothing crashes. The raw _core calls run in a
subprocess so a crash would show up as a dead child, not a dead test session."""
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import lowbit
from lowbit.ops import KERNELS, kernel_for


@pytest.fixture(scope="module")
def pw():
    w = np.random.default_rng(0).standard_normal((13, 64)).astype(np.float32)
    return lowbit.pack_weight(w, "q4_0")


X_CASES = [
    (lambda: np.zeros((2, 64), np.float64), TypeError, "float32"),
    (lambda: np.zeros((2, 64), np.int32), TypeError, "float32"),
    (lambda: [[0.0] * 64], TypeError, "numpy array"),
    (lambda: np.zeros((2, 2, 64), np.float32), ValueError, "2-D"),
    (lambda: np.zeros((), np.float32), ValueError, "1-D"),
    (lambda: np.zeros((2, 96), np.float32), ValueError, "K=96"),
    (lambda: np.zeros((2, 128), np.float32)[:, ::2], ValueError, "C-contiguous"),
    (lambda: np.zeros((64, 2), np.float32).T, ValueError, "C-contiguous"),
]


@pytest.mark.parametrize("make,exc,msg", X_CASES, ids=["f64", "int", "list", "rank3", "rank0", "wrongK",
                                                        "strided", "transposed"])
def test_linear_bad_activations(pw, make, exc, msg):
    with pytest.raises(exc, match=msg):
        lowbit.linear(make(), pw)


def test_linear_bad_out(pw):
    x = np.zeros((2, 64), np.float32)
    for out in (np.zeros((2, 12), np.float32), np.zeros((2, 13), np.float64), np.zeros((13, 2), np.float32).T):
        with pytest.raises(ValueError, match="out must be"):
            lowbit.linear(x, pw, out=out)


def test_linear_not_packed():
    with pytest.raises(TypeError, match="PackedWeight"):
        lowbit.linear(np.zeros(64, np.float32), np.zeros((13, 64), np.float32))


def test_mismatched_packed_weight(pw):
    x = np.zeros((1, 64), np.float32)
    with pytest.raises(ValueError, match="uint8 bytes"):                  # data too short
        lowbit.linear(x, replace(pw, data=pw.data[:-1]))
    with pytest.raises(ValueError, match="uint8 bytes"):                  # N says more rows than stored
        lowbit.linear(x, replace(pw, N=pw.N + 8))
    with pytest.raises(ValueError, match="uint8 bytes"):                  # wrong dtype
        lowbit.linear(x, replace(pw, data=pw.data.view(np.int8)))
    q8 = kernel_for("q8_0")
    with pytest.raises(ValueError, match="carries kernel"):               # kernel of another format
        lowbit.linear(x, replace(pw, kernel=q8))


def test_pack_weight_errors():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="multiple of 32"):
        lowbit.pack_weight(rng.standard_normal((4, 48)).astype(np.float32))
    with pytest.raises(ValueError, match="multiple of 32"):
        lowbit.pack_weight(np.zeros((4, 0), np.float32))
    with pytest.raises(ValueError, match="N=0"):
        lowbit.pack_weight(np.zeros((0, 64), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        lowbit.pack_weight(np.zeros(64, np.float32))
    with pytest.raises(TypeError, match="floating"):
        lowbit.pack_weight(np.zeros((4, 64), np.int32))
    with pytest.raises(ValueError, match="unknown weight format"):
        lowbit.pack_weight(np.zeros((4, 64), np.float32), "q3_x")
    with pytest.raises(ValueError, match="unknown kernel"):
        lowbit.pack_weight(np.zeros((4, 64), np.float32), "q4_0", kernel="nope")
    other = next(k["name"] for k in KERNELS if k["format"] == "q8_0" and k["runnable"])
    with pytest.raises(ValueError, match="not q4_0"):
        lowbit.pack_weight(np.zeros((4, 64), np.float32), "q4_0", kernel=other)


def test_set_num_threads_bad():
    n = lowbit.get_num_threads()
    for bad in (0, -1, 1.5, "2", None):
        with pytest.raises(ValueError, match="thread count"):
            lowbit.set_num_threads(bad)
    assert lowbit.get_num_threads() == n
    from lowbit import _core
    with pytest.raises(ValueError, match="out of range"):
        _core.set_num_threads(0)
    assert lowbit.get_num_threads() == n


# Raw _core calls with broken arguments. Each line: (case name, expected message fragment, call).
_CORE_SCRIPT = r"""
import json
import numpy as np
from lowbit import _core
from lowbit.ops import KERNELS
k = next(k for k in KERNELS if k["format"] == "q4_0" and k["runnable"])
i, R = k["index"], k["R"]
K, N = 64, 2 * R + 1
nb = K // 32
Np = 3 * R
W = np.zeros(3 * nb * k["sb_bytes"], np.uint8)
A1, B1 = np.zeros(nb * 34, np.uint8), np.zeros(nb, np.int16)
A4, B4 = np.zeros(nb * 136, np.uint8), np.zeros(nb * 4, np.int16)
o1, o4 = np.zeros(N, np.float32), np.zeros(4 * N, np.float32)
x = np.zeros((3, K), np.float32)
cases = {
  "gemv short W":       ("packed weights", lambda: _core.gemv(i, K, W[:-1], None, A1, B1, o1, 0, Np, N)),
  "gemv short A":       ("packed activations", lambda: _core.gemv(i, K, W, None, A1[:-1], B1, o1, 0, Np, N)),
  "gemv short bsums":   ("block sums", lambda: _core.gemv(i, K, W, None, A1, B1[:-1], o1, 0, Np, N)),
  "gemv short out":     ("output", lambda: _core.gemv(i, K, W, None, A1, B1, o1[:-1], 0, Np, N)),
  "gemv readonly out":  ("writable", lambda: _core.gemv(i, K, W, None, A1, B1, bytes(4 * N), 0, Np, N)),
  "gemv W not buffer":  ("packed weights", lambda: _core.gemv(i, K, None, None, A1, B1, o1, 0, Np, N)),
  "gemv n0 unaligned":  ("column range", lambda: _core.gemv(i, K, W, None, A1, B1, o1, 1, Np, N)),
  "gemv n0 negative":   ("column range", lambda: _core.gemv(i, K, W, None, A1, B1, o1, -R, Np, N)),
  "gemv n1 > Np":       ("column range", lambda: _core.gemv(i, K, W, None, A1, B1, o1, 0, Np + R, N)),
  "gemv n1 <= n0":      ("column range", lambda: _core.gemv(i, K, W, None, A1, B1, o1, R, R, N)),
  "gemv K not 32k":     ("multiple of 32", lambda: _core.gemv(i, 48, W, None, A1, B1, o1, 0, Np, N)),
  "gemv N = 0":         ("N=0", lambda: _core.gemv(i, K, W, None, A1, B1, o1, 0, Np, 0)),
  "gemv kernel -1":     ("no kernel", lambda: _core.gemv(-1, K, W, None, A1, B1, o1, 0, Np, N)),
  "gemv kernel 9999":   ("no kernel", lambda: _core.gemv(9999, K, W, None, A1, B1, o1, 0, Np, N)),
  "gemm short A4":      ("packed activations", lambda: _core.gemm(i, K, W, None, A4[:-1], B4, o4, N, 0, Np, N)),
  "gemm short bsums":   ("block sums", lambda: _core.gemm(i, K, W, None, A4, B4[:-1], o4, N, 0, Np, N)),
  "gemm short out":     ("output", lambda: _core.gemm(i, K, W, None, A4, B4, o4[:-1], N, 0, Np, N)),
  "gemm ldo < N":       ("ldo", lambda: _core.gemm(i, K, W, None, A4, B4, o4, N - 1, 0, Np, N)),
  "gemm big ldo":       ("output", lambda: _core.gemm(i, K, W, None, A4, B4, o4, 2 * N, 0, Np, N)),
  "linear short W":     ("packed weights", lambda: _core.linear(i, K, N, W[:-1], None, x, 3, np.zeros(3 * N, np.float32))),
  "linear short x":     ("activations", lambda: _core.linear(i, K, N, W, None, x[:2], 3, np.zeros(3 * N, np.float32))),
  "linear short out":   ("output", lambda: _core.linear(i, K, N, W, None, x, 3, np.zeros(3 * N - 1, np.float32))),
  "linear M < 0":       ("M=-1", lambda: _core.linear(i, K, N, W, None, x, -1, np.zeros(3 * N, np.float32))),
  "linear K = 0":       ("multiple of 32", lambda: _core.linear(i, 0, N, W, None, x, 3, np.zeros(3 * N, np.float32))),
  "linear bad kernel":  ("no kernel", lambda: _core.linear(len(KERNELS), K, N, W, None, x, 3, np.zeros(3 * N, np.float32))),
  "pack short scratch": ("activation scratch", lambda: _core.pack_activations(i, x, 3, K, np.zeros(_core.act_bytes(3, K) - 1, np.uint8))),
  "pack short x":       ("activations", lambda: _core.pack_activations(i, x[:1], 3, K, np.zeros(_core.act_bytes(3, K), np.uint8))),
  "act_bytes bad K":    ("multiple of 32", lambda: _core.act_bytes(1, 33)),
  "selected bad fmt":   ("unknown format", lambda: _core.selected("q9")),
  "threads 0":          ("out of range", lambda: _core.set_num_threads(0)),
  "threads 100000":     ("out of range", lambda: _core.set_num_threads(100000)),
}
cb = [k for k in KERNELS if k["format"] in ("cb4", "cb2") and k["runnable"]]
if cb:
    c = cb[0]
    Wc = np.zeros(-(-N // c["R"]) * nb * c["sb_bytes"], np.uint8)
    cases["cb gemv no tables"] = ("codebook tables", lambda: _core.gemv(c["index"], K, Wc, None, A1, B1, o1, 0, c["R"], N))
    cases["cb linear no tables"] = ("codebook tables", lambda: _core.linear(c["index"], K, N, Wc, None, x, 3, np.zeros(3 * N, np.float32)))
res = {}
for name, (frag, call) in cases.items():
    try:
        call()
        res[name] = [frag, None, "no exception"]
    except Exception as e:
        res[name] = [frag, type(e).__name__, str(e)]
print(json.dumps(res))
"""


def test_core_bad_calls_raise_and_survive():
    r = subprocess.run([sys.executable, "-c", _CORE_SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"interpreter died (rc {r.returncode}): {r.stderr[-2000:]}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(res) >= 30
    bad = {name: v for name, v in res.items() if v[1] not in ("ValueError", "TypeError", "RuntimeError")
           or v[0] not in v[2]}
    assert not bad, bad


@pytest.mark.parametrize("M", [1, 5])
def test_non_finite_activations_give_nan_rows_not_garbage(M):
    """NaN/inf in a row's block make that row's outputs NaN (no undefined float->int8 casts); other rows are intact."""
    rng = np.random.default_rng(7)
    w = lowbit.pack_weight(rng.standard_normal((16, 64)).astype(np.float32))
    x = rng.standard_normal((M, 64)).astype(np.float32)
    clean = lowbit.linear(x.copy(), w)
    x[0, 3] = np.nan if M == 1 else np.inf
    y = lowbit.linear(x, w)
    assert np.isnan(y[0] if M > 1 else y).all()
    if M > 1:
        np.testing.assert_array_equal(y[1:], clean[1:])
