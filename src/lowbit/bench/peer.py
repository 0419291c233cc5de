"""llama.cpp as a peer, through llama-cpp-python, in a subprocess.

llama-cpp-python compiles llama.cpp from source, so it lives in its own cached venv (scripts/peer_venv.sh) unless
lowbit's own environment already has it. The parent (`Peer`) talks to a long-lived worker (this same file run as a
script by the peer's python) over stdin/stdout, one JSON object per line, so lowbit and llama.cpp can alternate
A B A B within one run with both models loaded. This file imports only the standard library at top level: the
peer venv does not have lowbit installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_VENV = os.environ.get("LOWBIT_PEER_VENV", "/work/cache/peer-venv")


def peer_python() -> str:
    """A python that can `import llama_cpp`: lowbit's own, else the cached peer venv's."""
    try:
        import llama_cpp  # noqa: F401
        return sys.executable
    except ImportError:
        pass
    py = Path(DEFAULT_VENV) / "bin" / "python"
    if py.exists():
        return str(py)
    raise RuntimeError(
        f"llama.cpp peer not available: `import llama_cpp` fails here and there is no peer venv at {DEFAULT_VENV}. "
        "Build it once with scripts/peer_venv.sh (compiles llama.cpp, ~6-9 min) or `pip install lowbit[peer]`; "
        "set LOWBIT_PEER_VENV to use another venv.")


class Peer:
    """One llama.cpp model in a worker process. Methods mirror lowbit's bench/eval needs."""

    def __init__(self, model: str, n_ctx: int = 1024, n_threads: int = 1, logits_all: bool = False,
                 n_batch: int = 512):
        env = dict(os.environ)
        self.proc = subprocess.Popen([peer_python(), os.path.abspath(__file__), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._call(op="load", model=str(model), n_ctx=n_ctx, n_threads=n_threads,
                               logits_all=logits_all, n_batch=n_batch)

    def _call(self, **req):
        if self.proc.poll() is not None:
            raise RuntimeError(f"llama.cpp peer worker exited with code {self.proc.returncode}")
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"llama.cpp peer worker died during {req['op']!r} (see its stderr above)")
        resp = json.loads(line)
        if "error" in resp:
            raise RuntimeError(f"llama.cpp peer: {resp['error']}")
        return resp

    def set_threads(self, n: int):
        return self._call(op="threads", n=n)

    def pp(self, tokens, depth=()) -> float:
        """Seconds to prefill `tokens` after `depth` tokens already in the cache (not timed; llama-bench -d)."""
        return self._call(op="pp", tokens=list(map(int, tokens)), depth=list(map(int, depth)))["seconds"]

    def tg(self, n: int, token: int, depth=()) -> float:
        """Seconds to decode n single tokens after `depth` tokens in the cache (llama-bench tg, -d)."""
        return self._call(op="tg", n=n, token=int(token), depth=list(map(int, depth)))["seconds"]

    def logits(self, tokens, out_path: str) -> str:
        """Full-sequence logits [len(tokens), vocab] float32, written to out_path (.npy)."""
        return self._call(op="logits", tokens=list(map(int, tokens)), out=str(out_path))["out"]

    def tokenize(self, text: str, add_bos: bool = True):
        return self._call(op="tokenize", text=text, add_bos=add_bos)["tokens"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self._call(op="quit")
            except (RuntimeError, BrokenPipeError, json.JSONDecodeError):
                pass
            self.proc.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def quantize(src: str, dst: str, ftype: str = "Q4_K_M", threads: int = 0) -> str:
    """llama.cpp's own quantizer (llama_model_quantize) on a GGUF, e.g. F16 -> Q4_K_M, in the peer's python."""
    r = subprocess.run([peer_python(), os.path.abspath(__file__), "--quantize", str(src), str(dst), ftype,
                        str(threads)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp quantize {src} -> {ftype} failed: {r.stderr.strip()[-2000:]}")
    return dst


# ---------------------------------------------------------------- worker side (runs in the peer venv)

def _quantize_main(src, dst, ftype, threads):
    import ctypes
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype.upper()}")
    params.nthread = int(threads)
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize returned {rc}")


def _worker():
    import numpy as np
    import llama_cpp

    out = sys.stdout
    sys.stdout = sys.stderr  # llama.cpp/python chatter must not corrupt the protocol stream
    llm = None

    def fresh():
        llm.reset()                      # n_tokens = 0; the next eval removes every cached position
        llm._ctx.kv_cache_clear()

    def sync():
        llama_cpp.llama_synchronize(llm.ctx)   # as llama-bench: decode may return before the graph is done

    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "quit":
                resp = {"ok": True}
            elif op == "load":
                llm = llama_cpp.Llama(model_path=req["model"], n_ctx=req["n_ctx"], n_threads=req["n_threads"],
                                      n_threads_batch=req["n_threads"], n_batch=req["n_batch"],
                                      n_ubatch=req["n_batch"], logits_all=req["logits_all"], verbose=False,
                                      seed=0)
                resp = {"n_vocab": llm.n_vocab(), "version": llama_cpp.__version__,
                        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace")}
            elif op == "threads":
                # the context keeps its own thread counts; Llama re-creates nothing, so set both directly
                llama_cpp.llama_set_n_threads(llm.ctx, req["n"], req["n"])
                resp = {"ok": True}
            elif op == "pp":
                fresh()
                if req.get("depth"):
                    llm.eval(req["depth"])
                    sync()
                t = time.perf_counter()
                llm.eval(req["tokens"])
                sync()
                resp = {"seconds": time.perf_counter() - t}
            elif op == "tg":
                fresh()
                if req.get("depth"):
                    llm.eval(req["depth"])
                    sync()
                tok = req["token"]
                t = time.perf_counter()
                for _ in range(req["n"]):
                    llm.eval([tok])
                    sync()
                resp = {"seconds": time.perf_counter() - t}
            elif op == "logits":
                fresh()
                llm.eval(req["tokens"])
                np.save(req["out"], np.asarray(llm.scores[: len(req["tokens"])], dtype=np.float32))
                resp = {"out": req["out"]}
            elif op == "tokenize":
                resp = {"tokens": llm.tokenize(req["text"].encode(), add_bos=req["add_bos"], special=False)}
            else:
                resp = {"error": f"unknown op {op!r}"}
        except Exception as e:  # report to the parent instead of dying silently
            resp = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(resp) + "\n")
        out.flush()
        if op == "quit":
            break


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker()
    elif sys.argv[1:2] == ["--quantize"]:
        _quantize_main(*sys.argv[2:6])
