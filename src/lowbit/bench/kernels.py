"""`lowbit bench kernels`: GEMV (M=1) and GEMM (M=512) through lowbit.ops.linear on Llama layer shapes, against
this machine's ceilings measured in the same run, and against numpy float32 matmul on the same shapes.

GEMV: GB/s of packed weight bytes, as a fraction of the measured read bandwidth at the same thread count.
GEMM: int8 GMAC/s, as a fraction of the int8 peak = MACs/cycle/core (AVX2 maddubs: 32) x measured clock x threads.
Speed does not depend on weight values, so weights are random blocks (valid fp16 scales), packed by the normal
repack. Each case: one warm-up call, then `reps` timed calls alternating lowbit / numpy (A B A B) so drift on a
shared machine hits both; medians are reported. A printout, not a test: nothing here asserts a speed."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import numpy as np

from .. import ops
from ..formats import get_format
from ..formats.cb import DEFAULT_CODEBOOKS
from . import roofline

# Llama-2-7B (4096, 11008) and TinyLlama-1.1B (2048, 5632) layer shapes, N x K (out x in)
SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (2048, 5632), (5632, 2048)]
QUICK_SHAPES = [(4096, 4096), (11008, 4096)]
FORMATS = ["q4_0", "iq4_nl", "q8_0"]
CODEBOOKS = DEFAULT_CODEBOOKS     # tables per tensor for cb formats (lowbit quantize's defaults)
GEMM_M = 512


def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help="two shapes, q4_0 only (unless --formats), fewer reps: well under a minute")
    p.add_argument("-t", "--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--formats", help=f"comma-separated weight formats (default {','.join(FORMATS)}; quick: q4_0)")
    p.add_argument("--shapes", help="comma-separated NxK shapes (default: the Llama shapes)")
    p.add_argument("--reps", type=int, help="timed repetitions per case (default 9 GEMV / 3 GEMM; quick 5 / 2)")
    p.add_argument("--no-numpy", action="store_true", help="skip the numpy float32 comparison")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def _int_list(s: str, what: str) -> list:
    try:
        vals = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {s!r}") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"{what} must be positive integers, got {s!r}")
    return vals


def _shapes(s: str) -> list:
    out = []
    for item in s.split(","):
        try:
            n, k = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"shape {item!r} is not NxK (e.g. 4096x11008)") from None
        if n < 1 or k < 32 or k % 32:
            raise ValueError(f"shape {item!r}: need N >= 1 and K a positive multiple of 32")
        out.append((n, k))
    return out


def random_weight(fmt: str, N: int, K: int, rng) -> ops.PackedWeight:
    """Random plain blocks with fp16 scales in [1e-3, 1e-2), packed for the kernel chosen for `fmt`."""
    f = get_format(fmt)
    if f.quantize is None and fmt not in CODEBOOKS:
        raise ValueError(f"bench kernels has no random weights for format {fmt}")
    blocks = rng.integers(0, 256, size=(N * (K // 32), f.block_bytes), dtype=np.uint8)
    scales = rng.uniform(1e-3, 1e-2, size=N * (K // 32)).astype(np.float16)
    blocks[:, :2] = scales.view(np.uint8).reshape(-1, 2)
    aux = None
    if fmt in CODEBOOKS:      # learned-table formats: the default table count, tables in the learner's range
        from ..formats.cb import TABLE_RANGE
        ids = rng.integers(0, CODEBOOKS[fmt], size=len(blocks)).astype(np.uint16)   # id: scale word bits 0-3
        words = (scales.view(np.uint16) & np.uint16(0xFFF0)) | ids
        blocks[:, :2] = words.astype("<u2").view(np.uint8).reshape(-1, 2)
        aux = rng.integers(*TABLE_RANGE[fmt], size=(CODEBOOKS[fmt], 16), endpoint=True).astype(np.int8)
    return ops.PackedWeight.from_blocks(blocks.reshape(N, -1), fmt, N, K, aux=aux)


def blas_info() -> dict:
    """Which BLAS numpy uses and with which kernel (threadpoolctl, if installed), and OPENBLAS_CORETYPE."""
    info = {"openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        from threadpoolctl import threadpool_info
        blas = [d for d in threadpool_info() if d.get("user_api") == "blas"]
        if blas:
            info.update({k: blas[0].get(k) for k in ("internal_api", "version", "architecture", "num_threads")})
    except ImportError:
        info["internal_api"] = "unknown (pip install threadpoolctl to see it)"
    return info


class _BlasThreads:
    """Limit numpy's BLAS to n threads while timing it (needs threadpoolctl; otherwise numpy keeps its own)."""

    def __init__(self, n):
        self.n, self.ctl = n, None

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
            self.ctl = threadpool_limits(limits=self.n, user_api="blas")
        except ImportError:
            pass
        return self

    def __exit__(self, *exc):
        if self.ctl is not None:
            self.ctl.restore_original_limits()


