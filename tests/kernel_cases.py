"""Shared helpers for the kernel tests: the kernel list, random packed weights and activations built straight from
the spec formulas (paper-spec §2.2/§2.4, csrc/ref/gemx_ref.c), independent of src/lowbit/formats/repack.py, and
single micro-kernel calls through _core."""
import numpy as np
import pytest

from lowbit import _core
from lowbit.ops import KERNELS

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int64)
N_CODEBOOKS = 4            # tables the cb4/cb2 weights use (the aux buffer always holds 16: any 4-bit id fits)
EXACT_LIMIT = 2 ** 24      # integers below this are exact in float32


def kernel_id(k: dict) -> str:
    return k["name"]


def kernel_params():
    """Every kernel in kernels.inc; the ones this CPU cannot run are skipped (not faked)."""
    out = []
    for k in KERNELS:
        marks = [] if k["runnable"] else [pytest.mark.skip(reason=f"{k['name']} needs {'+'.join(k['isa'])}, "
                                                                  "which this CPU lacks")]
        out.append(pytest.param(k, id=kernel_id(k), marks=marks))
    return out


def scalar_twin(k: dict) -> dict:
    """The scalar reference kernel with the same format and layout: the oracle."""
    for s in KERNELS:
        if not s["isa"] and (s["format"], s["R"], s["B"], s["act_B"]) == (k["format"], k["R"], k["B"], k["act_B"]):
            return s
    raise AssertionError(f"kernels.inc has no scalar kernel for {k['format']} {k['R']}x{k['B']} (needed as oracle)")


def row_bytes(fmt: str) -> int:
    return {"q8_0": 32, "cb2": 8}.get(fmt, 16)


class Weights:
    """A random [N, K] weight in one kernel's packed layout, with its exact integer values."""

    def __init__(self, k: dict, N: int, K: int, rng: np.random.Generator, unit_scales: bool):
        fmt, R, B = k["format"], k["R"], k["B"]
        nb = K // 32
        self.N, self.K = N, K
        self.aux = None
        if fmt == "q8_0":
            vals = rng.integers(-127, 128, (N, nb, 32))           # quantizers never emit -128
            code_bytes = vals.astype(np.int8).view(np.uint8)
        elif fmt in ("q4_0", "iq4_nl", "cb4"):
            codes = rng.integers(0, 16, (N, nb, 32)).astype(np.uint8)
            code_bytes = codes[..., :16] | (codes[..., 16:] << 4)   # byte j: element j low, j+16 high
        elif fmt == "cb2":
            codes = rng.integers(0, 4, (N, nb, 32)).astype(np.uint8)
            code_bytes = codes[..., 0:8] | codes[..., 8:16] << 2 | codes[..., 16:24] << 4 | codes[..., 24:32] << 6
        else:
            raise AssertionError(f"kernel_cases cannot build weights for format {fmt}: add it here")
        ids = None
        if fmt == "q4_0":
            vals = codes.astype(np.int64) - 8
        elif fmt == "iq4_nl":
            vals = KVALUES_IQ4NL[codes]
        elif fmt in ("cb4", "cb2"):
            self.aux = np.zeros((16, 16), np.int8)
            self.aux[:N_CODEBOOKS] = rng.integers(-127, 128, (N_CODEBOOKS, 16))
            ids = rng.integers(0, N_CODEBOOKS, (N, nb)).astype(np.uint8)
            vals = self.aux.astype(np.int64)[ids[..., None], codes]
        self.int_vals = vals.astype(np.int64).reshape(N, K)
        if unit_scales:
            d = np.ones((N, nb), np.float16)
        else:
            d = (rng.uniform(0.5, 2.0, (N, nb)) * rng.choice([-1, 1], (N, nb)) / 64).astype(np.float16)
        if ids is not None:    # cb: the scale is the fp16 word with its low 4 bits cleared (they hold the id)
            d = (d.view(np.uint16) & np.uint16(0xFFF0)).view(np.float16)
        self.d = d
        words = d.view(np.uint16) if ids is None else d.view(np.uint16) | ids.astype(np.uint16)
        self.plain = np.concatenate([words.view(np.uint8).reshape(N, nb, 2), code_bytes.astype(np.uint8)], -1)
        self.data = pack_by_formula(d, ids, code_bytes.astype(np.uint8), fmt, R, B)

    def dequant(self) -> np.ndarray:
        """float64 [N, K] weights."""
        return self.int_vals * np.repeat(self.d.astype(np.float64), 32, axis=1)


