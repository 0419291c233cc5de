"""The real engine: lowbit's LlamaModel behind the server's Engine interface.

Each request gets its own KV cache (numpy zeros, so pages are touched only as it fills); the single engine
thread points the shared model at that cache before each forward call. When several sequences are decoding,
`decode_batch` runs them as one M-row pass through the GEMM kernels (continuous batching); attention stays
per sequence because every sequence has its own cache and position.
"""
from __future__ import annotations

import threading
from typing import Iterator

import numpy as np

from ..logprobs import prefill_logprobs, token_logprobs
from ..model.kv_cache import KVCache
from ..model.llama import _FUSED
from ..model.weights import PackedLinear
from ..ops import _core
from ..sampling import Sampler, SamplerConfig
from .engine import SamplingParams
from .prompt_cache import PromptCache


def penalize(logits: np.ndarray, counts: dict, presence: float, frequency: float) -> np.ndarray:
    """OpenAI's rule: logit[t] -= presence * (count[t] > 0) + frequency * count[t], over generated tokens."""
    if not counts or (presence == 0.0 and frequency == 0.0):
        return logits
    ids = np.fromiter(counts.keys(), np.int64, len(counts))
    c = np.fromiter(counts.values(), np.float32, len(counts))
    z = np.array(logits, dtype=np.float32).reshape(-1)
    z[ids] -= presence + frequency * c
    return z


class Sequence:
    """One request's decoding state: cache, sampler, stream decoder, the token whose logits are next."""

    def __init__(self, engine: "LowbitEngine", prompt_ids: list[int], params: SamplingParams):
        self.e, self.params = engine, params
        cfg = engine.model.config
        self.cache = KVCache(cfg.n_layer, cfg.n_head_kv, engine.n_ctx, cfg.head_dim)
        # top_k/min_p/repeat_penalty off: OpenAI requests only carry temperature/top_p and the penalties below.
        self.sampler = Sampler(SamplerConfig(temperature=params.temperature, top_k=0, top_p=params.top_p,
                                             min_p=0.0, repeat_penalty=1.0, seed=params.seed))
        self.dec = engine.tokenizer.stream_decoder()
        # the runtime's decode writes K through transposed views made for the cache it was built with
        self.kT = [self.cache.k[i].transpose(0, 2, 1) for i in range(cfg.n_layer)]
        self.prompt_ids = prompt_ids
        self.ids = list(prompt_ids)   # the tokens whose K/V the cache holds (once they have run), for reuse
        self.reused = 0               # prompt tokens copied from the prompt cache instead of computed
        self.counts: dict[int, int] = {}
        self.last: int | None = None  # last sampled token, not yet run through the model
        self.last_lp = None           # token_logprobs() entry of the last sampled token (params.logprobs set)
        self.prompt_lps = None        # echo: entries of prompt tokens 1.. (token 0 has no context)

    def sample(self, logits: np.ndarray) -> int:
        raw = logits.reshape(-1)
        z = penalize(raw, self.counts, self.params.presence_penalty, self.params.frequency_penalty)
        tok = int(self.sampler(z, ()))
        if self.params.logprobs is not None:
            self.last_lp = token_logprobs(raw, [tok], self.params.logprobs)[0]
        self.counts[tok] = self.counts.get(tok, 0) + 1
        self.last = tok
        return tok


DEFAULT_PROMPT_CACHE_MB = 256