def _time_pair(fa, fb, reps):
    """Warm up both, then alternate A B A B; returns the lists of seconds (fb may be None)."""
    fa()
    if fb:
        fb()
    ta, tb = [], []
    for _ in range(reps):
        t = time.perf_counter(); fa(); ta.append(time.perf_counter() - t)
        if fb:
            t = time.perf_counter(); fb(); tb.append(time.perf_counter() - t)
    return ta, tb


def measure_machine(threads) -> dict:
    """Ceilings for this run (roofline.py): read bandwidth over 1 GiB per thread count, and the clock as the best of
    many short add chains (0.5 ms each at 3 GHz), so a busy machine's time slices do not pass for a slow clock."""
    return {"clock_ghz": roofline.clock_hz(iters=200_000, reps=400) / 1e9,
            "int8_macs_per_cycle_per_core": roofline.int8_macs_per_cycle(),
            "bandwidth_gbs": {str(t): roofline.bandwidth(t) / 1e9 for t in threads}}


def run(formats=None, threads=(1, 2), shapes=None, quick=False, reps=None, numpy_cmp=True, log=print) -> dict:
    formats = formats or (["q4_0"] if quick else FORMATS)
    shapes = shapes or (QUICK_SHAPES if quick else SHAPES)
    gemv_reps, gemm_reps = (reps, reps) if reps else ((5, 2) if quick else (9, 3))
    old_threads = ops.get_num_threads()
    log(f"measuring this machine: read bandwidth over 1 GiB at {','.join(map(str, threads))} thread(s), clock ...")
    roof = measure_machine(list(threads))
    macs = roof["int8_macs_per_cycle_per_core"]
    res = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "runtime": ops.runtime_info()}, "roofline": roof, "blas": blas_info() if numpy_cmp else None,
           "gemm_M": GEMM_M, "rows": []}
    rng = np.random.default_rng(0)
    log(_HEAD)
    try:
        for (N, K) in shapes:
            wf = rng.standard_normal((N, K), dtype=np.float32) if numpy_cmp else None
            x1 = rng.standard_normal((1, K), dtype=np.float32)
            xm = rng.standard_normal((GEMM_M, K), dtype=np.float32)
            o1, om = np.empty((1, N), np.float32), np.empty((GEMM_M, N), np.float32)
            f1, fm = np.empty((1, N), np.float32), np.empty((GEMM_M, N), np.float32)
            for fmt in formats:
                w = random_weight(fmt, N, K, rng)
                for t in threads:
                    ops.set_num_threads(t)
                    with _BlasThreads(t):
                        nv = (lambda: np.matmul(x1, wf.T, out=f1)) if numpy_cmp else None
                        nm = (lambda: np.matmul(xm, wf.T, out=fm)) if numpy_cmp else None
                        tv, tvn = _time_pair(lambda: ops.linear(x1, w, o1), nv, gemv_reps)
                        tm, tmn = _time_pair(lambda: ops.linear(xm, w, om), nm, gemm_reps)
                    sv, sm = statistics.median(tv), statistics.median(tm)
                    gbs = w.data.nbytes / sv / 1e9
                    gmacs = GEMM_M * N * K / sm / 1e9
                    bw = roof["bandwidth_gbs"][str(t)]
                    peak = macs * roof["clock_ghz"] * t
                    row = {"format": fmt, "kernel": w.kernel["name"], "N": N, "K": K, "threads": t,
                           "weight_bytes": int(w.data.nbytes),
                           "gemv_ms": sv * 1e3, "gemv_ms_all": [v * 1e3 for v in tv], "gemv_gbs": gbs,
                           "gemv_frac_bw": gbs / bw,
                           "gemm_ms": sm * 1e3, "gemm_ms_all": [v * 1e3 for v in tm], "gemm_gmacs": gmacs,
                           "gemm_frac_peak": gmacs / peak,
                           "gemm_macs_per_cycle_core": gmacs / (roof["clock_ghz"] * t)}
                    if numpy_cmp:
                        row.update({"numpy_gemv_ms": statistics.median(tvn) * 1e3,
                                    "numpy_gemm_ms": statistics.median(tmn) * 1e3})
                        row["gemv_speedup_vs_numpy"] = row["numpy_gemv_ms"] / row["gemv_ms"]
                        row["gemm_speedup_vs_numpy"] = row["numpy_gemm_ms"] / row["gemm_ms"]
                    res["rows"].append(row)
                    log(_fmt_row(row))
    finally:
        ops.set_num_threads(old_threads)
    add_q4_0_ratios(res)
    return res


def add_q4_0_ratios(res: dict) -> None:
    """Each row's speed relative to q4_0 on the same shape and threads (q4_0 median time / the row's): the
    measure the codebook issue's goals are stated in. Rows without a q4_0 twin get none."""
    q4 = {(r["N"], r["K"], r["threads"]): r for r in res["rows"] if r["format"] == "q4_0"}
    for r in res["rows"]:
        base = q4.get((r["N"], r["K"], r["threads"]))
        if base is not None and r["format"] != "q4_0":
            r["gemv_vs_q4_0"] = base["gemv_ms"] / r["gemv_ms"]
            r["gemm_vs_q4_0"] = base["gemm_ms"] / r["gemm_ms"]


