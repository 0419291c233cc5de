"""Options shared by `run` and `chat`: model, runtime format, sampling."""
import sys


def add_model_arguments(p):
    p.add_argument("-m", "--model", default=None,
                   help="GGUF file, HF safetensors directory, or a known name (smollm2-135m); "
                        "default: the embedded stories260K")
    p.add_argument("--format", default=None, choices=["q4_0", "iq4_nl", "q8_0", "f16", "f32"],
                   help="runtime weight format (default q4_0; K %% 32 != 0 matrices stay float32)")
    p.add_argument("--pure", action="store_true", help="4-bit formats: also re-quantize ffn_down/output to 4 bits")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    p.add_argument("-c", "--ctx", type=int, default=None, help="context length (default: model's, at most 4096)")


def add_sampling_arguments(p, max_tokens=256):
    p.add_argument("-n", "--max-tokens", type=int, default=max_tokens, help="tokens to generate")
    p.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--repeat-last-n", type=int, default=64)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--stats", action="store_true", help="print prefill/decode speed to stderr")


def load_model(args):
    from ..api import load
    return load(args.model, format=args.format, n_ctx=args.ctx, threads=args.threads, pure=args.pure)


def sampling_kwargs(args):
    return dict(max_tokens=args.max_tokens, temperature=args.temp, top_k=args.top_k, top_p=args.top_p,
                min_p=args.min_p, repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
                seed=args.seed, stop=args.stop)


def print_stats(llm, file=sys.stderr):
    s = llm.last_stats
    if s is None:
        return
    print(f"\n[prompt {s.prompt_tokens} tok ({s.reused_tokens} cached), {s.prefill_tps:.1f} tok/s prefill; "
          f"generated {s.generated_tokens} tok, {s.decode_tps:.1f} tok/s decode; stop: {s.finish_reason}]", file=file)


def note_finish(llm, file=sys.stderr):
    s = llm.last_stats
    if s is not None and s.finish_reason == "context":
        print(f"\n[stopped: the context ({llm.model.n_ctx} tokens) is full]", file=file)
