"""`python -m lowbit.quantize.bench`: GEMV/GEMM speed of the selected cb4/cb2 kernels vs q4_0 on the same shapes
(random codes and tables: the kernels' speed depends only on the tables' range, which picks the AVX2 path).
q8_0 runs alongside: int8 weights with no lookup at all, the ceiling of any format whose entries use the int8
range on AVX2 without VNNI (docs/codebooks.md "Speed"). Prints the best of many interleaved runs, so a busy
machine inflates all rows alike; ratios are what to read."""
import argparse
import dataclasses
import time

import numpy as np

import lowbit
from lowbit.formats.cb import TABLE_RANGE, make_blocks
from lowbit.ops import PackedWeight

FORMATS = ("q4_0", "cb4", "cb2", "q8_0")
SHAPES = [(576, 1536), (1536, 576), (2048, 2048), (4096, 4096), (8192, 2048), (16384, 4096)]   # last: > L3 (32 MB)


RANGES = {("cb4", 8): (-127, 127), ("cb4", 7): (-64, 63), ("cb2", 7): (-64, 63), ("cb2", 5): (-16, 16)}


def random_weight(fmt, N, K, rng, C=16, table_bits=None):
    """A packed weight in freshly allocated memory (arrays carved out right after large temporaries measured
    up to 2x slower to stream on this VM, for any kernel). table_bits: cb4 8 (full int8) or 7 ([-64, 63]);
    cb2 7 ([-64, 63]) or 5 ([-16, 16], the narrow path); None = the learner's range (formats/cb.TABLE_RANGE)."""
    pw = _random_weight(fmt, N, K, rng, C, table_bits)
    return dataclasses.replace(pw, data=pw.data.copy())


def _random_weight(fmt, N, K, rng, C, table_bits):
    if fmt in ("q4_0", "q8_0"):
        return lowbit.pack_weight(rng.standard_normal((N, K)).astype(np.float32), fmt)
    E = 16 if fmt == "cb4" else 4
    n = N * K // 32
    lo, hi = TABLE_RANGE[fmt] if table_bits is None else RANGES[fmt, table_bits]
    tables = rng.integers(lo, hi, (C, 16), endpoint=True).astype(np.int8)
    blocks = make_blocks(rng.uniform(0.5, 1, n) / 64, rng.integers(0, C, n), rng.integers(0, E, (n, 32)), fmt)
    return PackedWeight.from_blocks(blocks.reshape(N, -1), fmt, N, K, aux=tables)


def best_time(fn, reps):
    fn()
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--M", type=int, default=1, help="activation rows (1 = GEMV decode)")
    p.add_argument("--codebooks", type=int, default=4, help="tables per tensor (kernel speed does not depend on it)")
    p.add_argument("--cb4-table-bits", type=int, choices=(7, 8), default=8,
                   help="7: cb4 tables in [-64, 63] (the AVX2 kernel's int16 pair-add path); 8: full int8")
    p.add_argument("--cb2-table-bits", type=int, choices=(5, 7), default=None,
                   help="5: cb2 tables in [-16, 16] (narrow path); 7: [-64, 63]; default: the learner's range")
    p.add_argument("--shapes", help="N x K list, e.g. 16384x4096,4096x4096 (default: a fixed set)")
    args = p.parse_args(argv)
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    lowbit.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    bits = {"cb4": args.cb4_table_bits, "cb2": args.cb2_table_bits}
    print(f"threads={args.threads} M={args.M} C={args.codebooks} table bits: cb4 {args.cb4_table_bits}, cb2 "
          f"{args.cb2_table_bits or 'learner range ' + str(TABLE_RANGE['cb2'])}; kernels: " +
          ", ".join(f"{f}={lowbit.ops.kernel_for(f)['name']}" for f in FORMATS))
    print("best of the interleaved runs (median in brackets); ratios are q4_0 time / format time")
    print(f"{'N x K':>12} {'q4_0 us':>9} " + " ".join(f"{f + ' us':>9}" for f in FORMATS[1:]) + " " +
          " ".join(f"{f + '/q4_0':>10} {'(median)':>9}" for f in FORMATS[1:]))
    for N, K in shapes:
        x = rng.standard_normal((args.M, K)).astype(np.float32)
        ws = {fmt: random_weight(fmt, N, K, rng, args.codebooks, bits.get(fmt)) for fmt in FORMATS}
        runs = {fmt: [] for fmt in ws}
        for _ in range(args.reps):        # interleaved, so load changes hit every format alike
            for fmt, w in ws.items():
                runs[fmt].append(best_time(lambda: lowbit.linear(x, w), 1))
        t = {fmt: min(r) for fmt, r in runs.items()}
        med = {fmt: float(np.median(r)) for fmt, r in runs.items()}
        print(f"{N:>5} x {K:<5} {t['q4_0']*1e6:9.1f} " + " ".join(f"{t[f]*1e6:9.1f}" for f in FORMATS[1:]) + " " +
              " ".join(f"{t['q4_0']/t[f]:10.2f} {med['q4_0']/med[f]:9.2f}" for f in FORMATS[1:]), flush=True)


if __name__ == "__main__":
    main()
