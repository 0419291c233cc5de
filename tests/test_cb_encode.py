"""The C group encoder (csrc/ops/cb_encode.c) against the numpy reference (quantize/encode.py).

Both run the same float32 operations in the same order (the numpy sums use the C loop's halving order), so
they agree bit for bit, which compare() asserts last. Before that it runs the looser checks that would still
hold if a compiler fused a multiply-add (an ulp off in a sum can flip a scale rounding or a codebook choice):
a tiny share of near-ties, where C is never worse beyond float32 rounding. Every returned error is also
re-checked in float64 from the returned (scale, id, indices)."""
import numpy as np
import pytest

from lowbit import _core
from lowbit.formats.cb import TABLE_RANGE
from lowbit.quantize.encode import Tables, encode
from lowbit.quantize.learn import learn_tables

MAX_TIE_SHARE = 2e-3      # groups allowed to differ (near-ties)
RTOL = 1e-5               # float32 sums of 32 terms: a few ulps


def groups(rng, n=3000):
    """Real-like groups plus the edge cases: zeros, constants, outliers, huge and tiny magnitudes."""
    parts = [rng.standard_normal((n, 32)) * 0.02,
             rng.standard_t(3, (n, 32)) * 0.01,
             np.zeros((20, 32)),
             np.full((20, 32), 0.37), np.full((20, 32), -1.5),
             np.where(rng.random((200, 32)) < 0.05, 1.0, 0.001) * rng.choice([-1, 1], (200, 32))]
    for scale in (1e3, 3e5, 2.5e6, 1e-4, 1e-6, 1e-9):  # d up to the fp16 grid's top (some overflow), down to 0
        parts.append(rng.standard_normal((100, 32)) * scale)
    return np.concatenate(parts).astype(np.float32)


def random_tables(rng, fmt, C):
    lo, hi = TABLE_RANGE[fmt]
    E = 16 if fmt == "cb4" else 4
    t = np.sort(rng.integers(lo, hi + 1, (C, E)), 1)
    t[0] = np.linspace(lo, hi, E).round()
    if C > 2:
        t[1, -1] = t[1, 0] = 0            # no entry of the largest magnitude at an end: extreme picked inside
        t[1] = np.sort(t[1])
        t[2] = 0                          # an all-zero table: d = 0 for it
    return Tables(t.astype(np.int8), fmt)


def true_err(x, w, tabs, d, ids, idx):
    v = tabs.t[ids.astype(np.intp)[:, None], idx.astype(np.intp)]
    r = x.astype(np.float64) - d.astype(np.float64)[:, None] * v
    return (r * r * (1.0 if w is None else w.astype(np.float64))).sum(1)


def compare(x, tabs, w, short, refits=2):
    a = encode(x, tabs, w, refits=refits, short=short, impl="numpy")
    b = encode(x, tabs, w, refits=refits, short=short, impl="c")
    assert b[0].dtype == np.float32 and b[1].dtype == np.uint8 and b[2].dtype == np.uint8 and b[3].dtype == np.float32
    assert b[2].shape == (len(x), 32) and int(b[1].max()) < tabs.C and int(b[2].max()) < tabs.E
    same = (a[0] == b[0]) & (a[1] == b[1]) & (a[2] == b[2]).all(1)
    assert (~same).mean() <= MAX_TIE_SHARE, f"{(~same).sum()} of {len(x)} groups differ"
    atol = 1e-37                                                   # float32 subnormal residue only
    # equal encodings report (nearly) equal errors; where they differ, C is never worse beyond rounding
    np.testing.assert_allclose(b[3][same], a[3][same], rtol=RTOL, atol=atol)
    worse = b[3] > a[3] * (1 + RTOL) + atol
    assert not worse.any(), f"C worse than numpy on {worse.sum()} groups: {b[3][worse][:5]} vs {a[3][worse][:5]}"
    # the reported error is the error of the returned encoding (float32 residues: relative to the group energy)
    fin = np.isfinite(b[3])
    energy = (x.astype(np.float64) ** 2 * (1.0 if w is None else w)).sum(1)
    assert (~fin).sum() <= (~np.isfinite(a[3])).sum()
    ref = true_err(x[fin], None if w is None else w[fin], tabs, *(o[fin] for o in b[:3]))
    assert np.all(np.abs(b[3][fin] - ref) <= 1e-4 * ref + 1e-10 * energy[fin] + 1e-37)
    # with GCC / clang (no fused multiply-adds, cb_encode.c's pragma) the two are bit-identical: check it
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    return same


@pytest.mark.parametrize("fmt,C", [("cb4", 1), ("cb4", 4), ("cb4", 16), ("cb2", 1), ("cb2", 4)])
@pytest.mark.parametrize("weighted", [False, True])
def test_c_matches_numpy(fmt, C, weighted):
    rng = np.random.default_rng(C * 7 + weighted)
    x = groups(rng)
    w = rng.random(x.shape).astype(np.float32) if weighted else None
    if weighted:
        w[:50] = 0                                             # zero weights: the refit's denominator can be 0
    learned, _ = learn_tables(x[:1024] * np.float32(50), fmt, C, rounds=1)
    for tabs in (learned, random_tables(rng, fmt, C)):
        for short in (0, 2):
            compare(x, tabs, w, short)
        compare(x, tabs, w, 0, refits=0)
        compare(x, tabs, w, 1, refits=5)


