"""`lowbit bench MODEL`: end-to-end prompt processing (pp) and token generation (tg) in llama-bench's sense,
optionally side by side with llama.cpp on the same GGUF, with a roofline column.

pp<P>: prefill P tokens (BOS + random ids) from an empty cache; t/s = P / time.
tg<N>: decode N single tokens from an empty cache; t/s = N / time.
Each (engine, test, threads) gets a warm-up, then `reps` timed runs; with --vs-llamacpp the two engines alternate
A B, B A, ... so drift on a shared machine hits both. We report the median, the spread (min..max) and the ratio of
medians. Roofline: tg moves every weight byte once per token (bytes/token x t/s vs measured read bandwidth);
pp does one MAC per weight per token (MACs/s vs cores x clock x int8 MACs/cycle)."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

GGUF_TO_RUNTIME = {"Q4_0": "q4_0", "IQ4_NL": "iq4_nl", "Q8_0": "q8_0", "F16": "f16", "F32": "f32"}
CODEBOOK_FORMATS = ("cb4", "cb2")


def add_arguments(p):
    p.add_argument("model", help="GGUF model file (e.g. one from `lowbit make-synthetic`)")
    p.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens for pp (default 512; 0 = skip)")
    p.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens for tg (default 128; 0 = skip)")
    p.add_argument("-t", "--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("-r", "--reps", type=int, default=5, help="timed repetitions per test (default 5)")
    p.add_argument("-d", "--depth", type=int, default=0,
                   help="tokens already in the KV cache before each test, not timed (llama-bench -d; default 0)")
    p.add_argument("--format", default="auto",
                   help="lowbit runtime format (q4_0, iq4_nl, q8_0, f16, f32); auto = the file's main type")
    p.add_argument("--batch", type=int, default=512, help="lowbit prefill rows per step (default 512)")
    p.add_argument("--vs-llamacpp", action="store_true", help="also run llama.cpp (llama-cpp-python) on the file")
    p.add_argument("--llamacpp-only", action="store_true", help="run only llama.cpp (for formats lowbit lacks)")
    p.add_argument("--no-roofline", action="store_true", help="skip the bandwidth/clock probes")
    p.add_argument("--json", help="write results as JSON (appends rows if the file holds a previous run)")
    p.add_argument("--markdown", help="write the table as markdown")
    p.add_argument("--label", help="name for this model in the tables (default: file name)")


@dataclass
class Row:
    model: str
    engine: str             # lowbit | llama.cpp
    format: str             # weight format actually run
    test: str               # pp512 | tg128
    threads: int
    tps: list = field(default_factory=list)        # tokens/s of each timed repetition
    bpw: float = 0.0        # bits per weight of the matrices streamed per token
    weight_bytes: int = 0   # bytes streamed per decoded token
    macs_per_token: int = 0
    roofline: float = None  # fraction of the ceiling (bandwidth for tg, int8 peak for pp)

    @property
    def median(self) -> float:
        return statistics.median(self.tps) if self.tps else float("nan")

    def as_dict(self):
        d = asdict(self)
        d.update(median=self.median, min=min(self.tps, default=None), max=max(self.tps, default=None))
        return d


def _threads(s: str):
    try:
        ts = [int(x) for x in str(s).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--threads must be comma-separated integers, got {s!r}") from None
    if not ts or min(ts) < 1:
        raise ValueError(f"--threads needs positive counts, got {s!r}")
    return ts


def gguf_summary(path) -> dict:
    """Main weight type, bytes streamed per decoded token, MACs per prompt token, from the file itself."""
    from ..io.gguf import open_reader
    r = open_reader(path)      # lazy metadata arrays: 0.1 s instead of gguf.GGUFReader's 5 s on SmolLM2's vocab
    names = {t.name for t in r.tensors}
    tied = "output.weight" not in names
    from ..quantize.gguf_io import TABLES_SUFFIX, codebook_formats
    from ..formats.cb import BLOCK_BYTES
    cb = codebook_formats(r)          # `lowbit quantize` output: I8 tensors of cb blocks (+ their tables)
    counts, stream_bytes, stream_params, macs = {}, 0, 0, 0
    for t in r.tensors:
        if len(t.shape) != 2 or t.name.endswith(TABLES_SUFFIX):
            continue
        n, kind = int(t.n_elements), t.tensor_type.name
        if t.name in cb:              # weights = block bytes / block bytes per 32 weights
            kind = cb[t.name].upper()
            n = n // BLOCK_BYTES[cb[t.name]] * 32
        counts[kind] = counts.get(kind, 0) + n
        streamed = t.name != "token_embd.weight" or tied          # embedding is a row lookup unless tied
        if streamed:
            stream_bytes += int(t.n_bytes)
            stream_params += n
        if t.name.startswith("blk."):
            macs += n          # pp: the output matrix runs for the last token only, as in llama.cpp
    f = r.fields.get("general.name")
    name = f.contents() if f is not None else Path(path).stem
    return {"main_type": max(counts, key=counts.get), "weight_bytes": stream_bytes,
            "bpw": 8 * stream_bytes / max(1, stream_params), "macs_per_token": macs, "name": name,
            "synthetic": "lowbit.synthetic" in r.fields, "vocab": int(r.fields["tokenizer.ggml.tokens"].data.__len__())
            if "tokenizer.ggml.tokens" in r.fields else None}


class _Lowbit:
    name = "lowbit"

    def __init__(self, path, fmt, n_ctx, batch):
        from .. import api, ops
        self.ops = ops
        self.llm = api.load(path, format=fmt, n_ctx=n_ctx, n_batch=batch)
        self.model = self.llm.model
        self.weight_bytes = int(self.model.weight_bytes)

    def set_threads(self, t):
        self.ops.set_num_threads(t)

    def _fill(self, depth):
        self.model.reset()
        if len(depth):
            self.model.prefill(depth)

    def pp(self, tokens, depth=()):
        self._fill(depth)
        t = time.perf_counter()
        self.model.prefill(tokens)
        return time.perf_counter() - t

    def tg(self, n, token, depth=()):
        self._fill(depth)
        t = time.perf_counter()
        for _ in range(n):
            self.model.decode(token)
        return time.perf_counter() - t

    def close(self):
        pass


class _LlamaCpp:
    name = "llama.cpp"

    def __init__(self, path, n_ctx, threads):
        from .peer import Peer
        self.peer = Peer(path, n_ctx=n_ctx, n_threads=threads)

    def set_threads(self, t):
        self.peer.set_threads(t)

    def pp(self, tokens, depth=()):
        return self.peer.pp(tokens, depth)

    def tg(self, n, token, depth=()):
        return self.peer.tg(n, token, depth)

    def close(self):
        self.peer.close()


def limit_blas_threads():
    """numpy's OpenBLAS (attention matmuls) with its own 2 spinning threads next to lowbit's pool made a
    [9 x 128x64x128] batched matmul 36x slower on the loaded 2-core test machine; lowbit's pool already uses the
    cores, so BLAS gets one thread. Returns the threadpoolctl limiter (keep it alive) or None."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl not installed; numpy's BLAS threads may fight lowbit's pool "
              "(pip install threadpoolctl)")
        return None
    return threadpool_limits(limits=1, user_api="blas")


