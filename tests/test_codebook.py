"""Codebook formats cb4/cb2: byte layout, encoding, learning quality, the kernels' exact sums on the paths the
generic kernel tests do not reach (ids >= 4, uniform ids, cb2 tables inside/outside [-64, 63]), bad input."""
import numpy as np
import pytest

import lowbit
from lowbit import _core
from lowbit.formats import cb, get_format
from lowbit.formats.repack import interleave
from lowbit.ops import KERNELS, PackedWeight
from lowbit.quantize import quantize_tensor
from lowbit.quantize.encode import Tables, encode

from kernel_cases import Acts, int_reference, run

CB_KERNELS = [pytest.param(k, id=k["name"], marks=[] if k["runnable"] else
                           pytest.mark.skip(reason=f"{k['name']} needs {'+'.join(k['isa'])}"))
              for k in KERNELS if k["format"] in ("cb4", "cb2")]


def heavy_tailed(N, K, seed):
    return (np.random.default_rng(seed).standard_t(5, size=(N, K)) * 0.02).astype(np.float32)


def rel_err(a, b):
    return float(((a - b) ** 2).sum() / (b ** 2).sum())


# ---- layout -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["cb4", "cb2"])
def test_block_bytes_follow_the_spec(fmt):
    rng = np.random.default_rng(1)
    E = cb.ENTRIES[fmt]
    idx = rng.integers(0, E, (5, 32)).astype(np.uint8)
    ids = np.array([0, 1, 7, 14, 15])
    blocks = cb.make_blocks(np.full(5, 0.5), ids, idx, fmt)
    assert blocks.shape == (5, get_format(fmt).block_bytes) and get_format(fmt).bpw == {"cb4": 4.5, "cb2": 2.5}[fmt]
    h = blocks[:, :2].copy().view("<u2")[:, 0]       # scale word: fp16 0.5 = 0x3800 with the id in bits 0-3
    np.testing.assert_array_equal(h, 0x3800 | ids)
    code = blocks[:, 2:]
    for j in range(code.shape[1]):
        if fmt == "cb4":   # byte j: element j low nibble, j+16 high
            assert (code[:, j] == idx[:, j] | idx[:, j + 16] << 4).all()
        else:              # byte j: elements j, j+8, j+16, j+24 in bits 0-1, 2-3, 4-5, 6-7
            assert (code[:, j] == idx[:, j] | idx[:, j + 8] << 2 | idx[:, j + 16] << 4 | idx[:, j + 24] << 6).all()
    tables = rng.integers(*cb.TABLE_RANGE[fmt], (16, E))
    deq = cb.dequantize_blocks(blocks, tables, fmt)
    np.testing.assert_array_equal(deq, 0.5 * tables[ids[:, None], idx])
    with pytest.raises(ValueError, match="0..15"):
        cb.make_blocks(np.ones(1), [16], idx[:1], fmt)


def test_scales_round_to_the_masked_grid():
    """Stored scales are fp16 with the low 4 mantissa bits free (they hold the id): the nearest such value."""
    rng = np.random.default_rng(11)
    d = (rng.standard_normal(20000) * np.exp(rng.uniform(-12, 3, 20000))).astype(np.float32)
    r = cb.round_scale(d)
    h = r.astype(np.float16).view(np.uint16)
    assert not (h & 0xF).any() and (r.astype(np.float16).astype(np.float32) == r).all()
    # every masked-grid fp16 value: the rounding is to the nearest of them
    grid = (np.arange(0, 0x7C00, 16, dtype=np.uint16)).view(np.float16).astype(np.float64)
    grid = np.concatenate([-grid[::-1], grid])
    i = np.clip(np.searchsorted(grid, d), 1, len(grid) - 1)
    best = np.minimum(np.abs(grid[i] - d), np.abs(grid[i - 1] - d))
    np.testing.assert_array_equal(np.abs(r - d.astype(np.float64)), best)


