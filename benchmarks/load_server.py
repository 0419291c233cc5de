"""Load benchmark for `lowbit serve`: requests/s, generated tokens/s and latency percentiles (time to first token
and total) at 1, 4 and 16 concurrent streaming clients.

    python benchmarks/load_server.py                      # SmolLM2-135M if cached, else the embedded stories260K
    python benchmarks/load_server.py -m PATH --clients 1 4 16 --requests 32 --max-tokens 64
    python benchmarks/load_server.py --url http://127.0.0.1:8000 --model-id NAME   # an already running server

The server runs as a separate process (`lowbit serve` on a free loopback port) so client work does not share its
GIL; clients are asyncio + httpx with a minimal SSE reader to keep client CPU small (2-core machines).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

PROMPTS = ["Once upon a time", "The little dog", "One day, a girl named Sue", "Tom and his friend",
           "The sun was shining and", "In a small town there was", "Mom said", "The big red ball"]


def smollm2_path():
    env = os.environ.get("LOWBIT_SMOLLM2_GGUF")
    if env and Path(env).exists():
        return env
    try:
        from lowbit.registry import cached_path
        p = cached_path("smollm2-135m")
        return str(p) if p and p.exists() else None
    except ImportError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_request(client, url, model, prompt, max_tokens, chat):
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    body.update({"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt})
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream("POST", url + path, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
            ch = ev.get("choices") or []
            if ttft is None and ch and (ch[0].get("text") or (ch[0].get("delta") or {}).get("content")):
                ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return ttft if ttft is not None else total, total, tokens


async def run_level(url, model, clients, n_requests, max_tokens, chat, headers):
    queue = list(range(n_requests))
    results = []
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits, headers=headers) as client:
        async def worker():
            while queue:
                i = queue.pop()
                results.append(await one_request(client, url, model, PROMPTS[i % len(PROMPTS)], max_tokens, chat))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    ttft = np.array([r[0] for r in results]) * 1000
    total = np.array([r[1] for r in results]) * 1000
    toks = sum(r[2] for r in results)
    return {"clients": clients, "requests": len(results), "wall_s": wall, "req_s": len(results) / wall,
            "tok_s": toks / wall, "tokens": toks,
            **{f"ttft_p{p}": float(np.percentile(ttft, p)) for p in (50, 90, 99)},
            **{f"total_p{p}": float(np.percentile(total, p)) for p in (50, 90, 99)}}


def start_server(model, port, extra):
    cmd = [sys.executable, "-m", "lowbit.cli", "serve", "--port", str(port), "--log-level", "warning",
           "--model-id", "bench"] + (["-m", model] if model else []) + extra
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not come up in 300 s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None, help="model path/name (default: SmolLM2-135M if cached, else "
                                                          "the embedded stories260K)")
    ap.add_argument("--url", default=None, help="benchmark a running server instead of starting one")
    ap.add_argument("--model-id", default="bench")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=None, help="requests per level (default: 2 x clients, >= 8)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--chat", action="store_true", help="use /v1/chat/completions (model needs a chat template)")
    ap.add_argument("--server-args", default="", help="extra `lowbit serve` flags, e.g. '--no-batching'")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()

    proc = None
    model = a.model
    if a.url:
        url, model_id, name = a.url.rstrip("/"), a.model_id, a.url
    else:
        model = model or smollm2_path()
        name = model or "stories260K (embedded; SmolLM2-135M not cached)"
        proc, url = start_server(model, free_port(), a.server_args.split())
        model_id = "bench"
    headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
    try:
        # warm-up: first-touch of weights and caches
        asyncio.run(run_level(url, model_id, 1, 2, 8, a.chat, headers))
        rows = []
        print(f"model: {name}; max_tokens {a.max_tokens}, temperature 0, streaming "
              f"{'chat' if a.chat else 'completions'}; server flags: {a.server_args or '(default)'}")
        print(f"{'clients':>7} {'reqs':>5} {'req/s':>7} {'tok/s':>7} | {'TTFT ms p50':>11} {'p90':>7} {'p99':>7} | "
              f"{'total ms p50':>12} {'p90':>7} {'p99':>7}")
        for c in a.clients:
            n = a.requests or max(8, 2 * c)
            r = asyncio.run(run_level(url, model_id, c, n, a.max_tokens, a.chat, headers))
            rows.append(r)
            print(f"{c:7d} {r['requests']:5d} {r['req_s']:7.2f} {r['tok_s']:7.1f} | {r['ttft_p50']:11.0f} "
                  f"{r['ttft_p90']:7.0f} {r['ttft_p99']:7.0f} | {r['total_p50']:12.0f} {r['total_p90']:7.0f} "
                  f"{r['total_p99']:7.0f}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps({"model": name, "max_tokens": a.max_tokens, "rows": rows}, indent=1))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
