"""`lowbit serve -m MODEL`: OpenAI-compatible HTTP server (/v1/models, /v1/completions, /v1/chat/completions,
/health). See docs/server.md."""
import os
import sys


def add_arguments(p):
    p.add_argument("-m", "--model", default=None,
                   help="GGUF file, HF safetensors directory or known name (default: the embedded stories260K)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("LOWBIT_API_KEY"),
                   help="require `Authorization: Bearer KEY` on every route but /health (env LOWBIT_API_KEY)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests allowed to wait for a slot; beyond that the server answers 503 (default 64)")
    p.add_argument("--parallel", type=int, default=16,
                   help="sequences decoded together (continuous batching slots, default 16)")
    p.add_argument("--ctx", type=int, default=None, help="context length per sequence (default: model's, max 4096)")
    p.add_argument("--format", default=None, help="runtime weight format: q4_0 (default), iq4_nl, q8_0, f16, f32")
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: physical cores)")
    p.add_argument("--model-id", default=None, help="name clients put in \"model\" (default: the file's stem)")
    p.add_argument("--prompt-cache", type=float, default=None, metavar="MIB",
                   help="memory for KV caches of finished requests, reused by later prompts that share their "
                        "prefix (a system prompt, earlier chat turns); 0 turns it off (default 256)")
    p.add_argument("--no-batching", action="store_true",
                   help="token round-robin between sequences instead of batched decode (for comparison)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def main(args):
    try:
        from ..server import create_app
        from ..server.lowbit_engine import DEFAULT_PROMPT_CACHE_MB, LowbitEngine
        from ..server.runner import serve_forever
    except ModuleNotFoundError as e:
        raise RuntimeError(f"`lowbit serve` needs {e.name}: reinstall lowbit (pip install lowbit)") from None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"lowbit serve: warning: listening on {args.host} without --api-key: anyone who can reach this "
              f"port can use the model", file=sys.stderr)
    if args.prompt_cache is not None and not args.prompt_cache >= 0:
        raise ValueError(f"--prompt-cache must be >= 0 MiB, got {args.prompt_cache}")
    engine = LowbitEngine.load(args.model, format=args.format, n_ctx=args.ctx, threads=args.threads,
                               model_id=args.model_id,
                               prompt_cache_mb=DEFAULT_PROMPT_CACHE_MB if args.prompt_cache is None
                               else args.prompt_cache)
    app = create_app(engine, api_key=args.api_key, max_queue=args.max_queue, max_active=args.parallel,
                     batching=not args.no_batching)
    print(f"lowbit serve: model '{engine.model_id}' (context {engine.n_ctx}) on http://{args.host}:{args.port}/v1"
          f"{' (API key required)' if args.api_key else ''}", file=sys.stderr)
    serve_forever(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