@pytest.mark.parametrize("fmt", ["cb4", "cb2"])
def test_encode_recovers_exact_codebook_groups(fmt):
    """Groups built as d * table[c][idx] (with the extreme entry present) are encoded losslessly, codebook c."""
    rng = np.random.default_rng(2)
    E = cb.ENTRIES[fmt]
    lo, hi = cb.TABLE_RANGE[fmt]
    tables = np.stack([np.sort(rng.choice(np.arange(lo, hi + 1), E, replace=False)) for _ in range(6)])
    n = 600
    ids = rng.integers(0, 6, n)
    idx = rng.integers(0, E, (n, 32))
    idx[:, 0] = np.abs(tables[ids]).argmax(1)          # the extreme entry anchors the start scale
    d = cb.round_scale(rng.uniform(0.5, 2, n)) * rng.choice([-1, 1], n).astype(np.float32)
    x = d[:, None] * tables[ids[:, None], idx]
    dq, idq, iq, err = encode(x, Tables(tables, fmt))
    assert (err <= 1e-6 * (x ** 2).sum(1)).all()
    np.testing.assert_array_equal(dq[:, None] * tables[idq[:, None], iq], x)


# ---- learning -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights():
    return heavy_tailed(256, 512, 3)


def _baseline(w, fmt):
    f = get_format(fmt)
    return rel_err(f.dequantize(f.quantize(w.reshape(-1, 32))).reshape(w.shape), w)


def test_cb4_beats_iq4_nl_and_more_codebooks_help(weights):
    """Measured on this data: q4_0 0.0116, iq4_nl 0.0079, cb4 C=1 0.0076, C=4 0.0058, C=16 0.0055."""
    iq4 = _baseline(weights, "iq4_nl")
    e1 = rel_err(quantize_tensor(weights, "cb4", 1).dequantize(), weights)
    e4 = rel_err(quantize_tensor(weights, "cb4", 4).dequantize(), weights)
    assert e1 < 1.05 * iq4, (e1, iq4)           # one learned codebook ~ the fixed non-uniform one
    assert e4 < 0.85 * iq4, (e4, iq4)
    assert e4 < e1


def test_cb2_error_and_bpw(weights):
    ct = quantize_tensor(weights, "cb2", 4)
    assert ct.blocks.shape == (256, 16 * 10) and ct.tables.shape == (4, 16)
    assert ct.bpw == pytest.approx((256 * 16 * 10 + 4 * 16) * 8 / (256 * 512))
    lo, hi = cb.TABLE_RANGE["cb2"]
    assert ct.tables[:, :4].min() >= lo and ct.tables[:, :4].max() <= hi and not ct.tables[:, 4:].any()
    assert rel_err(ct.dequantize(), weights) < 0.13       # measured 0.107 (Student-t(5) weights)


def test_importance_weighting_shifts_error(weights):
    """Hot columns inside every group pull the per-group scale and assignment towards themselves."""
    imp = np.ones(512, np.float32)
    imp[::8] = 100.0
    plain = quantize_tensor(weights, "cb4", 4).dequantize()
    weighted = quantize_tensor(weights, "cb4", 4, importance=imp).dequantize()
    hot = slice(0, None, 8)
    assert rel_err(weighted[:, hot], weights[:, hot]) < 0.9 * rel_err(plain[:, hot], weights[:, hot])


def test_threads_do_not_change_the_result(weights):
    a = quantize_tensor(weights, "cb4", 8, threads=1)
    b = quantize_tensor(weights, "cb4", 8, threads=2)
    np.testing.assert_array_equal(a.tables, b.tables)
    np.testing.assert_array_equal(a.blocks, b.blocks)


@pytest.mark.parametrize("k", CB_KERNELS)
@pytest.mark.parametrize("C", [1, 3, 16])
def test_learned_tensor_through_linear(k, C):
    """End to end: learned tables + blocks -> packed -> linear == float64 of the dequantized operands."""
    w = heavy_tailed(21, 96, 4)
    ct = quantize_tensor(w, k["format"], C)
    pw = ct.pack(kernel=k["name"])
    x = np.random.default_rng(5).standard_normal((5, 96)).astype(np.float32)
    y = lowbit.linear(x, pw)
    xq = get_format("q8_0").dequantize(get_format("q8_0").quantize(x.reshape(-1, 32))).reshape(x.shape)
    wq = ct.dequantize().astype(np.float64)
    ref = xq.astype(np.float64) @ wq.T
    bound = 1e-5 * (np.abs(xq) @ np.abs(wq).T) + 1e-30
    assert (np.abs(y - ref) <= bound).all()


