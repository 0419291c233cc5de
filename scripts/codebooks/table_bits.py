"""docs/codebooks.md: cost of narrower int8 tables. Narrow tables let the AVX2 kernels add products in int16:
cb4 in [-64, 64] drops its widening madd for one of two halves; cb2 in [-16, 16] runs q4_0's schedule (entries
+ 16 in [0, 32], the 4 octets of a block add in int16).
usage: python scripts/codebooks/table_bits.py SMOL.gguf"""
import sys

from _tensors import matrices
from lowbit.formats import cb
from lowbit.quantize import quantize_tensor

RANGES = [(-127, 127), (-64, 63), (-32, 31), (-16, 16)]
for name, w in matrices(sys.argv[1], ["blk.10.ffn_down.weight", "blk.10.attn_q.weight",
                                      "blk.3.ffn_gate.weight"]).items():
    for fmt, C in [("cb4", 16), ("cb2", 4), ("cb2", 16)]:
        res = []
        for r in RANGES:
            cb.TABLE_RANGE[fmt] = r          # the learner reads this dict
            e = ((quantize_tensor(w, fmt, C).dequantize() - w) ** 2).sum() / (w ** 2).sum()
            res.append(f"[{r[0]}, {r[1]}]: {e:.5f}")
        print(name, fmt, f"C={C}", "; ".join(res), flush=True)
