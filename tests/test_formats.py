"""The numpy formats against the gguf package (the ggml reference): Q4_0 and Q8_0 byte-identical, ties and
extreme magnitudes included; IQ4_NL dequantize identical and its quantizer at least as good as Q4_0."""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from lowbit.formats import get_format, q8_0

FMTS = {"q4_0": T.Q4_0, "q8_0": T.Q8_0}
F32 = np.float32


def gaussian(n_blocks, seed=0):
    return np.random.default_rng(seed).standard_normal((n_blocks, 32)).astype(F32)


def q8_ties():
    """Blocks whose amax is 127 (d = 1, 1/d = 1): x * (1/d) is x, so exact .5 ties and their neighbours."""
    rows = []
    for vals in ([0.5, -0.5, 1.5, -1.5, 2.5, 126.5, -126.5, 3.5],
                 [np.nextafter(F32(0.5), F32(0)), -np.nextafter(F32(0.5), F32(0)), np.nextafter(F32(0.5), F32(1)),
                  np.nextafter(F32(2.5), F32(0)), np.nextafter(F32(2.5), F32(3)), 63.5, -63.5, 0.0]):
        b = np.zeros(32, F32)
        b[0] = 127
        b[1:1 + len(vals)] = vals
        rows.append(b)
    b = np.zeros(32, F32)          # amax 254 -> d = 2: x/d lands on .5 for odd x
    b[0] = -254
    b[1:17] = np.arange(1, 33, 2)
    rows.append(b)
    return np.stack(rows)


def q4_ties():
    """x/d + 8.5 exactly on an integer (the trunc boundary) and one ulp either side; d = max/-8 = -1 or 0.5."""
    rows = []
    for mx in (F32(8), F32(-4)):
        d = mx / F32(-8)
        for off in (0, -1, 1):
            b = np.zeros(32, F32)
            b[0] = mx
            t = (np.arange(-8, 8, dtype=F32) + F32(0.5)) * d        # x/d + 8.5 = k + 1 exactly
            if off:
                t = np.nextafter(t, F32(np.inf) * off)
            b[1:17] = t
            b[17:] = -mx * F32(0.999)                                 # near the top code 15/16 clip
            rows.append(b)
    return np.stack(rows)


def specials():
    rng = np.random.default_rng(3)
    blocks = [np.zeros(32, F32),                                     # all zero
              -np.abs(rng.standard_normal(32)).astype(F32) - 1,      # max (largest |x|) negative
              np.where(np.arange(32) == 5, F32(-9), F32(3)),        # one negative max among positives
              np.full(32, F32(7.0)),                                 # constant
              (rng.standard_normal(32) * 1e30).astype(F32),          # huge (fp16 d overflows to inf)
              (rng.standard_normal(32) * 6e4).astype(F32),           # near the fp16 limit
              (rng.standard_normal(32) * 1e-30).astype(F32),         # tiny (fp16 d flushes to 0)
              (rng.standard_normal(32) * 1e-6).astype(F32),          # fp16-subnormal d
              (rng.standard_normal(32) * 1e-39).astype(F32),         # fp32-subnormal: 1/d overflows
              np.array([1e-40, -0.5e-40] + [0] * 30, F32),
              np.array([3.0, -3.0] * 16, F32)]                       # |max| tie between signs: first wins
    return np.stack(blocks)


def all_cases():
    return np.concatenate([gaussian(512), q8_ties(), q4_ties(), specials()])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # gguf's own overflow/invalid-cast warnings on extremes
@pytest.mark.parametrize("fmt", sorted(FMTS))
def test_quantize_byte_identical_to_gguf(fmt):
    x = all_cases()
    ours = get_format(fmt).quantize(x)
    ref = quants.quantize(x, FMTS[fmt])
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    bad = np.nonzero((ours != ref).any(-1))[0]
    assert bad.size == 0, f"{fmt}: blocks {bad[:10]} differ from gguf, e.g. {x[bad[0]][:6]}"


@pytest.mark.parametrize("fmt", sorted(FMTS))
def test_dequantize_identical_to_gguf(fmt):
    x = np.concatenate([gaussian(256, 1), q8_ties(), q4_ties()])
    blocks = quants.quantize(x, FMTS[fmt])
    np.testing.assert_array_equal(get_format(fmt).dequantize(blocks), quants.dequantize(blocks, FMTS[fmt]))


def test_ties_really_are_ties():
    """Guard the constructed inputs: Q8_0 values sit exactly on .5 after scaling, Q4_0 exactly on integers."""
    x = q8_ties()
    d = np.abs(x).max(-1, keepdims=True) / F32(127)
    v = x * (F32(1) / d)
    assert (np.abs(v) % 1 == 0.5).sum() >= 20
    y = q4_ties()[0::3]
    mx = y[:, :1]
    v = y * (F32(1) / (mx / F32(-8))) + F32(8.5)
    assert (v[:, 1:17] % 1 == 0).all()


def test_roundf_matches_c_on_the_half_ulp_case():
    """floor(|v| + 0.5) rounds 0.49999997 to 1 in float32; C roundf gives 0."""
    v = np.array([np.nextafter(F32(0.5), F32(0)), 0.5, -0.5, 1.5, 2.5, -2.5], F32)
    np.testing.assert_array_equal(q8_0.roundf(v), [0, 1, -1, 2, 3, -3])


def test_iq4_nl_dequantize_matches_gguf():
    rng = np.random.default_rng(4)
    blocks = rng.integers(0, 256, (300, 18)).astype(np.uint8)
    d = (rng.standard_normal(300) * 0.01).astype(np.float16)
    blocks[:, :2] = d.view(np.uint8).reshape(-1, 2)
    np.testing.assert_array_equal(get_format("iq4_nl").dequantize(blocks), quants.dequantize(blocks, T.IQ4_NL))


def test_iq4_nl_quantizer_error_no_worse_than_q4_0():
    x = gaussian(2048, 5)
    f_iq, f_q4 = get_format("iq4_nl"), get_format("q4_0")
    err_iq = np.mean((f_iq.dequantize(f_iq.quantize(x)) - x) ** 2)
    err_q4 = np.mean((f_q4.dequantize(f_q4.quantize(x)) - x) ** 2)
    assert err_iq <= err_q4, (err_iq, err_q4)
    assert err_iq < 0.02                                  # sanity: a 4-bit code of unit gaussians
    # also via gguf's independent dequantizer
    err_g = np.mean((quants.dequantize(f_iq.quantize(x), T.IQ4_NL) - x) ** 2)
    assert err_g == pytest.approx(err_iq, rel=1e-6)