# ---- kernel paths with exact integer sums -----------------------------------------------------------------

class _W:
    """Unit-scale packed weights with chosen ids and tables; int_vals for the int64 oracle."""

    def __init__(self, k, N, K, tables, ids, rng):
        fmt = k["format"]
        E = cb.ENTRIES[fmt]
        nb = K // 32
        idx = rng.integers(0, E, (N * nb, 32))
        blocks = cb.make_blocks(np.ones(N * nb), ids.reshape(-1), idx, fmt).reshape(N, -1)
        self.N, self.K, self.d = N, K, np.ones((N, nb), np.float16)
        self.aux = cb.prepare_aux(blocks, tables, fmt)
        self.data = interleave(blocks, fmt, N, K, k["R"], k["B"]).reshape(-1)
        self.int_vals = self.aux.astype(np.int64)[ids.reshape(-1)[:, None], idx].reshape(N, K)


def _id_cases(fmt, N, nb, rng):
    lo, hi = cb.TABLE_RANGE[fmt]
    E = cb.ENTRIES[fmt]
    yield "C=1", rng.integers(lo, hi + 1, (1, E)), np.zeros((N, nb), np.uint8)
    yield "C=16 full int8", rng.integers(-127, 128, (16, 16)), rng.integers(0, 16, (N, nb))
    t = rng.integers(-127, 128, (16, 16))
    yield "ids<4 in some blocks", t, np.where(rng.random((N, nb)) < 0.5, rng.integers(0, 4, (N, nb)),
                                               rng.integers(0, 16, (N, nb)))
    yield "C=4 learner range", rng.integers(lo, hi + 1, (4, E)), rng.integers(0, 4, (N, nb))
    yield "C=4 full int8", rng.integers(-127, 128, (4, 16)), rng.integers(0, 4, (N, nb))
    same = np.repeat(rng.integers(0, 8, (N // 8 + 1, nb)), 8, axis=0)[:N]
    yield "row groups share ids", rng.integers(-127, 128, (8, 16)), same
    # 7-bit tables take the AVX2 unsigned path (entries + 64); one entry outside [-64, 63] must not
    ids16 = rng.integers(0, 16, (N, nb))
    yield "C=16 tables in [-64, 63]", rng.integers(-64, 64, (16, 16)), ids16
    yield "C=16 tables at -64 / 63 only", rng.choice([-64, 63], (16, 16)), ids16
    t7 = rng.integers(-64, 64, (16, 16))
    t7[15, 3] = 64
    yield "one entry 64 in an unused table", t7, rng.integers(0, 15, (N, nb))
    t7 = rng.integers(-64, 64, (16, 16))
    t7[0, 0] = -65
    yield "one entry -65", t7, ids16
    # cb2 tables in [-16, 16] take the narrow path (entries + 16, q4_0's int16 schedule); 17 or -17 must not
    yield "C=16 tables in [-16, 16]", rng.integers(-16, 17, (16, 16)), ids16
    t5 = rng.integers(-16, 17, (16, 16))
    t5[3, 2] = 17
    yield "one entry 17", t5, ids16
    t5 = rng.integers(-16, 17, (16, 16))
    t5[9, 1] = -17
    yield "one entry -17", t5, ids16


@pytest.mark.parametrize("k", CB_KERNELS)
@pytest.mark.parametrize("gemm", [False, True], ids=["gemv", "gemm"])
def test_exact_sums_on_every_table_path(k, gemm):
    rng = np.random.default_rng(7)
    N, K = 19, 96
    for name, tables, ids in _id_cases(k["format"], N, K // 32, rng):
        w = _W(k, N, K, tables, ids.astype(np.uint8), rng)
        a = Acts(4 if gemm else 1, K, rng, unit_scales=True)
        got = run(k, w, a, 0, -(-N // k["R"]) * k["R"], gemm)[:, :N]
        np.testing.assert_array_equal(got, int_reference(w, a).astype(np.float32), err_msg=f"{k['name']} {name}")


@pytest.mark.parametrize("k", CB_KERNELS)
@pytest.mark.parametrize("gemm", [False, True], ids=["gemv", "gemm"])
def test_exact_sums_at_the_int16_bounds(k, gemm):
    """Every weight at +-v and every activation at +-127: the largest int16 partial sums each table range
    allows (AVX2 adds products in int16 only when the tables are narrow enough; 65 must take the wide path, 17
    not cb2's narrow one)."""
    rng = np.random.default_rng(11)
    N, K = 16, 64
    for v, lo in ((16, -16), (17, -16), (17, -17), (63, -63), (64, -64), (65, -65), (127, -127)):
        for sign in (1, -1):
            tables = np.array([[v] * 16, [lo] * 16])
            w = _W(k, N, K, tables, rng.integers(0, 2, (N, K // 32)).astype(np.uint8), rng)
            a = Acts(4 if gemm else 1, K, rng, unit_scales=True)
            a.q[:] = 127 * sign
            a.int_vals = a.q.astype(np.int64).reshape(a.q.shape[0], K)
            a.bsums = a.q.astype(np.int32).sum(-1).astype(np.int16)
            got = run(k, w, a, 0, N, gemm)[:, :N]
            np.testing.assert_array_equal(got, int_reference(w, a).astype(np.float32), err_msg=f"{k['name']} {v}")


# ---- bad input -----------------------------------------------------------------------------------------------

def test_bad_tables_and_ids_raise():
    w = heavy_tailed(8, 64, 6)
    ct = quantize_tensor(w, "cb4", 2)
    with pytest.raises(ValueError, match="codebook id"):
        PackedWeight.from_blocks(ct.blocks, "cb4", 8, 64, aux=ct.tables[:1])
    with pytest.raises(ValueError, match="tables"):
        PackedWeight.from_blocks(ct.blocks, "cb4", 8, 64, aux=None)
    with pytest.raises(ValueError, match="shape"):
        PackedWeight.from_blocks(ct.blocks, "cb4", 8, 64, aux=np.zeros((2, 7), np.int8))
    with pytest.raises(TypeError, match="integers"):
        PackedWeight.from_blocks(ct.blocks, "cb4", 8, 64, aux=ct.tables.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        cb.check_tables(np.full((1, 4), -128), "cb2")
    with pytest.raises(ValueError, match="no direct quantizer"):
        lowbit.pack_weight(w, "cb4")


@pytest.mark.parametrize("fmt", ["cb4", "cb2"])
def test_short_aux_rejected_by_core(fmt):
    """The core wants all 16 tables (256 bytes), so no 4-bit id can read past them."""
    k = next(k for k in KERNELS if k["format"] == fmt and k["runnable"])
    K, N = 32, k["R"]
    W = np.zeros(k["sb_bytes"], np.uint8)
    args = (np.zeros(34, np.uint8), np.zeros(1, np.int16), np.zeros(N, np.float32), 0, N, N)
    with pytest.raises(ValueError, match="codebook tables"):
        _core.gemv(k["index"], K, W, np.zeros(255, np.int8), *args)
    _core.gemv(k["index"], K, W, np.zeros(256, np.int8), *args)


def test_more_than_16_codebooks_refused():
    w = heavy_tailed(8, 64, 6)
    with pytest.raises(ValueError, match="1..16"):
        quantize_tensor(w, "cb4", 17)
    with pytest.raises(ValueError, match="1 <= C <= 16"):
        cb.check_tables(np.zeros((17, 16), np.int8), "cb4")


@pytest.mark.parametrize("bad, err", [
    (dict(w=np.zeros((4, 40), np.float32)), ValueError),
    (dict(w=np.full((4, 32), np.nan, np.float32)), ValueError),
    (dict(w=np.zeros((4, 32), np.int32)), TypeError),
    (dict(C=0), ValueError),
    (dict(fmt="cb3"), ValueError),
    (dict(importance=np.ones(31)), ValueError),
    (dict(importance=-np.ones(32)), ValueError),
])
def test_quantize_tensor_bad_arguments(bad, err):
    args = dict(w=np.ones((4, 32), np.float32), fmt="cb4", C=2)
    args.update(bad)
    with pytest.raises(err):
        quantize_tensor(args.pop("w"), **args)
