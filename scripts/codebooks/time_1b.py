"""docs/codebooks.md "Quantization time": CPU time of one layer of a 1B-shape model, extrapolated to all layers.
usage: lowbit make-synthetic --shape 1b-16l -o /tmp/syn1b.gguf; python scripts/codebooks/time_1b.py /tmp/syn1b.gguf cb4 4"""
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from _tensors import matrices
from lowbit.io.gguf import open_reader
from lowbit.quantize import quantize_tensor

path, fmt, C = sys.argv[1], sys.argv[2], int(sys.argv[3])
ws = matrices(path, prefix="blk.0.")
allw = sum(int(np.prod(t.shape)) for t in open_reader(path).tensors
           if t.name.startswith("blk.") and len(t.shape) == 2)
n = sum(w.size for w in ws.values())


def cpu():
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])


c0, t0 = cpu(), time.perf_counter()
with ThreadPoolExecutor(2) as pool:
    for w in ws.values():
        quantize_tensor(w, fmt, C, pool=pool)
c1, t1 = cpu(), time.perf_counter()
print(f"{fmt} C={C}: layer 0 = {len(ws)} matrices, {n / 1e6:.1f} M weights: wall {t1 - t0:.1f} s, cpu {c1 - c0:.1f} s "
      f"({(c1 - c0) / n * 1e9:.0f} ns cpu/weight); all blk matrices {allw / 1e6:.0f} M -> cpu {(c1 - c0) * allw / n:.0f} s")
