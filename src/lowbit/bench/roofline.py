"""This machine's ceilings, measured in the same run as the benchmark: read bandwidth (STREAM-like parallel read
in C over >= 1 GiB, far beyond L3) and the effective clock (a dependent integer add chain, 1 add/cycle).

Decode ceiling  = bandwidth / weight bytes per token.
Prefill ceiling = cores x clock x int8 MACs per cycle per core (AVX2 maddubs: 32; NEON SDOT 32, I8MM 64)."""
from __future__ import annotations

import time

import numpy as np

from .. import ops
from ..ops import _core

# int8 multiply-accumulates per cycle per core, by the best usable ISA (see docs/benchmarks.md)
_INT8_MACS = [("avx512vnni", 64), ("avx2", 32), ("i8mm", 64), ("dotprod", 32), ("neon", 16)]


def int8_macs_per_cycle() -> int:
    usable = set(ops.runtime_info().get("usable", []))
    for isa, macs in _INT8_MACS:
        if isa in usable:
            return macs
    return 4


def bandwidth(threads: int, nbytes: int = 1 << 30, reps: int = 5) -> float:
    """Best-of-reps read bandwidth in bytes/s with `threads` threads (restores the pool size)."""
    buf = np.ones(nbytes, dtype=np.uint8)  # touched, so pages are resident
    old = ops.get_num_threads()
    ops.set_num_threads(threads)
    try:
        _core.read_sum(buf)  # warm-up
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            _core.read_sum(buf)
            best = min(best, time.perf_counter() - t)
    finally:
        ops.set_num_threads(old)
    return nbytes / best


def clock_hz(iters: int = 200_000_000, reps: int = 3) -> float:
    """Effective clock: 8 dependent adds per iteration at one add per cycle."""
    _core.add_chain(iters // 10)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        _core.add_chain(iters)
        best = min(best, time.perf_counter() - t)
    return iters * 8 / best


def measure(threads_list, nbytes: int = 1 << 30) -> dict:
    return {
        "clock_ghz": clock_hz() / 1e9,
        "int8_macs_per_cycle_per_core": int8_macs_per_cycle(),
        "bandwidth_gbs": {str(t): bandwidth(t, nbytes) / 1e9 for t in threads_list},
    }
