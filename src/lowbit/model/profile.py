"""`python -m lowbit.model.profile [MODEL] [--format q4_0] [--threads 2]`: prefill and decode tokens/s, and the
share of decode time spent outside the linear kernels (the per-token Python + numpy overhead), measured by
re-running the same decode with every linear replaced by a no-op."""
import argparse
import time

import numpy as np

from . import weights


def _decode_time(m, n, start_tok=100, clock=time.perf_counter):
    m.reset()
    m.prefill([1, 2, 3, 4, 5, 6, 7, 8])
    t = clock()
    tok = start_tok
    for i in range(n):
        m.decode(tok + i)
    return (clock() - t) / n


def measure(llm, n_decode=64, n_prompt=128, repeats=3):
    m = llm.model
    vocab = m.config.vocab_size
    prompt = [int(t) for t in np.random.default_rng(0).integers(3, vocab, n_prompt)]
    pre = []
    for _ in range(repeats):
        m.reset()
        t = time.perf_counter()
        m.prefill(prompt)
        pre.append(time.perf_counter() - t)
    real = min(_decode_time(m, n_decode) for _ in range(repeats))
    real_cpu = min(_decode_time(m, n_decode, clock=time.process_time) for _ in range(repeats))
    saved = weights.PackedLinear.__call__, weights.FloatLinear.__call__
    try:
        weights.PackedLinear.__call__ = weights.FloatLinear.__call__ = lambda self, x, out: out
        noop = min(_decode_time(m, n_decode) for _ in range(repeats))
        noop_cpu = min(_decode_time(m, n_decode, clock=time.process_time) for _ in range(repeats))
    finally:
        weights.PackedLinear.__call__, weights.FloatLinear.__call__ = saved
    m.reset()
    # CPU seconds (all threads) are less sensitive than wall time to other processes on a shared machine
    return {"prefill_tok_s": n_prompt / min(pre), "decode_tok_s": 1 / real, "decode_ms": real * 1e3,
            "overhead_ms": noop * 1e3, "overhead_share": noop / real,
            "decode_cpu_ms": real_cpu * 1e3, "overhead_cpu_ms": noop_cpu * 1e3,
            "overhead_cpu_share": noop_cpu / real_cpu}


def main(argv=None):
    import lowbit
    ap = argparse.ArgumentParser(prog="python -m lowbit.model.profile")
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--format", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("-n", type=int, default=64, help="decode steps")
    ap.add_argument("-p", type=int, default=128, help="prompt tokens for prefill")
    a = ap.parse_args(argv)
    llm = lowbit.load(a.model, format=a.format, threads=a.threads, n_ctx=max(512, a.p + a.n + 16))
    r = measure(llm, a.n, a.p)
    print(f"{llm.path.name} [{llm.format}, {lowbit.get_num_threads()} threads]: prefill {r['prefill_tok_s']:.1f} tok/s "
          f"({a.p} tokens), decode {r['decode_tok_s']:.1f} tok/s ({r['decode_ms']:.2f} ms/token), "
          f"overhead outside linear {r['overhead_ms']:.2f} ms/token = {100 * r['overhead_share']:.1f}% of decode "
          f"(CPU time: {r['overhead_cpu_ms']:.2f} of {r['decode_cpu_ms']:.2f} ms/token = "
          f"{100 * r['overhead_cpu_share']:.1f}%)")


if __name__ == "__main__":
    main()
