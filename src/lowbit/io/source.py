"""What the model builder needs from any file format: tensor names, [N, K] shapes, types, data."""
from __future__ import annotations

import numpy as np


class TensorSource:
    config = None

    def names(self):            # GGUF-style names: token_embd.weight, blk.{i}.attn_q.weight, ...
        raise NotImplementedError

    def info(self, name):       # (type name as in ggml: F32, F16, BF16, Q4_0, ...), shape [N, K] or [K]
        raise NotImplementedError

    def raw(self, name):        # raw storage (memmap); quantized types as uint8 [N, row_bytes]
        raise NotImplementedError

    def file_rows(self, name):  # (path, offset, n_rows, row_bytes) of a row-major tensor
        raise NotImplementedError

    def drop_metadata(self):
        pass

    def close(self):
        pass


def dequantize(raw: np.ndarray, type_name: str, shape) -> np.ndarray:
    """Any stored tensor -> float32 with the given shape; ggml block types go through gguf.quants."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gg_dequantize
    from . import ModelFileError
    if type_name == "F32":
        return np.ascontiguousarray(raw).view(np.float32).reshape(shape)
    if type_name == "F16":
        return np.ascontiguousarray(raw).view(np.float16).astype(np.float32).reshape(shape)
    if type_name == "BF16":
        u = np.ascontiguousarray(raw).view(np.uint16).astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    fast = _FAST.get(type_name)
    if fast is not None:
        return fast(np.ascontiguousarray(raw).view(np.uint8)).reshape(shape)
    try:
        qt = GGMLQuantizationType[type_name]
    except KeyError:
        raise ModelFileError(f"unsupported tensor type {type_name}") from None
    try:
        return gg_dequantize(np.asarray(raw), qt).astype(np.float32, copy=False).reshape(shape)
    except NotImplementedError:
        raise ModelFileError(f"unsupported tensor type {type_name} (no dequantizer)") from None


def _q4_1(raw):
    """Q4_1 blocks (fp16 d, fp16 m, 16 nibble bytes) -> float32; vectorised over the whole tensor (gguf.quants
    walks it in row groups, ~10x slower on a 100 MB model). Checked against gguf.quants in the tests."""
    b = raw.reshape(-1, 20)
    dm = b[:, 0:4].copy().view(np.float16).astype(np.float32)      # [n, 2]: d, m
    qs = b[:, 4:]
    q = np.empty((b.shape[0], 32), np.float32)                      # nibbles cast straight into the output
    np.bitwise_and(qs, 0x0F, out=q[:, :16], casting="unsafe")
    np.right_shift(qs, 4, out=q[:, 16:], casting="unsafe")
    q *= dm[:, :1]
    q += dm[:, 1:]
    return q


def _lowbit_format(name):
    def deq(raw):
        from ..formats import get_format
        return get_format(name).dequantize(raw)
    return deq


_FAST = {"Q4_1": _q4_1, "Q4_0": _lowbit_format("q4_0"), "Q8_0": _lowbit_format("q8_0"),
         "IQ4_NL": _lowbit_format("iq4_nl")}