_HEAD = (f"{'format':7s} {'N x K':>11s} {'t':>2s} | {'GEMV ms':>8s} {'GB/s':>6s} {'%BW':>5s} {'x np':>5s} | "
         f"{'GEMM ms':>8s} {'GMAC/s':>7s} {'MAC/c/core':>10s} {'%peak':>6s} {'x np':>5s}")


def _fmt_row(r: dict) -> str:
    npv = f"{r['gemv_speedup_vs_numpy']:5.1f}" if "gemv_speedup_vs_numpy" in r else f"{'-':>5s}"
    npm = f"{r['gemm_speedup_vs_numpy']:5.1f}" if "gemm_speedup_vs_numpy" in r else f"{'-':>5s}"
    return (f"{r['format']:7s} {r['N']:>5d}x{r['K']:<5d} {r['threads']:>2d} | {r['gemv_ms']:8.3f} {r['gemv_gbs']:6.1f} "
            f"{100 * r['gemv_frac_bw']:4.0f}% {npv} | {r['gemm_ms']:8.1f} {r['gemm_gmacs']:7.1f} "
            f"{r['gemm_macs_per_cycle_core']:10.1f} {100 * r['gemm_frac_peak']:5.0f}% {npm}")


def summary(res: dict) -> str:
    roof, lines = res["roofline"], []
    bw = ", ".join(f"{t} thread{'s' if t != '1' else ''} {v:.1f} GB/s" for t, v in roof["bandwidth_gbs"].items())
    lines.append(f"machine: read bandwidth {bw}; clock {roof['clock_ghz']:.2f} GHz (add chain); int8 peak "
                 f"{roof['int8_macs_per_cycle_per_core']} MAC/cycle/core")
    if res.get("blas"):
        b = res["blas"]
        lines.append(f"numpy BLAS: {b.get('internal_api')} {b.get('version') or ''} kernel={b.get('architecture')}"
                     f" OPENBLAS_CORETYPE={b.get('openblas_coretype')}")
    lines.append(f"GEMM M={res['gemm_M']}; %BW = GEMV weight GB/s / read bandwidth at the same threads; "
                 "%peak = GMAC/s / (MAC/cycle/core x clock x threads); x np = numpy float32 time / ours")
    rel = [r for r in res["rows"] if "gemv_vs_q4_0" in r]
    if rel:
        lines.append("vs q4_0 (q4_0 median time / format's, same shapes and threads; > 1 = faster than q4_0):")
        for fmt in dict.fromkeys(r["format"] for r in rel):
            for t in sorted({r["threads"] for r in rel if r["format"] == fmt}):
                rs = [r for r in rel if r["format"] == fmt and r["threads"] == t]
                v, m = [r["gemv_vs_q4_0"] for r in rs], [r["gemm_vs_q4_0"] for r in rs]
                lines.append(f"  {fmt} {t} thread(s): GEMV {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f}), "
                             f"GEMM {statistics.median(m):.2f} ({min(m):.2f}-{max(m):.2f}) over {len(rs)} shape(s)")
    for t in sorted({r["threads"] for r in res["rows"]}):
        rows = [r for r in res["rows"] if r["threads"] == t]
        # best repetition too: on a shared machine it is the closest reading of what the code can do
        best_v = statistics.median(r["gemv_frac_bw"] * r["gemv_ms"] / min(r["gemv_ms_all"]) for r in rows)
        best_m = statistics.median(r["gemm_macs_per_cycle_core"] * r["gemm_ms"] / min(r["gemm_ms_all"]) for r in rows)
        lines.append(f"  {t} thread(s): median GEMV {100 * statistics.median(r['gemv_frac_bw'] for r in rows):.0f}% of "
                     f"bandwidth, median GEMM {statistics.median(r['gemm_macs_per_cycle_core'] for r in rows):.1f} "
                     f"MAC/cycle/core ({100 * statistics.median(r['gemm_frac_peak'] for r in rows):.0f}% of peak); "
                     f"best reps: {100 * best_v:.0f}%, {best_m:.1f} MAC/cycle/core")
    return "\n".join(lines)


def main(args) -> int:
    threads = _int_list(args.threads, "--threads")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()] if args.formats else None
    for f in formats or []:
        if get_format(f).quantize is None and f not in CODEBOOKS:
            raise ValueError(f"bench kernels supports {', '.join(FORMATS + list(CODEBOOKS))}, not {f}")
    shapes = _shapes(args.shapes) if args.shapes else None
    if args.reps is not None and args.reps < 1:
        raise ValueError("--reps must be >= 1")
    res = run(formats, threads, shapes, quick=args.quick, reps=args.reps, numpy_cmp=not args.no_numpy,
              log=lambda s: print(s, flush=True))
    print(summary(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {args.json}")
    return 0
