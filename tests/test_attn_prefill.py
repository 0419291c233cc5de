"""Prefill attention in C (csrc/ops/attn_prefill.c, AVX2 row kernel in csrc/x86_avx2/attn_avx2.c) against a float64
numpy reference: RoPE, the KV-cache write and causal GQA attention over head shapes, cache offsets and row counts,
with the SIMD row kernel (where this CPU has one) and the scalar one; thread counts agree bit for bit; bad shapes
and buffers are refused; the model's prefill agrees with its numpy path."""
import numpy as np
import pytest

import lowbit
from lowbit import _core

# float32 dot products over hd and softmax sums over T (any order, FMA or not) against float64, relative to the
# largest |v|: measured worst 3.1e-7 (scalar) / 1.7e-7 (AVX2, whose exp is a polynomial) over SHAPES up to T=500
ATTN_RTOL = 1e-6
# scores of magnitude ~1e3 (test_peaked_softmax) carry their float32 rounding (~1e-4 absolute) into the exps
PEAKED_RTOL = 1e-4
ROPE_RTOL = 1e-6          # one complex multiply in float32 (FMA or not)
SIMD = [False] + ([True] if _core.attn_prefill_simd() else [])
SHAPES = [(4, 4, 8), (9, 3, 64), (8, 2, 16), (6, 2, 24), (4, 2, 6), (2, 1, 128), (4, 1, 72)]   # H, Hkv, hd


def rope_table(n_ctx, hd):
    ang = np.arange(n_ctx)[:, None] * (10000.0 ** (-np.arange(0, hd, 2) / hd))[None, :]
    return np.exp(1j * ang).astype(np.complex64)          # [n_ctx, hd/2]: (cos, sin) pairs