class LowbitEngine:
    def __init__(self, llm, model_id: str | None = None, prompt_cache_mb: float = DEFAULT_PROMPT_CACHE_MB):
        self.llm, self.model, self.tokenizer = llm, llm.model, llm.tokenizer
        self.model_id = model_id or llm.path.stem
        self.n_ctx = self.model.n_ctx
        self.vocab_size = self.model.config.vocab_size
        c = self.model.config
        self.prompt_cache = PromptCache(int(prompt_cache_mb * 2**20),
                                        token_bytes=2 * c.n_layer * c.n_head_kv * c.head_dim * 4)
        self.live: dict[int, Sequence] = {}      # started, not yet released: their prefixes can be copied too
        # requests are tokenized on worker threads; the tokenizer's parse_special switch is shared state
        self._encode_lock = threading.Lock()
        self.eot = set(int(t) for t in self.tokenizer.eot_ids)

    @classmethod
    def load(cls, path=None, format=None, n_ctx=None, threads=None, model_id=None,
             prompt_cache_mb: float = DEFAULT_PROMPT_CACHE_MB) -> "LowbitEngine":
        from ..api import load
        return cls(load(path, format=format, n_ctx=n_ctx, threads=threads), model_id, prompt_cache_mb)

    def encode(self, text: str) -> list[int]:
        with self._encode_lock:
            return self.tokenizer.encode(text) if text else []

    def chat_ids(self, messages: list[dict]) -> list[int]:
        if not self.tokenizer.chat_template:
            # no template in the model file (e.g. stories260K, a base model): the contents, one per line
            return self.encode("\n".join(m["content"] for m in messages))
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)  # ValueError -> 400
        with self._encode_lock:  # templates write BOS themselves; their special tokens are parsed
            return self.tokenizer.encode(text, add_bos=False, parse_special=True)

    # -- one sequence at a time (the round-robin path) ---------------------------------------------------------
    def _on(self, s: Sequence) -> None:
        """Point the shared model at this sequence's cache (only the engine thread runs the model)."""
        self.model.cache = s.cache
        if hasattr(self.model, "kT"):
            self.model.kT = s.kT

    def start(self, prompt_ids: list[int], params: SamplingParams) -> tuple[Sequence, int]:
        """Prefill the prompt into a fresh cache (the runtime's GEMM prefill; the longest prefix the prompt cache
        holds is copied instead of computed) and sample the first token."""
        s = Sequence(self, prompt_ids, params)
        self._on(s)
        if params.echo and params.logprobs is not None:    # every prompt row's logits: no reuse
            s.prompt_lps, last = prefill_logprobs(self.model, prompt_ids, params.logprobs)
            return s, s.sample(last)
        s.reused = self.prompt_cache.fill(prompt_ids, s.cache, [(x.ids, x.cache) for x in self.live.values()])
        tok = s.sample(self.model.prefill(prompt_ids[s.reused:]))
        self.live[id(s)] = s           # after the calls that can fail: a failed start is never released
        return s, tok

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def text_offsets(self, ids: list[int]) -> list[int]:
        """Where each token starts in detokenize(ids), by an incremental decode (one pass, not one per token)."""
        dec, out, n = self.tokenizer.stream_decoder(after_prompt=False), [], 0
        for t in ids:
            out.append(n)
            n += len(dec.push(t))
        return out

    def token_str(self, token_id: int) -> str:
        """A token's own text, as it reads inside a text (SentencePiece word starts keep their space)."""
        tok = self.tokenizer
        anchor = tok._space_anchor()
        if anchor is None:
            return tok.decode([token_id], skip_special=False)
        aid, atext = anchor
        return tok.decode([aid, token_id], skip_special=False)[len(atext):]

    def release(self, s: Sequence) -> None:
        """A sequence is over (finished, stopped or cancelled): its cache goes to the prompt cache."""
        self.live.pop(id(s), None)
        if s.cache is not None:
            self.prompt_cache.put(s.ids, s.cache)
            s.cache = s.kT = None

    def text(self, s: Sequence, tok: int) -> str:
        return s.dec.push(tok)

    def step(self, s: Sequence) -> int:
        return self.step_batch([s])[0]

    # -- many sequences per step (continuous batching) ---------------------------------------------------------
    def is_eos(self, tok: int) -> bool:
        return tok in self.eot

    def flush(self, s: Sequence) -> str:
        return s.dec.flush()

    def step_batch(self, seqs: list[Sequence]) -> list[int]:
        """Advance every sequence by its pending token; one sampled token each. A lone sequence takes the same
        code path (M = 1), so its answer cannot depend on how many others share the step."""
        out = []
        for i in range(0, len(seqs), self.model.n_batch):
            chunk = seqs[i: i + self.model.n_batch]
            logits = decode_batch(self.model, [s.cache for s in chunk], [s.last for s in chunk])
            for s in chunk:
                s.ids.append(s.last)
            out += [s.sample(logits[j]) for j, s in enumerate(chunk)]
        return out

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[tuple[int | None, str]]:
        s, tok = self.start(prompt_ids, params)
        try:
            while tok not in self.eot:
                yield tok, self.text(s, tok)
                if s.cache.pos >= self.n_ctx:
                    return
                tok = self.step(s)
            tail = s.dec.flush()
            if tail:
                yield None, tail
        finally:                 # also when the scheduler closes the generator (max_tokens, stop, cancel)
            self.release(s)


