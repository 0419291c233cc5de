"""`lowbit perplexity MODEL --text FILE --ctx 512 [--chunks N] [--kld-ref REF]`: perplexity as llama.cpp computes
it (second half of each chunk), KL divergence / top-1 agreement vs a reference model (cached), and optionally the
same numbers from llama.cpp on the same tokens (--check-llamacpp)."""
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..eval import perplexity as P


def add_arguments(p):
    p.add_argument("model", nargs="?", help="GGUF model (default: the embedded stories260K)")
    p.add_argument("--text", "-f", required=True, help="UTF-8 text file (e.g. wikitext-2-raw/wiki.test.raw)")
    p.add_argument("--ctx", "-c", type=int, default=512, help="chunk length in tokens (default 512)")
    p.add_argument("--chunks", type=int, help="score only the first N chunks")
    p.add_argument("--format", default="auto", help="lowbit runtime format; auto = the file's main type")
    p.add_argument("--kld-ref", help="reference model for KL divergence (same tokenizer), e.g. the F16 GGUF")
    p.add_argument("--ref-format", default="auto", help="runtime format of the reference (default: its file type)")
    p.add_argument("--threads", "-t", type=int, help="threads (default: physical cores)")
    p.add_argument("--check-llamacpp", action="store_true",
                   help="also score the same tokens with llama.cpp (llama-cpp-python, logits_all) and print the "
                        "difference")
    p.add_argument("--json", help="append the result to this JSON file (input for `lowbit report`)")
    p.add_argument("--label", help="name of this model/format in the JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint", help="save progress to this file every 8 chunks and resume from it when it "
                   "exists (same model, text and settings); removed when the run completes")


def _auto_format(path, fmt):
    if fmt != "auto":
        return fmt
    if path is None:
        return "f32"
    from ..bench.e2e import GGUF_TO_RUNTIME, gguf_summary
    t = gguf_summary(path)["main_type"]
    if t not in GGUF_TO_RUNTIME:
        raise ValueError(f"{path}: lowbit has no runtime format for {t}; pass --format")
    return GGUF_TO_RUNTIME[t]


def _load(path, fmt, ctx, threads):
    from .. import api
    return api.load(path, format=fmt, n_ctx=ctx, threads=threads, n_batch=ctx)


