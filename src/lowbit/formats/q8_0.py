"""Q8_0: 32 weights, fp16 d = amax/127, q = roundf(x * (1/d)) (ties away from zero; 1/d from the fp32 d).
Byte-identical to ggml's quantize_row_q8_0_ref. Activations use the same rule (csrc/ref/quant_act.c)."""
import numpy as np


def roundf(v: np.ndarray) -> np.ndarray:
    """C roundf: half away from zero (np.round rounds half to even). Not floor(|v| + 0.5): in float32 that
    rounds 0.49999997 up to 1. The fraction |v| - floor(|v|) is exact, so this is too (as in gguf)."""
    a = np.abs(v)
    f = np.floor(a)
    return np.sign(v) * (f + np.floor(2 * (a - f)))


def quantize_parts(x: np.ndarray):
    """float [n, 32] -> (fp16 d [n], int8 q [n, 32])."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, 32)
    d = (np.abs(x).max(axis=-1, keepdims=True) / np.float32(127)).astype(np.float32)
    # extremes (fp32-subnormal d: 1/d overflows; d beyond fp16) behave like ggml, without warnings
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
        q = roundf((x * inv).astype(np.float32)).astype(np.int8)
        return d[:, 0].astype(np.float16), q


def quantize_blocks(x: np.ndarray) -> np.ndarray:
    d, q = quantize_parts(x)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), q.view(np.uint8)], axis=-1)


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    blocks = np.asarray(blocks, dtype=np.uint8).reshape(-1, 34)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    return d * blocks[:, 2:].view(np.int8).astype(np.float32)
