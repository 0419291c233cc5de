"""Python API: load a model, generate or stream text, describe what loading did.

    import lowbit
    llm = lowbit.load()                                   # embedded stories260K
    print(lowbit.generate(llm, "Once upon a time", max_tokens=64, temperature=0))
    for piece in lowbit.stream_generate(llm, "Hello", max_tokens=32): print(piece, end="")
"""
from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

from .generate import GenStats, stream_text
from .io import ModelFileError
from .model.weights import RUNTIME_FORMATS
from .registry import resolve
from .sampling import Sampler, SamplerConfig


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _mapped_rss(path) -> int:
    """Resident bytes of this process's mappings of `path` (the GGUF while it is open)."""
    total, cur, name = 0, False, os.path.basename(os.fspath(path))
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    cur = line.rstrip().endswith(name)
                elif cur and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


def _trim_heap():
    """Give freed dequantization scratch back to the OS (glibc keeps it otherwise)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _import_loader_libraries():
    """The libraries every load uses (~7 MiB of RSS once per process): imported before the baseline RSS is taken,
    so "RSS added by loading" is what the model itself costs."""
    import gguf  # noqa: F401
    from . import tokenizer  # noqa: F401  (HF tokenizers)
    from .io import gguf as _gguf  # noqa: F401


class LLM:
    """A loaded model + tokenizer. Not thread-safe: one generation at a time."""

    def __init__(self, model, tokenizer, path, fmt, load_s, rss, rss_before=0):
        self.model, self.tokenizer, self.path, self.format = model, tokenizer, Path(path), fmt
        self.load_seconds, self.rss_after_load, self.rss_before_load = load_s, rss, rss_before
        self.last_stats: Optional[GenStats] = None
        self.rss_model_added = 0          # RSS added by building the weights (after the tokenizer)
        self.rss_tokenizer_added = 0      # RSS added by opening the file (header) and building the tokenizer
        self.load_stages = {}             # seconds per load stage

    @property
    def config(self):
        return self.model.config

    def encode_prompt(self, prompt: str, add_bos=None) -> list:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt:
            raise ValueError("empty prompt: give some text to continue (or use prompt_ids=[bos])")
        return self.tokenizer.encode(prompt, add_bos=add_bos)

    def stream(self, prompt: str = None, *, prompt_ids: Sequence[int] = None, max_tokens: int = 256,
               stop: Sequence[str] = (), sampler=None, temperature: float = 0.8, top_k: int = 40,
               top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
               seed: Optional[int] = None, add_bos=None, parse_special: bool = False) -> Iterator[str]:
        if prompt_ids is None:
            if prompt is None:
                raise ValueError("give a prompt or prompt_ids")
            if parse_special:
                if not prompt:
                    raise ValueError("empty prompt")
                prompt_ids = self.tokenizer.encode(prompt, add_bos=add_bos, parse_special=True)
            else:
                prompt_ids = self.encode_prompt(prompt, add_bos)
        n_ctx = self.model.n_ctx
        if len(prompt_ids) >= n_ctx:          # checked here, not lazily, so callers fail before printing anything
            from .model.llama import ContextFullError
            raise ContextFullError(0, len(prompt_ids), n_ctx, f"prompt too long: {len(prompt_ids)} tokens, but the "
                                   f"context holds {n_ctx} (prompt + at least one new token); shorten the prompt "
                                   f"or load with a larger n_ctx (model trained on {self.config.n_ctx_train})")
        if sampler is None:
            sampler = Sampler(SamplerConfig(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed))
        self.last_stats = GenStats()
        return stream_text(self.model, self.tokenizer, prompt_ids, sampler, max_tokens, stop, self.last_stats)

    def generate(self, prompt: str = None, **kw) -> str:
        return "".join(self.stream(prompt, **kw))

    def logprobs(self, prompt: str = None, *, prompt_ids: Sequence[int] = None, top: int = 0,
                 add_bos=None) -> list[dict]:
        """Score a text: for each token, its log-probability given the tokens before it (None for the first) and
        the `top` most likely tokens there: [{"id", "text", "logprob", "top": [(id, logprob)]}]. The model's
        own distribution (float64 log-softmax of the logits); the prompt runs in 256-row pieces."""
        ids = self._ids_to_score(prompt, prompt_ids, add_bos)
        entries = self._score(ids, top)
        texts = self.tokenizer.stream_decoder(skip_special=False, after_prompt=False)
        out = []
        for tok, lp, tp in [(ids[0], None, [])] + entries:       # a token's text may wait for the next one's bytes
            out.append({"id": tok, "text": texts.push(tok), "logprob": lp, "top": tp})
        if out:
            out[-1]["text"] += texts.flush()
        return out

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        """lm-eval's loglikelihood request: (sum of the continuation tokens' log-probabilities after the context,
        whether greedy decoding would have produced exactly them). The continuation's tokens are those of
        context + continuation past the context's own tokens (split as lm-eval does, at the token boundary)."""
        if not continuation:
            raise ValueError("empty continuation: nothing to score")
        if not context and self.tokenizer.bos_id is None:
            raise ValueError("empty context and no BOS token: the first token has nothing to be scored against")
        ctx = self.tokenizer.encode(context) if context else [self.tokenizer.bos_id]
        whole = self.tokenizer.encode(context + continuation) if context else self.tokenizer.encode(continuation)
        if whole[:len(ctx)] != ctx:                  # the join merged tokens: score the pieces side by side
            whole = ctx + self.tokenizer.encode(continuation, add_bos=False)
        n = len(ctx)
        if len(whole) <= n:
            raise ValueError("the continuation adds no tokens")
        self._ids_to_score(None, whole, None)
        cont = self._score(whole, 1)[n - 1:]                        # entries[i] scores whole[i + 1]
        return sum(lp for _, lp, _ in cont), all(top[0][0] == tok for tok, _, top in cont)

    def _ids_to_score(self, prompt, prompt_ids, add_bos):
        if prompt_ids is None:
            if prompt is None:
                raise ValueError("give a prompt or prompt_ids")
            prompt_ids = self.encode_prompt(prompt, add_bos)
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise ValueError("nothing to score")
        vocab = self.config.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary (size {vocab})")
        if len(ids) > self.model.n_ctx:
            from .model.llama import ContextFullError
            raise ContextFullError(0, len(ids), self.model.n_ctx, f"text too long to score: {len(ids)} tokens, "
                                   f"the context holds {self.model.n_ctx}")
        return ids

    def _score(self, ids, top):
        """Run ids from an empty cache; afterwards the cache holds them (generate() may reuse the prefix)."""
        from .logprobs import prefill_logprobs
        cached = self.model.__dict__.setdefault("cached_ids", [])
        cached.clear()
        self.model.cache.pos = 0
        entries, _ = prefill_logprobs(self.model, ids, top)
        cached.extend(ids)
        return entries

    def chat_prompt(self, messages) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)

    def chat(self, messages, **kw) -> Iterator[str]:
        """Stream the assistant's reply to a list of {"role", "content"} messages (the model's template)."""
        kw.setdefault("add_bos", False)    # templates write BOS themselves when the model wants it
        return self.stream(self.chat_prompt(messages), parse_special=True, **kw)

    def memory_lines(self) -> list:
        """What loading cost: RSS = resident memory of this process (/proc/self/statm), at load start and end."""
        wb, before, after = self.model.weight_bytes, self.rss_before_load, self.rss_after_load
        added, mib = after - before, 2 ** 20
        tok = max(0, self.rss_tokenizer_added)
        t = self.load_stages
        return [
            f"runtime weight bytes:   {wb / mib:8.2f} MiB (packed matrices + norms; embedding rows are read from "
            f"the file on lookup)",
            f"RSS before loading:     {before / mib:8.2f} MiB (interpreter + numpy + the libraries loading uses: "
            f"tokenizers, gguf)",
            f"RSS after loading:      {after / mib:8.2f} MiB = {after / wb:.2f} x weight bytes (whole process)",
            f"RSS added by loading:   {added / mib:8.2f} MiB = {added / wb:.2f} x weight bytes",
            f"  of which file header + tokenizer: {tok / mib:.2f} MiB; weights + buffers: "
            f"{self.rss_model_added / mib:.2f} MiB = {self.rss_model_added / wb:.2f} x weight bytes",
            f"load time:              {self.load_seconds:.2f} s (open {t.get('open', 0):.2f}, tokenizer "
            f"{t.get('tokenizer', 0):.2f}, weights {t.get('weights', 0):.2f})"]

    def describe(self) -> str:
        m, c = self.model, self.config
        rope = f"rope base {c.rope_base:g}"
        if c.rope_scale != 1.0:
            rope += f" / linear x{c.rope_scale:g}"
        if c.rope_freq_factors is not None:
            rope += f", frequency factors {min(c.rope_freq_factors):g}-{max(c.rope_freq_factors):g}"
        lines = [f"model:      {self.path}",
                 f"arch:       {c.arch} ({c.name}): {c.n_layer} layers, d={c.n_embd}, ff={c.n_ff}, heads "
                 f"{c.n_head}/{c.n_head_kv} kv, vocab {c.vocab_size}, {rope}, "
                 f"{'tied' if c.tied_embeddings else 'separate'} output",
                 f"context:    {m.n_ctx} (trained {c.n_ctx_train}); KV cache {m.cache.nbytes / 2**20:.1f} MiB "
                 f"reserved, touched as it fills",
                 f"format:     {self.format}",
                 "tensors:"]
        for name, src_t, shape, fmt, what in m.log:
            lines.append(f"  {name:34s} {src_t:6s} {'x'.join(map(str, shape)):>12s} -> {fmt:6s} {what}")
        lines += self.memory_lines()
        return "\n".join(lines)