def run(path, n_prompt=512, n_gen=128, threads=(1, 2), reps=5, fmt="auto", batch=512, vs_llamacpp=False,
        llamacpp_only=False, roofline=True, label=None, log=print, depth=0) -> dict:
    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"model file not found: {path}")
    if reps < 1:
        raise ValueError("--reps must be >= 1")
    if n_prompt < 0 or n_gen < 0 or (n_prompt == 0 and n_gen == 0):
        raise ValueError("need -p > 0 or -n > 0")
    if depth < 0:
        raise ValueError(f"--depth must be >= 0, got {depth}")
    info = gguf_summary(path)
    label = label or Path(path).stem
    file_fmt = GGUF_TO_RUNTIME.get(info["main_type"], info["main_type"].lower())
    lb_fmt = file_fmt if fmt == "auto" else fmt
    # A codebook file keeps its cb matrices as they are; --format (default q4_0) is for the other matrices.
    load_fmt = lb_fmt
    if file_fmt in CODEBOOK_FORMATS:
        load_fmt, lb_fmt = (lb_fmt if fmt != "auto" else "q4_0"), file_fmt
    n_ctx = depth + n_prompt + n_gen + 8
    rng = np.random.default_rng(1234)
    vocab = info["vocab"] or 256
    prompt = [1] + rng.integers(3, vocab, size=max(0, n_prompt - 1)).tolist()
    tok = int(rng.integers(3, vocab))
    # with a depth, the cache first holds BOS + random tokens and the tests' prompt does not start with BOS
    pre = [1] + rng.integers(3, vocab, size=depth - 1).tolist() if depth else []
    if depth:
        prompt[0] = int(rng.integers(3, vocab))
    at = f"@d{depth}" if depth else ""

    _blas = limit_blas_threads()
    engines = []
    if not llamacpp_only:
        if load_fmt not in GGUF_TO_RUNTIME.values():
            raise ValueError(f"lowbit cannot run format {load_fmt!r} (file type {info['main_type']}); "
                             "pass --format or --llamacpp-only")
        log(f"loading {path} in lowbit as {lb_fmt} ...")
        engines.append(_Lowbit(path, load_fmt, n_ctx, batch))
    if vs_llamacpp or llamacpp_only:
        log("loading the same file in llama.cpp (llama-cpp-python, subprocess) ...")
        engines.append(_LlamaCpp(path, n_ctx, threads[0]))

    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    if roofline:
        from . import roofline as rl
        log("measuring bandwidth and clock ...")
        machine.update(rl.measure(threads))
    rows = []
    tests = ([("pp", n_prompt)] if n_prompt else []) + ([("tg", n_gen)] if n_gen else [])
    try:
        for t in threads:
            for e in engines:
                e.set_threads(t)
            for kind, n in tests:
                these = {}
                for e in engines:
                    fmt_name = lb_fmt if e.name == "lowbit" else info["main_type"].lower()
                    wb = e.weight_bytes if e.name == "lowbit" else info["weight_bytes"]
                    these[e.name] = Row(label, e.name, fmt_name, f"{kind}{n}{at}", t, bpw=round(info["bpw"], 3),
                                        weight_bytes=wb, macs_per_token=info["macs_per_token"])
                    (e.pp(prompt, pre) if kind == "pp" else e.tg(min(n, 8), tok, pre))   # warm-up
                for r in range(reps):
                    order = engines if r % 2 == 0 else engines[::-1]               # A B, B A, ...
                    for e in order:
                        s = e.pp(prompt, pre) if kind == "pp" else e.tg(n, tok, pre)
                        these[e.name].tps.append(n / s)
                for e in engines:
                    row = these[e.name]
                    if roofline and not depth:       # at a depth the KV cache is read too: no weight-only bound
                        if kind == "tg":
                            row.roofline = row.weight_bytes * row.median / (machine["bandwidth_gbs"][str(t)] * 1e9)
                        else:
                            peak = t * machine["clock_ghz"] * 1e9 * machine["int8_macs_per_cycle_per_core"]
                            row.roofline = row.macs_per_token * row.median / peak
                    rows.append(row)
                    log(f"  {row.engine:9s} {row.format:7s} {row.test:6s} t={t}: {row.median:8.2f} t/s "
                        f"[{min(row.tps):.2f} .. {max(row.tps):.2f}]")
    finally:
        for e in engines:
            e.close()
    machine["load_avg_end"] = os.getloadavg()
    return {"model": label, "path": path, "file": info, "machine": machine, "reps": reps,
            "rows": [r.as_dict() for r in rows], "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def _ratio(rows, row):
    if row["engine"] != "lowbit":
        return None
    peer = [r for r in rows if r["engine"] == "llama.cpp" and r["test"] == row["test"]
            and r["threads"] == row["threads"] and r["model"] == row["model"]]
    return row["median"] / peer[0]["median"] if peer else None


def table(result: dict, markdown=False) -> str:
    rows = result["rows"]
    head = ["model", "engine", "format", "bpw", "test", "t", "t/s (median)", "spread", "vs llama.cpp", "roofline"]
    lines = []
    for r in rows:
        ratio = _ratio(rows, r)
        kind = "BW" if r["test"].startswith("tg") else "int8 peak"
        lines.append([r["model"], r["engine"], r["format"], f"{r['bpw']:.2f}", r["test"], str(r["threads"]),
                      f"{r['median']:.2f}", f"{r['min']:.2f}..{r['max']:.2f}",
                      f"{ratio:.2f}x" if ratio else "", f"{100 * r['roofline']:.0f}% {kind}"
                      if r.get("roofline") is not None else ""])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 5 else "---:" for i in range(len(head))) + "|"]
        out += ["| " + " | ".join(l) + " |" for l in lines]
        return "\n".join(out)
    w = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = lambda l: "  ".join(s.ljust(w[i]) if i < 5 else s.rjust(w[i]) for i, s in enumerate(l))
    return "\n".join([fmt(head), fmt(["-" * x for x in w])] + [fmt(l) for l in lines])


