"""Codebook formats cb4 / cb2 (paper §3): groups of 32 weights, an fp16 scale, a codebook id per group and
int8 indices into one of C per-tensor int8 codebooks (16 entries for cb4, 4 for cb2).

Plain block (what repack.interleave consumes):
  cb4: [fp16 d][u8 id][16 bytes]  byte j = idx[j] | idx[j+16] << 4                          (19 B, 4.75 bpw)
  cb2: [fp16 d][u8 id][8 bytes]   byte j = idx[j] | idx[j+8] << 2 | idx[j+16] << 4 | idx[j+24] << 6   (11 B)
Tables: int8 [C, 16] (cb2 uses entries 0..3 of each row; the stride stays 16 so the kernels index id*16).
Weight = d * table[id, idx]. Learning the tables lives in lowbit.quantize; here: encode with given tables."""
import numpy as np

ENTRIES = {"cb4": 16, "cb2": 4}
BLOCK_BYTES = {"cb4": 19, "cb2": 11}
# Any int8 but -128 is a valid entry (|w| must fit the kernels' maddubs operand). The learner keeps cb2 tables
# in [-64, 63]: then the AVX2 kernel adds 64 and runs maddubs(w + 64, a) without sign ops (7 bits are ample for
# 4 levels; docs/codebooks.md).
TABLE_RANGE = {"cb4": (-127, 127), "cb2": (-64, 63)}     # what the learner emits
VALID_RANGE = (-127, 127)


def check_tables(tables: np.ndarray, fmt: str) -> np.ndarray:
    """Validate codebooks: int8-representable [C, E] or [C, 16]; returns int8 [C, 16] (the stored form)."""
    if fmt not in ENTRIES:
        raise ValueError(f"{fmt!r} is not a codebook format (cb4, cb2)")
    E = ENTRIES[fmt]
    t = np.asarray(tables)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[0] > 256 or t.shape[1] not in (E, 16):
        raise ValueError(f"{fmt} tables must be [C, {E}] or [C, 16] with 1 <= C <= 256, got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"{fmt} tables must be integers (int8 centroids), got {t.dtype}")
    lo, hi = VALID_RANGE
    used = t[:, :E].astype(np.int64)
    if used.min() < lo or used.max() > hi:
        raise ValueError(f"{fmt} table entries must lie in [{lo}, {hi}], got [{used.min()}, {used.max()}]")
    out = np.zeros((t.shape[0], 16), np.int8)
    out[:, :E] = used
    return out


def prepare_aux(blocks: np.ndarray, tables, fmt: str) -> np.ndarray:
    """The kernels' aux buffer for plain blocks: int8 [C', 16] with every block's id < C; cb2 is padded to at
    least 4 tables (its AVX2 kernel keeps tables 0..3 in one register)."""
    if tables is None:
        raise ValueError(f"{fmt} weights need their codebook tables (aux)")
    t = check_tables(tables, fmt)
    ids = np.asarray(blocks, np.uint8).reshape(-1, BLOCK_BYTES[fmt])[:, 2]
    if ids.size and int(ids.max()) >= len(t):
        raise ValueError(f"{fmt} block uses codebook id {int(ids.max())}, but only {len(t)} tables are given")
    if fmt == "cb2" and len(t) < 4:
        t = np.concatenate([t, np.zeros((4 - len(t), 16), np.int8)])
    return np.ascontiguousarray(t)


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
    """fp16-representable scales [n], ids [n], indices [n, 32] -> plain blocks uint8 [n, block_bytes]."""
    d16 = np.asarray(d, dtype=np.float32).astype(np.float16).reshape(-1, 1)
    return np.concatenate([d16.view(np.uint8), np.asarray(ids, np.uint8).reshape(-1, 1), pack_indices(idx, fmt)],
                          axis=-1)


def split_blocks(blocks: np.ndarray, fmt: str):
    """plain blocks -> (scale float32 [n], id uint8 [n], indices uint8 [n, 32])."""
    blocks = np.asarray(blocks, dtype=np.uint8).reshape(-1, BLOCK_BYTES[fmt])
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)[:, 0]
    return d, blocks[:, 2].copy(), unpack_indices(blocks[:, 3:], fmt)


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
    fp16 rounding of the scale. Returns (scale float32 [n], id uint8 [n], indices uint8 [n, 32], err [n])."""
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
        d = d.astype(np.float16).astype(np.float32)    # the error that counts is with the stored scale
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