def _rows(w, x, out):
    """x[M, K] @ w -> out. Packed (quantized) weights, fused or in parts: one GEMM call; every row comes out
    bit-identical to a lone GEMV, so batching never changes a greedy answer. Float weights (BLAS) can round
    differently with M, so they go row by row, exactly as a lone decode does."""
    if isinstance(w, PackedLinear) or getattr(w, "_one", None) is not None:   # SplitLinear in one linear_parts
        return w(x, out)
    for i in range(x.shape[0]):
        w(x[i: i + 1], out[i: i + 1])
    return out


def _attend_numpy(m, li, caches, pos, qkv, attn):
    """RoPE, KV write and attention of each sequence's row in numpy (a C core without attn_decode)."""
    c = m.config
    hd, Hkv = c.head_dim, c.n_head_kv
    G = c.n_head // Hkv
    nq, nkv, M = m.nq, m.nkv, len(caches)
    qk = qkv[:, : nq + nkv].view(np.complex64).reshape(M, c.n_head + Hkv, hd // 2)
    qk *= m.rot[pos][:, None, :]                                                  # [M, 1, hd/2]
    for i, kv in enumerate(caches):
        p = pos[i]
        T = p + 1
        kc, vc = kv.k[li], kv.v[li]
        kc[:, p] = qkv[i, nq: nq + nkv].reshape(Hkv, hd)
        vc[:, p] = qkv[i, nq + nkv:].reshape(Hkv, hd)
        sc = np.matmul(qkv[i, :nq].reshape(Hkv, G, hd), kc[:, :T].transpose(0, 2, 1))   # [Hkv, G, T]
        sc *= m.scale
        sc -= sc.max(-1, keepdims=True)
        np.exp(sc, out=sc)
        sc /= np.sum(sc, -1, keepdims=True)
        np.matmul(sc, vc[:, :T], out=attn[i].reshape(Hkv, G, hd))


def decode_batch(m, caches: list[KVCache], toks: list[int]) -> np.ndarray:
    """One decode step for M independent sequences: the linear layers see M rows (GEMM kernels, weights read
    once per step instead of M times); RoPE and attention use each sequence's own position and cache.
    Every op is row-wise, so a row's result does not depend on M. Returns logits [M, vocab]."""
    c, M = m.config, len(toks)
    hd, Hkv = c.head_dim, c.n_head_kv
    pos = np.array([kv.pos for kv in caches])
    if (pos >= m.n_ctx).any():
        raise ValueError(f"context full (n_ctx={m.n_ctx}) for a sequence in the batch")
    x, h, qkv, attn, o, gu, ff, rowsq = (a[:M] for a in (m.x, m.h, m.qkv, m.attn, m.o, m.gu, m.ff, m.rowsq))
    m.embed.lookup(toks, x)
    for li, L in enumerate(m.layers):
        m._rmsnorm(x, L.attn_norm, h, rowsq)
        _rows(L.wqkv, h, qkv)                                                     # [M, nq + 2 nkv]
        if _FUSED:   # per sequence, the runtime decode's own RoPE + KV write + attention
            for i, kv in enumerate(caches):
                _core.attn_decode(c.n_head, Hkv, hd, int(pos[i]), kv.k.shape[2], qkv[i], m.rot[pos[i]],
                                  kv.k[li], kv.v[li], m.scores, attn[i])
        else:
            _attend_numpy(m, li, caches, pos, qkv, attn)
        _rows(L.wo, attn, o)
        x += o
        m._rmsnorm(x, L.ffn_norm, h, rowsq)
        _rows(L.wgu, h, gu)
        m.silu_mul(gu, ff)                                 # row-wise, the same op as a lone decode's
        _rows(L.wdown, ff, o)
        x += o
    for kv in caches:
        kv.pos += 1
    m._rmsnorm(x, m.output_norm, h, rowsq)
    logits = np.empty((M, c.vocab_size), np.float32)
    _rows(m.output, h, logits)
    return logits