def machine_line(result: dict) -> str:
    m = result["machine"]
    bw = ", ".join(f"{t}t {v:.1f} GB/s" for t, v in m.get("bandwidth_gbs", {}).items())
    s = f"{m['processor']}, {m['cpus']} cpus; load avg {m['load_avg_start'][0]:.1f} -> {m['load_avg_end'][0]:.1f}"
    if "clock_ghz" in m:
        s += f"; clock {m['clock_ghz']:.2f} GHz, int8 {m['int8_macs_per_cycle_per_core']} MAC/cycle/core; read BW {bw}"
    return s


def main(args) -> int:
    res = run(args.model, args.n_prompt, args.n_gen, _threads(args.threads), args.reps, args.format, args.batch,
              args.vs_llamacpp, args.llamacpp_only, not args.no_roofline, args.label, depth=args.depth)
    print()
    print(machine_line(res))
    print(table(res))
    if args.json:
        p = Path(args.json)
        runs = []
        if p.exists():
            prev = json.loads(p.read_text())
            runs = prev.get("runs", [prev]) if isinstance(prev, dict) else prev
        runs.append(res)
        p.write_text(json.dumps({"runs": runs}, indent=1))
        print(f"wrote {p} ({len(runs)} run(s))")
    if args.markdown:
        Path(args.markdown).write_text(f"{machine_line(res)}\n\n{table(res, markdown=True)}\n")
        print(f"wrote {args.markdown}")
    return 0