def pack_by_formula(d, ids, code_bytes, fmt, R, B) -> np.ndarray:
    """Super-blocks from the spec: R scale words (cb: fp16 scale bits | codebook id in bits 0-3), then code byte j
    of row r at ((j//B)*R + r)*B + j%B, XOR 0x88 for q4_0 only. N is padded to a multiple of R with zero rows."""
    N, nb, rb = code_bytes.shape
    G = -(-N // R)
    sbb = R * (2 + rb)
    out = np.zeros((G, nb, sbb), np.uint8)
    words = d.view(np.uint16) if ids is None else d.view(np.uint16) | ids.astype(np.uint16)
    dv = words.astype("<u2").view(np.uint8).reshape(N, nb, 2)
    qoff = 2 * R
    for n in range(N):
        g, r = divmod(n, R)
        out[g, :, 2 * r: 2 * r + 2] = dv[n]
        for j in range(rb):
            out[g, :, qoff + ((j // B) * R + r) * B + j % B] = code_bytes[n, :, j] ^ (0x88 if fmt == "q4_0" else 0)
    if fmt == "q4_0" and N % R:        # padded rows: code bytes 0 XOR 0x88, like the packer's zero blocks
        for n in range(N, G * R):
            r = n % R
            for j in range(rb):
                out[N // R, :, qoff + ((j // B) * R + r) * B + j % B] = 0x88
    return out.reshape(-1)


class Acts:
    """rows x K activations as int8 codes with fp16 scales, packed as plain Q8_0 (gemv) or Q8_0x4 (gemm)."""

    def __init__(self, rows: int, K: int, rng: np.random.Generator, unit_scales: bool, lim: int = 127):
        nb = K // 32
        self.q = rng.integers(-lim, lim + 1, (rows, nb, 32)).astype(np.int8)
        if unit_scales:
            self.d = np.ones((rows, nb), np.float16)
        else:
            self.d = (rng.uniform(0.5, 2.0, (rows, nb)) / 127).astype(np.float16)
        self.int_vals = self.q.astype(np.int64).reshape(rows, K)
        self.bsums = self.q.astype(np.int32).sum(-1).astype(np.int16)   # [rows, nb]

    def gemv_buffers(self, row: int = 0):
        blocks = np.concatenate([self.d[row].view(np.uint8).reshape(-1, 2), self.q[row].view(np.uint8)], -1)
        return blocks.reshape(-1).copy(), self.bsums[row].copy()

    def gemm_buffers(self, act_B: int):
        assert self.q.shape[0] == 4
        nb = self.q.shape[1]
        out = np.zeros((nb, 136), np.uint8)
        for i in range(4):
            out[:, 2 * i: 2 * i + 2] = self.d[i].view(np.uint8).reshape(nb, 2)
            for e in range(32):
                out[:, 8 + ((e // act_B) * 4 + i) * act_B + e % act_B] = self.q[i, :, e].view(np.uint8)
        return out.reshape(-1), np.ascontiguousarray(self.bsums.T).reshape(-1)

    def dequant(self) -> np.ndarray:
        return self.int_vals * np.repeat(self.d.astype(np.float64), 32, axis=1)


def int_reference(w: Weights, a: Acts) -> np.ndarray:
    """Exact int64 dot products [rows, N]; asserts every partial sum a float32 accumulator sees stays exact."""
    rows = a.int_vals.shape[0]
    prod = (a.int_vals[:, None, :] * w.int_vals[None, :, :]).reshape(rows, w.N, -1, 32).sum(-1)  # per block
    partial = np.cumsum(prod, axis=-1)
    assert np.abs(prod).max() < EXACT_LIMIT and np.abs(partial).max() < EXACT_LIMIT, "test data not float-exact"
    return partial[..., -1]


def abs_bound(w: Weights, a: Acts) -> np.ndarray:
    """Σ_b |isum_b * dw * da| [rows, N]: the scale for a rounding-error tolerance."""
    rows = a.int_vals.shape[0]
    prod = (a.int_vals[:, None, :] * w.int_vals[None, :, :]).reshape(rows, w.N, -1, 32).sum(-1).astype(np.float64)
    sc = w.d.astype(np.float64)[None] * a.d.astype(np.float64)[:, None]
    return np.abs(prod * sc).sum(-1)


SENTINEL = np.float32(-7.25e33)   # written nowhere by a correct kernel


def run(k: dict, w: Weights, a: Acts, n0: int, n1: int, gemm: bool, pad: int = 3) -> np.ndarray:
    """One micro-kernel call. Output rows have stride N + pad; untouched cells keep SENTINEL."""
    N, K = w.N, w.K
    ldo = N + pad
    rows = 4 if gemm else 1
    out = np.full(rows * ldo, SENTINEL, np.float32)
    aux = None if w.aux is None else w.aux.reshape(-1)
    if gemm:
        A, bs = a.gemm_buffers(k["act_B"])
        _core.gemm(k["index"], K, w.data, aux, A, bs, out, ldo, n0, n1, N)
    else:
        A, bs = a.gemv_buffers()
        _core.gemv(k["index"], K, w.data, aux, A, bs, out, n0, n1, N)
    return out.reshape(rows, ldo)
