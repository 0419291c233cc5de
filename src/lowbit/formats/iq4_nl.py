"""IQ4_NL: Q4_0's block layout with a fixed non-uniform int8 table (ggml kvalues_iq4nl) instead of q-8.
Our quantizer picks, per block, the scale minimising squared error over a small set of candidates (as ggml's
does, though not byte-identical to it: only the layout and the table are the format)."""
import numpy as np

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
_KV = KVALUES.astype(np.float32)
_MID = (_KV[1:] + _KV[:-1]) / 2


def _nearest(u: np.ndarray) -> np.ndarray:
    return np.searchsorted(_MID, u).astype(np.uint8)


def quantize_blocks(x: np.ndarray, weights: np.ndarray = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).reshape(-1, 32)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float32).reshape(-1, 32)
    imax = np.abs(x).argmax(axis=-1, keepdims=True)
    mx = np.take_along_axis(x, imax, axis=-1)[:, 0]
    best_err = np.full(len(x), np.inf, dtype=np.float32)
    best_q = np.zeros(x.shape, dtype=np.uint8)
    best_d = np.zeros(len(x), dtype=np.float32)
    for step in np.arange(-9, 10) * 0.1:
        d0 = mx / (np.float32(-127) + np.float32(step))  # the largest element maps near the table's -127 end
        with np.errstate(divide="ignore", invalid="ignore"):
            q = _nearest(np.where(d0[:, None] != 0, x / d0[:, None], 0))
            v = _KV[q]
            # least-squares refit of the scale for this assignment
            num = (w * x * v).sum(-1)
            den = (w * v * v).sum(-1)
            d = np.where(den > 0, num / den, 0).astype(np.float32)
        d = d.astype(np.float16).astype(np.float32)
        err = (w * (x - d[:, None] * v) ** 2).sum(-1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_q[better] = q[better]
        best_d = np.where(better, d, best_d)
    qs = best_q[:, :16] | (best_q[:, 16:] << np.uint8(4))
    return np.concatenate([best_d.astype(np.float16).view(np.uint8).reshape(-1, 2), qs], axis=-1)


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    blocks = np.asarray(blocks, dtype=np.uint8).reshape(-1, 18)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 2:]
    idx = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)
    return d * _KV[idx]
