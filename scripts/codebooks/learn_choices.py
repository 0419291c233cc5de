"""docs/codebooks.md "Decisions": relative MSE and time of learning variants on two SmolLM2-135M matrices.
usage: python scripts/codebooks/learn_choices.py SMOL.gguf"""
import sys
import time

from _tensors import matrices
from lowbit.quantize import quantize_tensor

NAMES = ["blk.10.ffn_down.weight", "blk.10.attn_q.weight"]
# (C, rounds, shortlist, sample)
VARIANTS = [(4, 3, 0, 4096), (4, 3, 2, 4096), (16, 3, 0, 4096), (16, 3, 2, 4096), (16, 3, 4, 4096),
            (16, 6, 2, 4096), (16, 6, 2, 2048), (8, 4, 2, 4096), (4, 4, 2, 16384)]

for name, w in matrices(sys.argv[1], NAMES).items():
    for C, rounds, short, sample in VARIANTS:
        t = time.perf_counter()
        ct = quantize_tensor(w, "cb4", C, sample=sample, shortlist=short, rounds=rounds)
        e = ((ct.dequantize() - w) ** 2).sum() / (w ** 2).sum()
        print(f"{name} C={C} rounds={rounds} shortlist={short} sample={sample}: rel MSE {e:.5f} "
              f"({time.perf_counter() - t:.2f} s)", flush=True)
