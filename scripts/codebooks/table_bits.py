"""docs/codebooks.md: cost of narrower int8 tables (7-bit cb4 tables would let the AVX2 kernel drop its sign ops).
usage: python scripts/codebooks/table_bits.py SMOL.gguf"""
import sys

from _tensors import matrices
from lowbit.formats import cb
from lowbit.quantize import quantize_tensor

for name, w in matrices(sys.argv[1], ["blk.10.ffn_down.weight", "blk.10.attn_q.weight"]).items():
    for fmt, C, ranges in [("cb4", 16, [(-127, 127), (-64, 63)]), ("cb2", 4, [(-127, 127), (-64, 63), (-32, 31)])]:
        res = []
        for r in ranges:
            cb.TABLE_RANGE[fmt] = r          # the learner reads this dict
            e = ((quantize_tensor(w, fmt, C).dequantize() - w) ** 2).sum() / (w ** 2).sum()
            res.append(f"[{r[0]}, {r[1]}]: {e:.5f}")
        print(name, fmt, f"C={C}", "; ".join(res), flush=True)
