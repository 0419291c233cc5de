"""Shared helper for the codebook experiment scripts: a GGUF's block matrices as float32."""
import numpy as np

from lowbit.io.gguf import open_reader
from lowbit.io.source import dequantize


def matrices(path, names=None, prefix="blk."):
    r = open_reader(path)
    out = {}
    for t in r.tensors:
        shape = [int(s) for s in reversed(t.shape)]
        if len(shape) != 2 or shape[1] % 32 or not t.name.startswith(prefix):
            continue
        if names is not None and t.name not in names:
            continue
        out[t.name] = dequantize(np.asarray(t.data), t.tensor_type.name, shape).astype(np.float32)
    return out
