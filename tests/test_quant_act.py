"""Activation quantization: whatever quantizer lb_linear uses for a kernel (SIMD ones included) must give the very
bytes of the scalar reference (csrc/ref/quant_act.c): scales, int8 codes, block sums, Q8_0x4 interleave."""
import numpy as np
import pytest

from lowbit import _core
from lowbit.ops import KERNELS


def _scalar_with_act_b(act_B):
    for k in KERNELS:
        if not k["isa"] and k["act_B"] == act_B:
            return k
    raise AssertionError(f"no scalar kernel with act_B={act_B}")


SIMD = [pytest.param(k, id=k["name"], marks=[] if k["runnable"] else [pytest.mark.skip(reason="CPU lacks it")])
        for k in KERNELS if k["isa"]]


def _inputs(rng, M, K):
    """Random rows plus the hard cases: exact .5 ties (amax 127 -> 1/d = 1), zero blocks, subnormal-scale and
    huge blocks, and one block of each row-group with a non-finite value."""
    cases = [rng.standard_normal((M, K)).astype(np.float32)]
    t = (rng.integers(-127, 127, (M, K)) + 0.5).astype(np.float32)
    t[:, ::32] = 127.0
    cases.append(t)
    z = rng.standard_normal((M, K)).astype(np.float32)
    z[:, :32] = 0.0
    z[:, 32:64] *= np.float32(1e-42)
    z[:, 64:96] *= np.float32(1e37)
    cases.append(z)
    n = rng.standard_normal((M, K)).astype(np.float32)
    n[0, 5], n[-1, K - 1] = np.inf, np.nan
    cases.append(n)
    return cases


@pytest.mark.parametrize("M", [1, 3, 4, 5, 8, 11])
@pytest.mark.parametrize("k", SIMD)
def test_pack_activations_bit_identical(k, M):
    ref = _scalar_with_act_b(k["act_B"])
    rng = np.random.default_rng(M)
    K = 96
    for x in _inputs(rng, M, K):
        got = np.zeros(_core.act_bytes(M, K), np.uint8)
        want = np.zeros_like(got)
        with np.errstate(all="ignore"):
            _core.pack_activations(k["index"], x, M, K, got)
            _core.pack_activations(ref["index"], x, M, K, want)
        np.testing.assert_array_equal(got, want, err_msg=f"{k['name']} quantizer differs from the reference")
