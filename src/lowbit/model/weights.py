"""Source tensors -> runtime weights. Q4_0/IQ4_NL/Q8_0 blocks matching the runtime format are repacked as they
are; other types are dequantized (gguf.quants) and quantized by the numpy reference quantizers. Matrices whose
K is not a multiple of 32 (no block format fits) stay float32 and use numpy matmul."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..formats import get_format
from ..io.source import dequantize

BLOCK_FORMATS = ("q4_0", "iq4_nl", "q8_0")
FLOAT_FORMATS = ("f32", "f16")
RUNTIME_FORMATS = BLOCK_FORMATS + FLOAT_FORMATS
_REQUANT_CHUNK = 1 << 18          # float32 elements dequantized at a time when re-quantizing (1 MiB)


class PackedLinear:
    def __init__(self, pw: ops.PackedWeight):
        self.pw, self.N, self.K = pw, pw.N, pw.K
        self.nbytes = pw.nbytes
        self._idx, self._data, self._aux = pw.kernel["index"], pw.data, pw.aux

    def __call__(self, x, out):
        # x, out are C-contiguous float32 [M, K] / [M, N] buffers owned by the model (checked once, at allocation)
        ops._core.linear(self._idx, self.K, self.N, self._data, self._aux, x, x.shape[0], out)
        return out


class SplitLinear:
    """Parts of a fused weight, each writing its column slice of the output: cb tensors whose tables together
    exceed the 16 a 4-bit id can name (quantize/gguf_io.py) cannot share one PackedWeight. They still run as one
    op (`_core.linear_parts`: activations quantized once, one pool dispatch) when their kernels pack activations
    alike, as parts of one format always do; otherwise one linear per part."""

    def __init__(self, parts):
        self.parts = parts
        self.N, self.K = sum(p.N for p in parts), parts[0].K
        self.nbytes = sum(p.nbytes for p in parts)
        ends = np.cumsum([p.N for p in parts])
        self._cols = [(int(e - p.N), int(e)) for p, e in zip(parts, ends)]
        self._tmp = [np.zeros((0, p.N), np.float32) for p in parts]
        self._one = None
        if all(isinstance(p, PackedLinear) for p in parts) and len(parts) <= ops.MAX_PARTS and ops.parts_compatible(
                [p.pw.kernel for p in parts]):
            self._one = tuple((p._idx, p.N, p._data, p._aux, a) for p, (a, _) in zip(parts, self._cols))

    def __call__(self, x, out):
        M = x.shape[0]
        if self._one is not None:
            ops._core.linear_parts(self._one, self.K, x, M, out, self.N)
            return out
        for i, (p, (a, b)) in enumerate(zip(self.parts, self._cols)):
            if M == 1:                   # a one-row slice is contiguous: written in place
                p(x, out[:, a:b])
                continue
            if self._tmp[i].shape[0] < M:
                self._tmp[i] = np.zeros((M, b - a), np.float32)
            t = self._tmp[i][:M]
            p(x, t)
            out[:, a:b] = t
        return out


class FloatLinear:
    def __init__(self, w: np.ndarray):
        self.w = w                    # [N, K] float32 or float16
        self.N, self.K = w.shape
        self.nbytes = w.nbytes
        self._wt = w.T

    def __call__(self, x, out):
        if self.w.dtype == np.float32:
            np.matmul(x, self._wt, out=out)
        else:                         # f16 storage: upcast per call (a reference mode, not a fast one)
            np.matmul(x, self._wt.astype(np.float32), out=out)
        return out


def _blocks_for(src, name, fmt):
    """One source matrix -> (plain fmt blocks uint8 [N, K/32*bb], what happened)."""
    tname, (N, K) = src.info(name)
    f = get_format(fmt)
    if tname == fmt.upper():
        return np.asarray(src.raw(name)).reshape(N, -1), f"{tname} blocks repacked as-is"
    raw = src.raw(name)
    what = f"{tname} dequantized -> {fmt}"
    if not (getattr(raw, "ndim", 0) == 2 and raw.shape[0] == N):
        return f.quantize(dequantize(raw, tname, (N, K)).reshape(-1, 32)).reshape(N, -1), what
    # In row chunks of ~1 MiB of float32: peak temporaries stay a few MiB whatever the tensor size, and glibc
    # reuses them instead of growing the heap. (Not threaded: worker threads' malloc arenas kept ~6 MiB of freed
    # scratch resident on SmolLM2 even after malloc_trim, for ~0.3 s saved.)
    rows = max(1, _REQUANT_CHUNK // K)
    out = None
    for r0 in range(0, N, rows):
        n = min(rows, N - r0)
        b = f.quantize(dequantize(raw[r0:r0 + n], tname, (n, K)).reshape(-1, 32)).reshape(n, -1)
        if n == N:
            return b, what
        if out is None:
            out = np.empty((N, b.shape[1]), np.uint8)
        out[r0:r0 + n] = b
    return out, what


def keep_q8(src, names, fmt, sensitive):
    """ffn_down and the output matrix lose the most when re-quantized to 4 bits (from Q4_1, Q8_0, F16...):
    SmolLM2-135M from its Q4_1 file answers "Paris" in F32 and with these two at q8_0, and not with them at
    q4_0 (llama.cpp's Q4_K_M keeps such tensors wider for the same reason). Tensors already stored in the 4-bit
    runtime format are repacked as they are, never widened."""
    return (sensitive and fmt in ("q4_0", "iq4_nl") and any(src.info(n)[0] != fmt.upper() for n in names))


def build_linear(src, names, fmt, log, sensitive=False):
    """Fuse the [N_i, K] matrices `names` along N into one runtime weight; log one line per source tensor."""
    if hasattr(src, "prepacked_linear"):       # native .lowbit file: stored in the kernels' layout (io/native.py)
        return src.prepacked_linear(names, log)
    if hasattr(src, "codebook_linear") and all(src.info(n)[0] in ("CB4", "CB2") for n in names):
        pw = src.codebook_linear(names, log)                     # learned tables: used as stored
        return PackedLinear(pw) if isinstance(pw, ops.PackedWeight) else SplitLinear([PackedLinear(p) for p in pw])
    shapes = [src.info(n)[1] for n in names]
    K = shapes[0][1]
    if any(len(s) != 2 or s[1] != K for s in shapes):   # fused along N: every part needs the same K (hostile files)
        from ..io import ModelFileError
        raise ModelFileError(f"{getattr(src, 'path', '')}: {', '.join(names)} have shapes {shapes}; fused "
                             f"matrices need 2-D [N, K] with one K")
    fmt0 = fmt
    if K % 32 == 0 and keep_q8(src, names, fmt, sensitive):
        fmt = "q8_0"
    if fmt in BLOCK_FORMATS and K % 32 == 0:
        parts = []
        for n in names:
            b, what = _blocks_for(src, n, fmt)
            parts.append(b)
            log.append((n, src.info(n)[0], src.info(n)[1], fmt,
                        what + (" (kept at 8 bits: sensitive; --pure for 4)" if fmt != fmt0 else "")))
        blocks = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        N = blocks.shape[0]
        return PackedLinear(ops.PackedWeight.from_blocks(blocks, fmt, N, K))
    dt = np.float16 if fmt == "f16" else np.float32
    ws = []
    for n in names:
        tname, shape = src.info(n)
        ws.append(dequantize(src.raw(n), tname, shape).astype(dt))
        why = f"K={K} not a multiple of 32: float32 fallback" if fmt in BLOCK_FORMATS else f"{tname} -> {fmt}"
        log.append((n, tname, shape, "f32" if fmt in BLOCK_FORMATS else fmt, why))
    return FloatLinear(np.ascontiguousarray(ws[0] if len(ws) == 1 else np.concatenate(ws, axis=0)))


def load_vector(src, name, log):
    tname, shape = src.info(name)
    log.append((name, tname, shape, "f32", "norm weight, float32"))
    return np.array(dequantize(src.raw(name), tname, shape), dtype=np.float32)   # a copy: no view of the mapping


class EmbeddingRows:
    """Token embedding lookup that reads only the requested rows: a private memmap of just this tensor, so
    building the (tied) output matrix from the reader's mapping does not leave the whole table resident."""

    def __init__(self, src, name, log):
        self.type_name, (self.n_rows, self.dim) = src.info(name)
        path, offset, n_rows, row_bytes = src.file_rows(name)
        self.rows = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(n_rows, row_bytes))
        log.append((name, self.type_name, (self.n_rows, self.dim), self.type_name,
                    "embedding rows read from the mapped file on lookup"))

    def lookup(self, ids, out):
        for i, t in enumerate(ids):
            out[i] = dequantize(self.rows[t], self.type_name, (self.dim,))
        return out
