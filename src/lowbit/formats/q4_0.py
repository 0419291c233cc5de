"""Q4_0: 32 weights, fp16 d = max/-8 (max = the signed element of largest magnitude), q = min(15, trunc(x/d + 8.5)).
Byte j holds element j (low nibble) and j+16 (high). Byte-identical to ggml's quantize_row_q4_0_ref."""
import numpy as np


def quantize_blocks(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).reshape(-1, 32)
    imax = np.abs(x).argmax(axis=-1, keepdims=True)
    mx = np.take_along_axis(x, imax, axis=-1)
    d = mx / np.float32(-8)
    # Same operation order as ggml/gguf (cast, then clip) so even blocks whose 1/d overflows (fp32-subnormal d,
    # fp16 d = 0, codes irrelevant) come out byte-identical.
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
        q = np.trunc(x * inv + np.float32(8.5)).astype(np.float32).astype(np.uint8).clip(0, 15)
    qs = q[:, :16] | (q[:, 16:] << np.uint8(4))
    return np.concatenate([d.astype(np.float16).view(np.uint8), qs], axis=-1)


def codes(blocks: np.ndarray) -> np.ndarray:
    """uint8 [n, 18] -> unsigned codes [n, 32] (0..15)."""
    qs = blocks[:, 2:18]
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    blocks = np.asarray(blocks, dtype=np.uint8).reshape(-1, 18)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    return d * (codes(blocks).astype(np.float32) - 8)