def reference(H, Hkv, hd, p0, M, qkv, rot, kc, vc, scale):
    """float64: rotated q/k rows, the caches after the write, and the attention output [M, H*hd]."""
    q = qkv[:, : H * hd].astype(np.float64).reshape(M, H, hd)
    k = qkv[:, H * hd: (H + Hkv) * hd].astype(np.float64).reshape(M, Hkv, hd)
    v = qkv[:, (H + Hkv) * hd:].astype(np.float64).reshape(M, Hkv, hd)
    r = rot[p0: p0 + M].astype(np.complex128)[:, None, :]
    rot_pairs = lambda x: (x[..., 0::2] + 1j * x[..., 1::2]) * r
    qc, kc_new = rot_pairs(q), rot_pairs(k)
    q = np.stack([qc.real, qc.imag], -1).reshape(M, H, hd)
    k = np.stack([kc_new.real, kc_new.imag], -1).reshape(M, Hkv, hd)
    K, V = kc.astype(np.float64).copy(), vc.astype(np.float64).copy()
    K[:, p0: p0 + M], V[:, p0: p0 + M] = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
    G = H // Hkv
    out = np.zeros((M, H, hd))
    for i in range(M):
        T = p0 + i + 1
        for h in range(H):
            s = K[h // G, :T] @ q[i, h] * scale
            p = np.exp(s - s.max())
            out[i, h] = (p / p.sum()) @ V[h // G, :T]
    return q, k, K, V, out.reshape(M, H * hd)


def case(H, Hkv, hd, p0, M, n_ctx, seed, qscale=1.0):
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((M, (H + 2 * Hkv) * hd)).astype(np.float32)
    qkv[:, : H * hd] *= qscale
    kc = np.zeros((Hkv, n_ctx, hd), np.float32)
    vc = np.zeros((Hkv, n_ctx, hd), np.float32)
    kc[:, :p0] = rng.standard_normal((Hkv, p0, hd))       # an earlier prompt already in the cache
    vc[:, :p0] = rng.standard_normal((Hkv, p0, hd))
    return qkv, rope_table(n_ctx, hd), kc, vc


def run(H, Hkv, hd, p0, M, n_ctx, qkv, rot, kc, vc, scale, simd):
    out = np.full((M, H * hd), np.nan, np.float32)
    _core.attn_prefill(H, Hkv, hd, p0, M, n_ctx, qkv, rot, kc, vc, out, scale, simd)
    return out


@pytest.mark.parametrize("simd", SIMD, ids=lambda s: "simd" if s else "scalar")
@pytest.mark.parametrize("H, Hkv, hd", SHAPES)
@pytest.mark.parametrize("p0, M", [(0, 1), (0, 7), (5, 3), (37, 33), (0, 64)])
def test_matches_float64_reference(H, Hkv, hd, p0, M, simd):
    n_ctx = p0 + M + 3
    qkv, rot, kc, vc = case(H, Hkv, hd, p0, M, n_ctx, seed=H * 1000 + hd + p0 + M)
    scale = 1.0 / np.sqrt(hd)
    q_ref, k_ref, K_ref, V_ref, out_ref = reference(H, Hkv, hd, p0, M, qkv, rot, kc, vc, scale)
    out = run(H, Hkv, hd, p0, M, n_ctx, qkv, rot, kc, vc, scale, simd)
    np.testing.assert_allclose(qkv[:, : H * hd].reshape(M, H, hd), q_ref, rtol=ROPE_RTOL, atol=ROPE_RTOL * 8)
    np.testing.assert_allclose(kc, K_ref, rtol=ROPE_RTOL, atol=ROPE_RTOL * 8)
    assert np.array_equal(vc, V_ref.astype(np.float32)), "v rows are copied, not computed"
    assert not kc[:, p0 + M:].any() and not vc[:, p0 + M:].any(), "wrote past the new rows"
    tol = ATTN_RTOL * np.abs(V_ref).max()
    assert np.abs(out - out_ref).max() <= tol, f"max err {np.abs(out - out_ref).max():.3g} > {tol:.3g}"


@pytest.mark.parametrize("simd", SIMD, ids=lambda s: "simd" if s else "scalar")
def test_peaked_softmax(simd):
    """Large scores: most probabilities underflow (the vector exp flushes below e^-87), none becomes NaN."""
    H, Hkv, hd, p0, M, n_ctx = 4, 2, 64, 40, 24, 64
    qkv, rot, kc, vc = case(H, Hkv, hd, p0, M, n_ctx, seed=3, qscale=60.0)
    scale = 1.0 / np.sqrt(hd)
    *_, out_ref = reference(H, Hkv, hd, p0, M, qkv, rot, kc, vc, scale)
    out = run(H, Hkv, hd, p0, M, n_ctx, qkv, rot, kc, vc, scale, simd)
    assert np.isfinite(out).all()
    assert np.abs(out - out_ref).max() <= PEAKED_RTOL * np.abs(vc).max()


@pytest.mark.parametrize("simd", SIMD, ids=lambda s: "simd" if s else "scalar")
def test_thread_counts_bit_identical(simd):
    H, Hkv, hd, p0, M, n_ctx = 9, 3, 64, 10, 50, 80
    outs = []
    n = lowbit.get_num_threads()
    try:
        for t in (1, 2, 3):
            lowbit.set_num_threads(t)
            qkv, rot, kc, vc = case(H, Hkv, hd, p0, M, n_ctx, seed=5)
            outs.append((run(H, Hkv, hd, p0, M, n_ctx, qkv, rot, kc, vc, 0.125, simd), kc, qkv))
    finally:
        lowbit.set_num_threads(n)
    for o, k, q in outs[1:]:
        assert np.array_equal(o, outs[0][0]) and np.array_equal(k, outs[0][1]) and np.array_equal(q, outs[0][2])


@pytest.mark.parametrize("simd", SIMD, ids=lambda s: "simd" if s else "scalar")
@pytest.mark.parametrize("pos", [0, 7, 700])      # 700: long enough that the heads go to the pool
def test_decode_matches_float64_reference(pos, simd):
    """The decode step (one row, llama_ops.c lb_attn_decode) shares the row kernel."""
    H, Hkv, hd, n_ctx = 9, 3, 64, 720
    qkv, rot, kc, vc = case(H, Hkv, hd, pos, 1, n_ctx, seed=pos)
    scale = 1.0 / np.sqrt(hd)
    *_, out_ref = reference(H, Hkv, hd, pos, 1, qkv, rot, kc, vc, scale)
    out = np.full(H * hd, np.nan, np.float32)
    scores = np.zeros(H // Hkv * n_ctx, np.float32)      # one row of scores per query head of a kv group
    row = np.ascontiguousarray(rot[pos])
    with pytest.raises(ValueError, match="scores has"):
        _core.attn_decode(H, Hkv, hd, pos, n_ctx, qkv[0].copy(), row, kc.copy(), vc.copy(), scores[:n_ctx], out)
    _core.attn_decode(H, Hkv, hd, pos, n_ctx, qkv[0], row, kc, vc, scores, out, simd)
    assert np.abs(out - out_ref[0]).max() <= ATTN_RTOL * np.abs(vc[:, : pos + 1]).max()


@pytest.mark.skipif(not _core.attn_prefill_simd(), reason="no SIMD attention kernel on this CPU")
@pytest.mark.parametrize("H, Hkv, hd", [(9, 3, 64), (8, 2, 128), (4, 1, 72), (20, 1, 8), (36, 2, 16), (4, 4, 64)])
@pytest.mark.parametrize("p0, M", [(0, 1), (0, 9), (60, 7), (125, 3), (0, 70)])
def test_grouped_kernel_bit_identical_to_rows(H, Hkv, hd, p0, M):
    """The grouped kernel (AVX2 or NEON: a kv head's query heads together, keys in blocks of 64; simd=1) against
    the SIMD row kernel head by head (simd=2): the same bits in prefill, and in decode inline and on the pool (where
    a lone kv head is split between threads), across block edges, T % 4 tails and groups over 16 heads."""
    n_ctx = p0 + M + 2
    outs = []
    for simd in (1, 2):
        qkv, rot, kc, vc = case(H, Hkv, hd, p0, M, n_ctx, seed=H + hd + p0 + M)
        outs.append(run(H, Hkv, hd, p0, M, n_ctx, qkv, rot, kc, vc, 1.0 / np.sqrt(hd), simd))
    assert np.array_equal(outs[0], outs[1])
    n = lowbit.get_num_threads()
    try:
        for pos, threads in ((p0, 1), (900, 2)):          # 900 * H * hd > 256K MACs: the pooled decode
            lowbit.set_num_threads(threads)
            got = []
            for simd in (1, 2):
                qkv, rot, kc, vc = case(H, Hkv, hd, pos, 1, pos + 2, seed=pos + H)
                out = np.full(H * hd, np.nan, np.float32)
                scores = np.zeros(H // Hkv * (pos + 2), np.float32)
                _core.attn_decode(H, Hkv, hd, pos, pos + 2, qkv[0], np.ascontiguousarray(rot[pos]), kc, vc, scores,
                                  out, simd)
                got.append(out)
            assert np.array_equal(got[0], got[1]) and np.isfinite(got[0]).all()
    finally:
        lowbit.set_num_threads(n)


def test_bad_calls():
    H, Hkv, hd, p0, M, n_ctx = 4, 2, 8, 2, 3, 8
    qkv, rot, kc, vc = case(H, Hkv, hd, p0, M, n_ctx, seed=1)
    out = np.zeros((M, H * hd), np.float32)
    ok = (H, Hkv, hd, p0, M, n_ctx, qkv, rot, kc, vc, out, 0.5, True)
    for i, bad, msg in [(1, 3, "bad attention shape"), (2, 7, "bad attention shape"), (4, 7, "bad attention shape"),
                        (3, -1, "bad attention shape"), (4, 0, "bad attention shape"),
                        (6, qkv[:2], "qkv has"), (7, rot[:4], "rope table has"), (8, kc[:1], "k cache has"),
                        (9, vc[:, :4], "v cache"), (10, out[:2], "out has")]:
        args = list(ok)
        args[i] = bad
        with pytest.raises((ValueError, TypeError), match=msg):
            _core.attn_prefill(*args)
    with pytest.raises(TypeError, match="writable"):
        ro = qkv.copy()
        ro.flags.writeable = False
        _core.attn_prefill(H, Hkv, hd, p0, M, n_ctx, ro, rot, kc, vc, out, 0.5, True)
    assert not out.any(), "a refused call wrote output"


def test_model_prefill_matches_numpy_path(monkeypatch):
    """stories260K (f32): prefill logits through the C attention and through numpy agree; decode continues
    from either cache alike."""
    for mod in ("gguf", "tokenizers"):       # absent from the qemu Arm guest (kernel tests only)
        pytest.importorskip(mod)
    from lowbit.model import llama
    llm = lowbit.load(None, format="f32")
    m = llm.model
    ids = llm.encode_prompt("Once upon a time, there was a little girl named Lily. She loved to play outside.")
    res = {}
    for mode in (True, False):
        monkeypatch.setattr(llama, "_ATTN_C", mode)
        m.reset()
        lg = m.prefill(ids[:9], all_logits=True).copy()          # two prefill calls: the second has p0 > 0
        lg2 = m.prefill(ids[9:], all_logits=True).copy()
        res[mode] = (lg, lg2, m.decode(ids[0]).copy())
    for a, b in zip(res[True], res[False]):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
