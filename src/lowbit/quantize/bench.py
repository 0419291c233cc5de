"""`python -m lowbit.quantize.bench`: GEMV/GEMM speed of the selected cb4/cb2 kernels vs q4_0 on the same shapes
(random codes and tables: the kernels' speed does not depend on the values). Prints the best of many interleaved
runs, so a busy machine inflates all rows alike; ratios are what to read."""
import argparse
import dataclasses
import time

import numpy as np

import lowbit
from lowbit.formats.cb import make_blocks
from lowbit.ops import PackedWeight

SHAPES = [(576, 1536), (1536, 576), (2048, 2048), (4096, 4096), (8192, 2048), (16384, 4096)]   # last: > L3 (32 MB)


def random_weight(fmt, N, K, rng, C=16, cb4_lo=-127):
    """A packed weight in freshly allocated memory (arrays carved out right after large temporaries measured
    up to 2x slower to stream on this VM, for any kernel). cb4_lo=-64: cb4 tables in [-64, 63] (7 bits)."""
    pw = _random_weight(fmt, N, K, rng, C, cb4_lo)
    return dataclasses.replace(pw, data=pw.data.copy())


def _random_weight(fmt, N, K, rng, C, cb4_lo):
    if fmt == "q4_0":
        return lowbit.pack_weight(rng.standard_normal((N, K)).astype(np.float32), "q4_0")
    E = 16 if fmt == "cb4" else 4
    n = N * K // 32
    lo, hi = (cb4_lo, 128 if cb4_lo == -127 else 64) if fmt == "cb4" else (-64, 64)
    tables = rng.integers(lo, hi, (C, 16)).astype(np.int8)
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
    p.add_argument("--codebooks", type=int, default=4, help="tables per tensor (cb2 is fastest with <= 4)")
    p.add_argument("--cb4-table-bits", type=int, choices=(7, 8), default=8,
                   help="7: cb4 tables in [-64, 63] (the AVX2 kernel's unsigned path); 8: full int8")
    p.add_argument("--shapes", help="N x K list, e.g. 16384x4096,4096x4096 (default: a fixed set)")
    args = p.parse_args(argv)
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    lowbit.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"threads={args.threads} M={args.M} C={args.codebooks} cb4 table bits={args.cb4_table_bits}; kernels: " +
          ", ".join(f"{f}={lowbit.ops.kernel_for(f)['name']}" for f in ("q4_0", "cb4", "cb2")))
    print("best of the interleaved runs (median in brackets); ratios are q4_0 time / format time")
    print(f"{'N x K':>12} {'q4_0 us':>9} {'cb4 us':>9} {'cb2 us':>9} {'cb4/q4_0':>9} {'(median)':>9} "
          f"{'cb2/q4_0':>9} {'(median)':>9}")
    for N, K in shapes:
        x = rng.standard_normal((args.M, K)).astype(np.float32)
        lo = -127 if args.cb4_table_bits == 8 else -64
        ws = {fmt: random_weight(fmt, N, K, rng, args.codebooks, lo) for fmt in ("q4_0", "cb4", "cb2")}
        runs = {fmt: [] for fmt in ws}
        for _ in range(args.reps):        # interleaved, so load changes hit every format alike
            for fmt, w in ws.items():
                runs[fmt].append(best_time(lambda: lowbit.linear(x, w), 1))
        t = {fmt: min(r) for fmt, r in runs.items()}
        med = {fmt: float(np.median(r)) for fmt, r in runs.items()}
        print(f"{N:>5} x {K:<5} {t['q4_0']*1e6:9.1f} {t['cb4']*1e6:9.1f} {t['cb2']*1e6:9.1f} "
              f"{t['q4_0']/t['cb4']:9.2f} {med['q4_0']/med['cb4']:9.2f} "
              f"{t['q4_0']/t['cb2']:9.2f} {med['q4_0']/med['cb2']:9.2f}")


if __name__ == "__main__":
    main()
