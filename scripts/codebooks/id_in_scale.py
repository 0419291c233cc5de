"""docs/codebooks.md "where the id lives": error when the codebook id takes the low log2(C) mantissa bits of
the fp16 scale (scale rounded to the shorter mantissa, ids stored in the freed bits and masked off on use).
usage: python scripts/codebooks/id_in_scale.py SMOL.gguf"""
import sys

import numpy as np

from _tensors import matrices
from lowbit.formats import cb
from lowbit.quantize import quantize_tensor

for name, w in matrices(sys.argv[1], ["blk.10.ffn_down.weight", "blk.10.attn_q.weight"]).items():
    for fmt, C in [("cb4", 16), ("cb4", 4), ("cb2", 4)]:
        bits = int(np.log2(C))
        ct = quantize_tensor(w, fmt, C)
        d, ids, idx = cb.split_blocks(ct.blocks, fmt)
        v = ct.tables[:, : cb.ENTRIES[fmt]].astype(np.float32)[ids[:, None], idx]
        h = d.astype(np.float16).view(np.uint16).astype(np.int32)
        step = 1 << bits
        d2 = (((h + step // 2) // step) * step).astype(np.uint16).view(np.float16).astype(np.float32)
        x = w.reshape(-1, 32)
        e1 = ((d[:, None] * v - x) ** 2).sum() / (w ** 2).sum()
        e2 = ((d2[:, None] * v - x) ** 2).sum() / (w ** 2).sum()
        print(f"{name} {fmt} C={C}: fp16 scale {e1:.5f}, {10 - bits}-bit mantissa {e2:.5f} "
              f"(+{(e2 / e1 - 1) * 100:.1f}%); bpw {ct.bpw:.3f} -> {ct.bpw - 0.25:.3f}")
