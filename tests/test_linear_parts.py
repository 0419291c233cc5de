"""linear_parts (csrc/ops/linear.c lb_linear_parts): weights that share K run as one op with their outputs side by
side, and every column is bit-identical to lowbit.linear on that weight alone, for every kernel this CPU (or qemu)
runs, over token counts that exercise GEMV rows, GEMM groups, several M tiles, both thread counts and the
per-group and multi-group GEMM paths; bad calls get clear errors. Also the model's SplitLinear (cb q/k/v or
gate/up whose tables cannot share one tensor) against its part-by-part fallback."""
import numpy as np
import pytest

import lowbit
from lowbit import _core
from lowbit.model.weights import PackedLinear, SplitLinear
from lowbit.ops import KERNELS, PackedWeight, parts_compatible

from kernel_cases import Weights, kernel_params

K = 96
MS = [0, 1, 3, 4, 5, 8, 9, 17, 70]     # 70 rows: two M tiles of GEMM groups (K=96) plus two GEMV rows


def packed(k, N, rng):
    w = Weights(k, N, K, rng, unit_scales=False)
    return PackedWeight(k["format"], N, K, k, w.data, w.aux)


def part_shapes(k):
    R = k["R"]
    return [3 * R + 1, R, 5]            # a padded last row group, an exact one, a part smaller than one group


@pytest.fixture
def restore():
    n = lowbit.get_num_threads()
    yield
    lowbit.set_num_threads(n)
    _core.set_gemm_multi(True)


@pytest.mark.parametrize("k", kernel_params())
@pytest.mark.parametrize("threads", [1, 2])
def test_parts_equal_separate_linears(k, threads, restore):
    rng = np.random.default_rng(k["index"])
    ws = [packed(k, N, rng) for N in part_shapes(k)]
    lowbit.set_num_threads(threads)
    for multi in ([True, False] if k["gemm_multi"] else [True]):
        _core.set_gemm_multi(multi)
        for M in MS:
            x = rng.standard_normal((M, K)).astype(np.float32)
            want = np.concatenate([lowbit.linear(x, w) for w in ws], axis=1)
            got = lowbit.linear_parts(x, ws)
            assert got.shape == (M, sum(w.N for w in ws))
            assert np.array_equal(got, want), f"{k['name']} M={M} threads={threads} multi={multi}"
    x1 = rng.standard_normal(K).astype(np.float32)          # 1-D activations -> 1-D output
    assert np.array_equal(lowbit.linear_parts(x1, ws), np.concatenate([lowbit.linear(x1, w) for w in ws]))


def test_mixed_formats_one_call():
    """Parts of different formats whose kernels pack activations alike share one call."""
    groups = {}
    for k in KERNELS:
        if k["runnable"]:
            groups.setdefault((k["act_B"], "avx2" in k["isa"]), {}).setdefault(k["format"], k)
    mixed = [list(g.values()) for g in groups.values() if len(g) >= 2]
    if not mixed:
        pytest.skip("no two formats on this CPU pack activations alike")
    rng = np.random.default_rng(7)
    for ks in mixed:
        ws = [packed(k, 2 * k["R"] + 3, rng) for k in ks]
        x = rng.standard_normal((9, K)).astype(np.float32)
        want = np.concatenate([lowbit.linear(x, w) for w in ws], axis=1)
        assert np.array_equal(lowbit.linear_parts(x, ws), want), [k["name"] for k in ks]


def _two_kernels(compatible):
    runnable = [k for k in KERNELS if k["runnable"]]
    for a in runnable:
        for b in runnable:
            if a is not b and parts_compatible([a, b]) == compatible:
                return a, b
    pytest.skip(f"no {'compatible' if compatible else 'incompatible'} kernel pair on this CPU")


def test_incompatible_kernels_refused():
    a, b = _two_kernels(False)
    rng = np.random.default_rng(1)
    wa, wb = packed(a, 8, rng), packed(b, 8, rng)
    x = np.ones((2, K), np.float32)
    with pytest.raises(ValueError, match="pack activations differently"):
        lowbit.linear_parts(x, [wa, wb])
    parts = ((a["index"], 8, wa.data, wa.aux, 0), (b["index"], 8, wb.data, wb.aux, 8))
    with pytest.raises(ValueError, match="pack activations differently"):
        _core.linear_parts(parts, K, x, 2, np.zeros((2, 16), np.float32), 16)