def main(args):
    text_path = Path(args.text)
    if not text_path.is_file():
        raise ValueError(f"text file not found: {text_path}")
    text = text_path.read_text(encoding="utf-8")
    fmt = _auto_format(args.model, args.format)
    from ..bench.e2e import limit_blas_threads
    _blas = limit_blas_threads()  # noqa: F841 (kept alive for the run)
    llm = _load(args.model, fmt, args.ctx, args.threads)
    model_path = str(llm.path)
    bos = P.bos_for(llm)
    tokens = llm.tokenizer.encode(text, add_bos=bos is not None)
    chunks = P.make_chunks(tokens, args.ctx, args.chunks, bos)
    vocab = llm.config.vocab_size
    print(f"{model_path} as {fmt}: {len(tokens)} tokens, {len(chunks)} chunks of {args.ctx}, "
          f"scoring {args.ctx - 1 - args.ctx // 2} per chunk, BOS {'replaces chunk starts' if bos is not None else 'none'}")

    ref, ref_ppl = None, None
    if args.kld_ref:
        ref_fmt = _auto_format(args.kld_ref, args.ref_format)
        cache = P.RefCache(args.kld_ref, ref_fmt, tokens, args.ctx, len(chunks), vocab)
        if not cache.ready:
            print(f"reference {args.kld_ref} ({ref_fmt}): computing log-probs once -> {cache.path}")
            # a disk memmap written chunk by chunk: what bounds it is the free space, not RAM
            gb = np.prod(cache.shape) * 4 / 1e9
            cache.path.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(cache.path.parent).free / 1e9
            if gb > free - 2:
                raise ValueError(f"the reference cache would take {gb:.1f} GB but {cache.path.parent} has "
                                 f"{free:.1f} GB free; use --chunks to limit it or set LOWBIT_CACHE elsewhere")
            print(f"reference cache: {gb:.1f} GB on disk ({free:.0f} GB free)")
            rllm = _load(args.kld_ref, ref_fmt, args.ctx, args.threads)
            if rllm.config.vocab_size != vocab:
                raise ValueError(f"reference vocab {rllm.config.vocab_size} != model vocab {vocab}")
            rtok = rllm.tokenizer.encode(text, add_bos=bos is not None)
            if list(rtok) != list(tokens):
                raise ValueError("the reference model tokenizes the text differently; KLD needs the same tokenizer")
            arr, keep = cache.writer()
            r = P.score(P.lowbit_logits_fn(rllm), chunks, progress=not args.no_progress, desc="reference",
                        keep_logp=keep)
            cache.finish(arr)
            ref_ppl = [r.ppl, r.ppl_err]
            print(f"reference PPL = {r.ppl:.4f} +/- {r.ppl_err:.4f}")
            del rllm
        else:
            print(f"reference log-probs from cache {cache.path}")
            ref_ppl = list(P.ppl_and_err(cache.target_nll(chunks)))
            print(f"reference PPL = {ref_ppl[0]:.4f} +/- {ref_ppl[1]:.4f} (from the cached log-probs)")
        ref = cache.reader()

    ckpt = None
    if args.checkpoint:   # the run's identity: model file, format, tokens, chunking and the reference used
        key = (f"{P.file_sha256(model_path)}|{fmt}|{P.tokens_sha256(tokens)}|{args.ctx}|{len(chunks)}|"
               f"{cache.path.name if ref is not None else '-'}")
        ckpt = P.Checkpoint(args.checkpoint, key)
        if ckpt.path.exists():
            print(f"resuming from {ckpt.path}")
    res = P.score(P.lowbit_logits_fn(llm), chunks, ref=ref, progress=not args.no_progress, checkpoint=ckpt)
    if ckpt is not None:
        ckpt.remove()
    print(f"lowbit PPL = {res.ppl:.4f} +/- {res.ppl_err:.4f}  ({res.n_scored} scored tokens, {res.n_chunks} chunks)")
    if res.kld:
        k = res.kld
        print(f"KLD vs reference: mean {k['kld_mean']:.6f} +/- {k['kld_stderr']:.6f}, median {k['kld_median']:.6f}, "
              f"p99 {k['kld_p99']:.6f}; same top-1: {100 * k['same_top']:.2f}%")
    out = {"model": args.label or Path(model_path).stem, "path": model_path, "format": fmt,
           "text": str(text_path), "ctx": args.ctx, **res.as_dict()}
    if ref_ppl is not None:
        out["ref_ppl"] = ref_ppl

    if args.check_llamacpp:
        from ..bench.peer import Peer
        print("llama.cpp (llama-cpp-python, logits_all=True) on the same chunks ...")
        with Peer(model_path, n_ctx=args.ctx, n_threads=args.threads or os.cpu_count(), logits_all=True,
                  n_batch=args.ctx) as peer, tempfile.TemporaryDirectory() as td:
            def fn(toks):
                return np.load(peer.logits(toks, os.path.join(td, "l.npy")))
            lc = P.score(fn, chunks, progress=not args.no_progress, desc="llama.cpp")
            ltoks = peer.tokenize(text, add_bos=bos is not None)
        same_tok = list(ltoks) == list(tokens)
        print(f"llama.cpp PPL = {lc.ppl:.4f} +/- {lc.ppl_err:.4f}; lowbit - llama.cpp = {res.ppl - lc.ppl:+.4f} "
              f"({100 * (res.ppl / lc.ppl - 1):+.3f}%); tokenization {'identical' if same_tok else 'DIFFERS'} "
              f"({len(tokens)} vs {len(ltoks)} tokens)")
        out["llamacpp"] = {"ppl": lc.ppl, "ppl_err": lc.ppl_err, "same_tokens": same_tok,
                           "n_tokens_llamacpp": len(ltoks)}
    if args.json:
        p = Path(args.json)
        data = json.loads(p.read_text()) if p.exists() else {}
        data.setdefault("perplexity", []).append(out)
        p.write_text(json.dumps(data, indent=1))
        print(f"wrote {p}")
    return 0
