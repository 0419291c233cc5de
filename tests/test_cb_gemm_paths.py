"""cb4/cb2 GEMM and GEMV over the AVX2 kernels' loop structure (gemx_cb_avx2.c): GEMM activations prepared in
chunks of 16 or 32 blocks and row groups in tiles of 32, so K spans several chunks (the last one partial) and the
column range several tiles, with n0 > 0 and a partial last group. Exact integer sums against the int64 oracle, on
the full-range (regrouped), 7-bit, [-16, 16] (cb2's narrow path) and extreme-value table paths."""
import numpy as np
import pytest

from lowbit.formats import cb
from lowbit.formats.repack import interleave
from lowbit.ops import KERNELS

from kernel_cases import SENTINEL, Acts, int_reference, run

CB_KERNELS = [pytest.param(k, id=k["name"], marks=[] if k["runnable"] else
                           pytest.mark.skip(reason=f"{k['name']} needs {'+'.join(k['isa'])}"))
              for k in KERNELS if k["format"] in ("cb4", "cb2")]


class _W:
    """Unit-scale packed weights with random ids into the given tables; int_vals for the oracle."""

    def __init__(self, k, N, K, tables, rng):
        fmt, nb = k["format"], K // 32
        ids = rng.integers(0, len(tables), (N, nb))
        idx = rng.integers(0, cb.ENTRIES[fmt], (N * nb, 32))
        blocks = cb.make_blocks(np.ones(N * nb), ids.reshape(-1), idx, fmt).reshape(N, -1)
        self.N, self.K, self.d = N, K, np.ones((N, nb), np.float16)
        self.aux = cb.prepare_aux(blocks, tables, fmt)
        self.data = interleave(blocks, fmt, N, K, k["R"], k["B"]).reshape(-1)
        self.int_vals = self.aux.astype(np.int64)[ids.reshape(-1)[:, None], idx].reshape(N, K)


def _tables(fmt, rng):
    E = cb.ENTRIES[fmt]
    yield "full int8", rng.integers(-127, 128, (16, E))
    yield "7-bit", rng.integers(-64, 64, (16, E))
    yield "+-64 only", rng.choice([-64, 64], (16, E))
    yield "[-16, 16] (cb2 narrow path)", rng.integers(-16, 17, (16, E))
    yield "+-16 only", rng.choice([-16, 16], (16, E))


@pytest.mark.parametrize("k", CB_KERNELS)
@pytest.mark.parametrize("gemm", [False, True], ids=["gemv", "gemm"])
def test_exact_sums_across_chunks_and_tiles(k, gemm):
    rng = np.random.default_rng(3)
    R = k["R"]
    N, K = 33 * R + 5, 65 * 32               # 34 row groups (2 tiles), 65 blocks (3 chunks, the last of 1)
    Np = -(-N // R) * R
    for name, tables in _tables(k["format"], rng):
        w = _W(k, N, K, tables, rng)
        a = Acts(4 if gemm else 1, K, rng, unit_scales=True)
        ref = int_reference(w, a).astype(np.float32)
        for n0, n1 in ((0, Np), (R, Np - R), (2 * R, 2 * R + 1)):
            got = run(k, w, a, n0, n1, gemm)
            hi = min(n1, N)
            np.testing.assert_array_equal(got[:, n0:hi], ref[:, n0:hi], err_msg=f"{k['name']} {name} {n0}:{n1}")
            assert (got[:, :n0] == SENTINEL).all() and (got[:, hi:] == SENTINEL).all()


@pytest.mark.parametrize("k", CB_KERNELS)
def test_gemm_extremes_over_chunks(k):
    """Weights all at the ends of each path's table range (+-16 narrow, +-64, +-127) and activations all at
    +-127 over 33 blocks: the largest int16 partials of each path, in every chunk."""
    rng = np.random.default_rng(5)
    R = k["R"]
    N, K = 4 * R, 33 * 32
    E = cb.ENTRIES[k["format"]]
    for v, lo in ((16, -16), (17, -16), (17, -17), (64, -64), (127, -127)):
        for sign in (1, -1):
            w = _W(k, N, K, np.array([[v] * E, [lo] * E]), rng)
            a = Acts(4, K, rng, unit_scales=True)
            a.q[:] = 127 * sign
            a.int_vals = a.q.astype(np.int64).reshape(4, K)
            a.bsums = a.q.astype(np.int32).sum(-1).astype(np.int16)
            got = run(k, w, a, 0, N, True)[:, :N]
            np.testing.assert_array_equal(got, int_reference(w, a).astype(np.float32), err_msg=f"{k['name']} {v}")