def _open_source(path: Path):
    if path.is_dir():
        from .io.safetensors import SafetensorsSource
        return SafetensorsSource(path)
    from .io.native import NativeSource, is_native
    if is_native(path):                              # pre-packed .lowbit file (lowbit convert)
        return NativeSource(path)
    from .io.gguf import GGUFSource
    src = GGUFSource(path)
    if "lowbit.cb.version" in src.reader.fields:    # written by `lowbit quantize --format cb4/cb2`
        from .quantize.gguf_io import CodebookSource
        return CodebookSource(src)
    return src


def _tokenizer_for(src, path: Path):
    from .tokenizer import Tokenizer
    if hasattr(src, "tokenizer"):                    # native files carry their own tokenizer record
        return src.tokenizer()
    if path.is_dir():
        if not (path / "tokenizer.json").exists():
            raise ModelFileError(f"{path}: missing tokenizer (no tokenizer.json in the directory)")
        tok = Tokenizer.from_hf_dir(path)
    else:
        if "tokenizer.ggml.tokens" not in src.reader.fields:
            raise ModelFileError(f"{path}: missing tokenizer (GGUF has no tokenizer.ggml.tokens)")
        try:
            tok = Tokenizer.from_gguf(src.reader)
        except (ModelFileError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:      # bad vocabularies fail in many ways (tokenizers panics are BaseException)
            raise ModelFileError(f"{path}: unusable tokenizer ({type(e).__name__}: {str(e)[:200]})") from None
    return tok


def load(path=None, format: Optional[str] = None, n_ctx: Optional[int] = None, threads: Optional[int] = None,
         n_batch: int = 64, pure: bool = False) -> LLM:
    """Load a GGUF file, a HF safetensors directory, a known model name (see `lowbit pull`), or, with no path,
    the embedded stories260K. format: q4_0 (default), iq4_nl, q8_0, f16 or f32; matrices whose K is not a
    multiple of 32 always stay float32. With a 4-bit format, ffn_down and output matrices that must be
    re-quantized (their file type is not already that format) stay q8_0 unless pure=True (model/weights.py)."""
    from .model import LlamaModel
    from . import ops
    fmt = (format or "q4_0").lower()
    if fmt not in RUNTIME_FORMATS:
        raise ValueError(f"unknown runtime format {format!r}; choose one of {', '.join(RUNTIME_FORMATS)}")
    if threads is not None:
        ops.set_num_threads(threads)
    p = resolve(path)
    _import_loader_libraries()        # counted in "RSS before loading", not in what this model adds
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    src = _open_source(p)
    if getattr(src, "format", None):                 # a .lowbit file is already in one format
        if format is not None and fmt != src.format:
            raise ValueError(f"{p} is pre-packed as {src.format}; convert again for {fmt}")
        fmt = src.format
    try:
        t1 = time.perf_counter()
        tok = _tokenizer_for(src, p)
        src.drop_metadata()      # the key/values (vocabulary, merges) are in the tokenizer now
        gc.collect()
        _trim_heap()
        rss_tok = _rss_bytes() - (0 if p.is_dir() else _mapped_rss(p))   # the mapping is dropped after load
        t2 = time.perf_counter()
        model = LlamaModel(src, fmt, n_ctx=n_ctx, n_batch=n_batch, pure=pure)
        if tok.vocab_size > model.config.vocab_size:    # token ids past the embedding rows: refuse at load
            raise ModelFileError(f"{p}: the tokenizer has {tok.vocab_size} tokens but the embedding only "
                                 f"{model.config.vocab_size} rows")
    finally:
        src.close()              # drop the file mapping: what was read for packing leaves our RSS
        del src
    gc.collect()
    _trim_heap()                 # glibc keeps freed re-quantization scratch in its heap otherwise
    t3 = time.perf_counter()
    llm = LLM(model, tok, p, fmt, t3 - t0, _rss_bytes(), rss0)
    llm.rss_model_added = llm.rss_after_load - rss_tok     # weights + buffers, without interpreter/tokenizer
    llm.rss_tokenizer_added = rss_tok - rss0
    llm.load_stages = {"open": t1 - t0, "tokenizer": t2 - t1, "weights": t3 - t2}
    return llm


def _as_llm(model, **load_kw) -> LLM:
    return model if isinstance(model, LLM) else load(model, **load_kw)


def generate(model=None, prompt: str = None, **kw) -> str:
    """Complete `prompt` with `model` (an LLM from load(), a path, a known name, or None for the embedded one)."""
    return _as_llm(model).generate(prompt, **kw)


def stream_generate(model=None, prompt: str = None, **kw) -> Iterator[str]:
    """Like generate(), yielding text pieces as they are decoded."""
    return _as_llm(model).stream(prompt, **kw)


def describe_model(path=None, format: Optional[str] = None, print_=True, pure: bool = False) -> str:
    """Load a model and report what happened to each tensor, weight bytes, RSS and load time (`lowbit info
    MODEL`)."""
    text = load(path, format=format, pure=pure).describe()
    if print_:
        print(text)
    return text
