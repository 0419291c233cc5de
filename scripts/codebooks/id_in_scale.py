"""docs/codebooks.md "where the id lives": weight rel MSE of the learner with the scale on the stored grid (fp16
with the low 4 mantissa bits holding the id: what cb4/cb2 store since lowbit.cb.version 2) against the same
learner with a full fp16 scale (the old layout, a separate id byte: +0.25 bpw).
usage: python scripts/codebooks/id_in_scale.py SMOL.gguf"""
import sys

import numpy as np

from _tensors import matrices
from lowbit.quantize import encode as enc
from lowbit.quantize import quantize_tensor


def fp16(d):
    return np.asarray(d, np.float32).astype(np.float16).astype(np.float32)


for name, w in matrices(sys.argv[1], ["blk.10.ffn_down.weight", "blk.10.attn_q.weight"]).items():
    for fmt, C in [("cb4", 16), ("cb4", 4), ("cb2", 4)]:
        ct = quantize_tensor(w, fmt, C)
        e_mask = ((ct.dequantize() - w) ** 2).sum() / (w ** 2).sum()
        assert abs(ct.stats["err"] / (w ** 2).sum() - e_mask) < 1e-3 * e_mask   # learner's error = real error
        keep, enc.round_scale = enc.round_scale, fp16          # learn + encode with a full fp16 scale
        try:
            e_fp16 = quantize_tensor(w, fmt, C).stats["err"] / (w ** 2).sum()
        finally:
            enc.round_scale = keep
        print(f"{name} {fmt} C={C}: fp16 scale + id byte {e_fp16:.5f} ({ct.bpw + 0.25:.3f} bpw), id in the scale "
              f"{e_mask:.5f} ({ct.bpw:.3f} bpw): {(e_mask / e_fp16 - 1) * 100:+.1f}%", flush=True)
