"""Codebook formats cb4 / cb2 (paper §3): groups of 32 weights, a scale, a codebook id per group and
int8 indices into one of C <= 16 per-tensor int8 codebooks (16 entries for cb4, 4 for cb2).

Plain block (what repack.interleave consumes), little-endian u16 scale word h first:
  cb4: [u16 h][16 bytes]  byte j = idx[j] | idx[j+16] << 4                                  (18 B, 4.5 bpw)
  cb2: [u16 h][8 bytes]   byte j = idx[j] | idx[j+8] << 2 | idx[j+16] << 4 | idx[j+24] << 6   (10 B, 2.5 bpw)
id = h & 15; scale d = fp16 value of h & 0xFFF0 (an fp16 with a 6-bit mantissa: the "masked grid").
Tables: int8 [C, 16] (cb2 uses entries 0..3 of each row; the stride stays 16 so the kernels index id*16).
Weight = d * table[id, idx]. Learning the tables lives in lowbit.quantize; here: encode with given tables."""
import numpy as np

ENTRIES = {"cb4": 16, "cb2": 4}
BLOCK_BYTES = {"cb4": 18, "cb2": 10}
MAX_TABLES = 16          # the id is the scale word's low 4 bits
# Tables per tensor that `lowbit quantize` learns (docs/codebooks.md "Default C": cb2 C=16 since session 5, when
# parts past 16 tables together stopped costing decode speed)
DEFAULT_CODEBOOKS = {"cb4": 16, "cb2": 16}
ID_MASK, SCALE_MASK = 0x000F, 0xFFF0
# Any int8 but -128 is a valid entry (|w| must fit the kernels' maddubs operand). The learner keeps cb2 tables
# in [-64, 63]: then the AVX2 kernel adds 64 and runs maddubs(w + 64, a) without sign ops (7 bits are ample for
# 4 levels; docs/codebooks.md).
TABLE_RANGE = {"cb4": (-127, 127), "cb2": (-64, 63)}     # what the learner emits
# `lowbit quantize --narrow-tables`: tables the AVX2 kernels run on faster paths, at a quality cost
# (docs/codebooks.md "Narrow tables"): cb4 in [-64, 64] (octet pairs add in int16: GEMV +10%, GEMM +20%),
# cb2 in [-16, 16] (entries + 16, q4_0's int16 schedule: GEMV/GEMM +15-30%).
NARROW_RANGE = {"cb4": (-64, 64), "cb2": (-16, 16)}
VALID_RANGE = (-127, 127)


def check_tables(tables: np.ndarray, fmt: str) -> np.ndarray:
    """Validate codebooks: int8-representable [C, E] or [C, 16]; returns int8 [C, 16] (the stored form)."""
    if fmt not in ENTRIES:
        raise ValueError(f"{fmt!r} is not a codebook format (cb4, cb2)")
    E = ENTRIES[fmt]
    t = np.asarray(tables)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[0] > MAX_TABLES or t.shape[1] not in (E, 16):
        raise ValueError(f"{fmt} tables must be [C, {E}] or [C, 16] with 1 <= C <= {MAX_TABLES}, got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"{fmt} tables must be integers (int8 centroids), got {t.dtype}")
    lo, hi = VALID_RANGE
    used = t[:, :E].astype(np.int64)
    if used.min() < lo or used.max() > hi:
        raise ValueError(f"{fmt} table entries must lie in [{lo}, {hi}], got [{used.min()}, {used.max()}]")
    out = np.zeros((t.shape[0], 16), np.int8)
    out[:, :E] = used
    return out


def block_words(blocks: np.ndarray, fmt: str) -> np.ndarray:
    """The u16 scale words [n] of plain blocks."""
    b = np.asarray(blocks, np.uint8).reshape(-1, BLOCK_BYTES[fmt])
    return np.ascontiguousarray(b[:, :2]).view("<u2")[:, 0]


def words_to_scales(h: np.ndarray) -> np.ndarray:
    """Scale words -> (scale float32, id uint8)."""
    h = np.asarray(h, "<u2")
    d = (h & np.uint16(SCALE_MASK)).astype("<u2").view(np.float16).astype(np.float32)
    return d, (h & np.uint16(ID_MASK)).astype(np.uint8)


def round_scale(d: np.ndarray) -> np.ndarray:
    """Nearest value on the masked grid (fp16 with the low 4 mantissa bits zero), as float32: the scale the
    kernels will use, so errors are measured with it."""
    d = np.asarray(d, np.float32)
    with np.errstate(over="ignore"):
        h = d.astype(np.float16).view(np.uint16)
    lo = h & np.uint16(SCALE_MASK)
    hi = lo + np.uint16(0x10)
    hi = np.where((hi & np.uint16(0x7FFF)) >= 0x7C00, lo, hi)        # never step onto inf
    vlo = lo.view(np.float16).astype(np.float32)
    vhi = hi.astype(np.uint16).view(np.float16).astype(np.float32)
    return np.where(np.abs(vhi - d) < np.abs(vlo - d), vhi, vlo).astype(np.float32)


def pad_tables(t: np.ndarray) -> np.ndarray:
    """int8 [C, 16] -> [16, 16] with zero rows: the kernels' aux, where every 4-bit id is in bounds."""
    out = np.zeros((MAX_TABLES, 16), np.int8)
    out[: len(t)] = t
    return out


def prepare_aux(blocks: np.ndarray, tables, fmt: str) -> np.ndarray:
    """The kernels' aux buffer for plain blocks: int8 [16, 16] (the tables, zero-padded) after checking that
    every block's id < C."""
    if tables is None:
        raise ValueError(f"{fmt} weights need their codebook tables (aux)")
    t = check_tables(tables, fmt)
    ids = block_words(blocks, fmt) & ID_MASK
    if ids.size and int(ids.max()) >= len(t):
        raise ValueError(f"{fmt} block uses codebook id {int(ids.max())}, but only {len(t)} tables are given")
    return pad_tables(t)


def pack_indices(idx: np.ndarray, fmt: str) -> np.ndarray:
    """uint8 indices [n, 32] -> code bytes [n, 16] (cb4) or [n, 8] (cb2)."""
    idx = np.asarray(idx, dtype=np.uint8)
    if fmt == "cb4":
        return idx[:, :16] | (idx[:, 16:] << np.uint8(4))
    q = idx.reshape(-1, 4, 8)
    return q[:, 0] | (q[:, 1] << np.uint8(2)) | (q[:, 2] << np.uint8(4)) | (q[:, 3] << np.uint8(6))


def unpack_indices(code: np.ndarray, fmt: str) -> np.ndarray:
    code = np.asarray(code, dtype=np.uint8)
    if fmt == "cb4":
        return np.concatenate([code & 0x0F, code >> 4], axis=-1)
    return np.concatenate([(code >> np.uint8(s)) & 3 for s in (0, 2, 4, 6)], axis=-1)


def make_blocks(d: np.ndarray, ids: np.ndarray, idx: np.ndarray, fmt: str) -> np.ndarray:
    """Scales [n] (rounded to the masked grid here), ids [n] < 16, indices [n, 32] -> plain blocks uint8
    [n, block_bytes]."""
    ids = np.asarray(ids).reshape(-1)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= MAX_TABLES):
        raise ValueError(f"{fmt} codebook ids must lie in 0..{MAX_TABLES - 1} (4 bits), got {int(ids.max())}")
    h = round_scale(np.asarray(d, np.float32).reshape(-1)).astype(np.float16).view("<u2") | ids.astype("<u2")
    return np.concatenate([h.reshape(-1, 1).view(np.uint8), pack_indices(idx, fmt)], axis=-1)