@pytest.mark.parametrize("fmt", ["cb4", "cb2"])
def test_scale_rounding_matches_round_scale(fmt):
    """A table whose signed extreme entry is 1 and no refit: the returned scale is the stored-grid rounding of
    the group's signed absmax, so the C rounding (fast bit path and fp16 fallback) is checked directly against
    formats.cb.round_scale, including exact midpoints between grid points (ties go to the smaller magnitude)."""
    from lowbit.formats.cb import round_scale
    rng = np.random.default_rng(5)
    E = 16 if fmt == "cb4" else 4
    tabs = Tables(np.array([[-1] + [0] * (E - 2) + [1]], np.int8), fmt)
    grid = round_scale(np.float32(10.0) ** rng.uniform(-9, 4.8, 4000).astype(np.float32))
    grid = grid[(grid > 0) & (grid < 65000)]
    nxt = np.nextafter(grid.astype(np.float16), np.float16(np.inf)).astype(np.float32)  # one fp16 ulp up
    step = (nxt - grid) * 16                                              # one grid step (6-bit mantissa)
    m = np.concatenate([grid + step / 2, grid + step / 2 * np.float32(1 + 2 ** -20), grid - step / 64,
                        np.float32(10.0) ** rng.uniform(-10, 4.8, 4000).astype(np.float32),
                        np.float32([6.1e-5, 6.104e-5, 2 ** -14, 65279, 65280, 65290, 65504, 65519, 0])])
    m = np.concatenate([m, -m]).astype(np.float32)
    x = np.zeros((len(m), 32), np.float32)
    x[:, 7] = m
    d = encode(x, tabs, refits=0)[0]
    np.testing.assert_array_equal(d, round_scale(m))
    assert np.sum(round_scale(m) != round_scale(np.nextafter(m, np.float32(0)))) > 100    # ties were exercised


def test_zero_and_constant_groups_exact():
    rng = np.random.default_rng(3)
    tabs = random_tables(rng, "cb4", 4)
    x = np.concatenate([np.zeros((3, 32)), np.full((3, 32), 2.0), np.full((3, 32), -0.25)]).astype(np.float32)
    for short in (0, 2):
        d, ids, idx, err = encode(x, tabs, short=short)
        a = encode(x, tabs, short=short, impl="numpy")
        np.testing.assert_array_equal(ids, a[1])
        np.testing.assert_array_equal(d, a[0])
        np.testing.assert_array_equal(idx, a[2])
        assert np.all(err[:3] == 0) and np.all(d[:3] == 0)


def test_bad_input_raises():
    rng = np.random.default_rng(0)
    tabs = random_tables(rng, "cb4", 4)
    x = rng.standard_normal((8, 32)).astype(np.float32)
    n = len(x)
    out = lambda: (np.empty(n, np.float32), np.empty(n, np.uint8), np.empty((n, 32), np.uint8), np.empty(n, np.float32))
    args = lambda **kw: [kw.get("x", x), kw.get("w", None), kw.get("lv", tabs.lut_val), kw.get("li", tabs.lut_idx),
                         kw.get("ext", tabs.ext), kw.get("refits", 2), kw.get("short", 0), *kw.get("out", out())]
    _core.cb_encode(*args())                                                     # the valid call works
    bad = [dict(x=x.astype(np.float64)), dict(x=x[:, :31].copy()), dict(x=x[:, ::2]),
           dict(w=np.ones((n, 16), np.float32)), dict(w=np.ones((n, 32), np.float64)),
           dict(lv=tabs.lut_val[:, :255].copy()), dict(li=tabs.lut_idx.astype(np.int32)),
           dict(ext=np.zeros(0, np.float32)), dict(ext=np.zeros(17, np.float32)), dict(refits=-1), dict(short=-1),
           dict(out=(np.empty(n, np.float32), np.empty(n, np.uint8), np.empty((n, 31), np.uint8),
                     np.empty(n, np.float32))),
           dict(out=(np.empty(n, np.float64), np.empty(n, np.uint8), np.empty((n, 32), np.uint8),
                     np.empty(n, np.float32))),
           dict(out=(np.empty(n, np.float32), np.empty(n, np.uint8), np.empty((n, 32), np.uint8),
                     np.empty(n, np.float32)[::-1]))]
    for kw in bad:
        with pytest.raises(ValueError):
            _core.cb_encode(*args(**kw))
    ro = np.empty(n, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        _core.cb_encode(*args(out=(ro, np.empty(n, np.uint8), np.empty((n, 32), np.uint8), np.empty(n, np.float32))))
    with pytest.raises(ValueError):
        encode(x, tabs, np.ones((n, 16), np.float32))
    with pytest.raises(ValueError):
        encode(x, tabs, impl="fortran")
    with pytest.raises(ValueError):
        encode(x, tabs, refits=-1)