def test_bad_calls():
    k, _ = _two_kernels(True)
    rng = np.random.default_rng(2)
    w = packed(k, 8, rng)
    x = np.ones((2, K), np.float32)
    out = np.zeros((2, 16), np.float32)
    with pytest.raises(ValueError, match="1 to 8"):
        lowbit.linear_parts(x, [])
    with pytest.raises(ValueError, match="1 to 8"):
        lowbit.linear_parts(x, [w] * 9)
    with pytest.raises(TypeError, match="PackedWeight"):
        lowbit.linear_parts(x, [w, np.zeros((8, K))])
    wk = Weights(k, 8, 2 * K, rng, unit_scales=True)
    w64 = PackedWeight(k["format"], 8, 2 * K, k, wk.data, wk.aux)
    with pytest.raises(ValueError, match="share K"):
        lowbit.linear_parts(x, [w, w64])
    with pytest.raises(ValueError, match="activations have K"):
        lowbit.linear_parts(np.ones((2, K + 32), np.float32), [w, w])
    with pytest.raises(ValueError, match="out must be"):
        lowbit.linear_parts(x, [w, w], out=np.zeros((2, 15), np.float32))
    # the C entry point checks what the wrapper cannot: columns, overlaps, buffer sizes, tuple shape
    p0 = (k["index"], 8, w.data, w.aux, 0)
    with pytest.raises(ValueError, match="outside the output width"):
        _core.linear_parts((p0, (k["index"], 8, w.data, w.aux, 9)), K, x, 2, out, 16)
    with pytest.raises(ValueError, match="overlapping"):
        _core.linear_parts((p0, (k["index"], 8, w.data, w.aux, 4)), K, x, 2, out, 16)
    with pytest.raises(ValueError, match="output has"):
        _core.linear_parts((p0, (k["index"], 8, w.data, w.aux, 8)), K, x, 2, out[:1], 16)
    with pytest.raises(ValueError, match="packed weights has"):
        _core.linear_parts(((k["index"], 8, w.data[:-1], w.aux, 0),), K, x, 2, out, 16)
    with pytest.raises(ValueError, match="activations has"):
        _core.linear_parts((p0,), K, x[:1], 2, out, 16)
    with pytest.raises(TypeError, match="each part is"):
        _core.linear_parts(((k["index"], 8),), K, x, 2, out, 16)
    with pytest.raises(ValueError, match="bad output width"):
        _core.linear_parts((p0,), K, x, 2, out, 0)
    with pytest.raises(ValueError, match="no kernel"):
        _core.linear_parts(((10 ** 6, 8, w.data, w.aux, 0),), K, x, 2, out, 16)
    if k["format"] in ("cb4", "cb2"):
        with pytest.raises(ValueError, match="codebook tables"):
            _core.linear_parts(((k["index"], 8, w.data, None, 0),), K, x, 2, out, 16)
    assert not out.any(), "a refused call wrote output"


@pytest.mark.parametrize("fmt", ["cb4", "cb2", "q4_0"])
def test_split_linear_one_op_matches_fallback(fmt):
    """The model's SplitLinear in one linear_parts call gives what running its parts one by one gives."""
    k = lowbit.ops.kernel_for(fmt)
    rng = np.random.default_rng(11)
    parts = [PackedLinear(packed(k, N, rng)) for N in (64, 24, 24)]
    one = SplitLinear(parts)
    assert one._one is not None, "compatible parts should run as one op"
    apart = SplitLinear(parts)
    apart._one = None
    for M in (1, 4, 7, 70):
        x = rng.standard_normal((M, K)).astype(np.float32)
        a, b = np.zeros((M, one.N), np.float32), np.full((M, one.N), np.nan, np.float32)
        assert np.array_equal(one(x, b), apart(x, a)), f"{fmt} M={M}"