def split_blocks(blocks: np.ndarray, fmt: str):
    """plain blocks -> (scale float32 [n], id uint8 [n], indices uint8 [n, 32])."""
    blocks = np.asarray(blocks, dtype=np.uint8).reshape(-1, BLOCK_BYTES[fmt])
    d, ids = words_to_scales(block_words(blocks, fmt))
    return d, ids, unpack_indices(blocks[:, 2:], fmt)


def dequantize_blocks(blocks: np.ndarray, tables: np.ndarray = None, fmt: str = "cb4") -> np.ndarray:
    if tables is None:
        raise ValueError(f"{fmt} blocks need their codebook tables to dequantize")
    t = check_tables(tables, fmt).astype(np.float32)
    d, ids, idx = split_blocks(blocks, fmt)
    if ids.size and ids.max() >= len(t):
        raise ValueError(f"{fmt} block refers to codebook {int(ids.max())}, only {len(t)} tables given")
    return d[:, None] * t[ids[:, None], idx]


def encode(x: np.ndarray, tables: np.ndarray, fmt: str, weights: np.ndarray = None, refits: int = 2):
    """Quantize float groups [n, 32] with given int8 tables: for every codebook, start from the scale that maps
    the group's signed absmax onto the table's extreme entry, then alternate nearest-entry assignment and the
    least-squares scale refit; keep the codebook with the least (importance-weighted) squared error after
    rounding the scale to the stored (masked) grid. Returns (scale float32 [n], id uint8 [n], indices uint8 [n, 32], err [n])."""
    t = check_tables(tables, fmt).astype(np.float32)[:, : ENTRIES[fmt]]
    x = np.asarray(x, dtype=np.float32).reshape(-1, 32)
    w = None if weights is None else np.asarray(weights, dtype=np.float32).reshape(-1, 32)
    n = len(x)
    mx = np.take_along_axis(x, np.abs(x).argmax(-1)[:, None], -1)[:, 0]
    best_err = np.full(n, np.inf, np.float32)
    best_d = np.zeros(n, np.float32)
    best_id = np.zeros(n, np.uint8)
    best_idx = np.zeros((n, 32), np.uint8)
    for c, tc in enumerate(t):
        order = np.argsort(tc, kind="stable")
        ts = tc[order]
        mid = (ts[1:] + ts[:-1]) * np.float32(0.5)
        ext = ts[-1] if abs(ts[-1]) >= abs(ts[0]) else ts[0]
        d = mx / ext if ext != 0 else np.zeros(n, np.float32)
        for it in range(refits + 1):
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
            q = np.searchsorted(mid, x * inv[:, None])
            v = ts[q]
            if it == refits:
                break
            wv = v if w is None else w * v
            num = (wv * x).sum(-1)
            den = (wv * v).sum(-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.where(den > 0, num / den, np.float32(0)).astype(np.float32)
        d = round_scale(d)                             # the error that counts is with the stored scale
        r = x - d[:, None] * v
        err = (r * r).sum(-1) if w is None else (w * r * r).sum(-1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_d = np.where(better, d, best_d)
        best_id[better] = c
        best_idx[better] = order[q[better]].astype(np.uint8)
    return best_d, best_id, best_idx, best_err


def quantize_blocks(x: np.ndarray, tables: np.ndarray, fmt: str = "cb4", weights: np.ndarray = None) -> np.ndarray:
    d, ids, idx, _ = encode(x, tables, fmt, weights)
    return make_blocks(d, ids, idx, fmt)
