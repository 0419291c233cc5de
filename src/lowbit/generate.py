"""Token generation loop: prefill the prompt (reusing any cached common prefix), then decode one token at a
time until max_tokens, an end-of-turn token, a stop string, or a full context (finish_reason "context": we stop
rather than slide the window, so nothing silently falls out of the model's view)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

from .model.llama import ContextFullError
from .sampling import Sampler


@dataclass
class GenStats:
    prompt_tokens: int = 0
    reused_tokens: int = 0          # prompt prefix already in the KV cache
    generated_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    finish_reason: str = ""         # "length" | "stop" | "eos" | "context"
    token_ids: list = field(default_factory=list)

    @property
    def prefill_tps(self):
        n = self.prompt_tokens - self.reused_tokens
        return n / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tps(self):
        return (self.generated_tokens - 1) / self.decode_s if self.decode_s and self.generated_tokens > 1 else 0.0


def _prefill(model, ids: Sequence[int], cached: list) -> tuple:
    """Keep the longest common prefix already in the cache (at least one prompt token is recomputed)."""
    p = 0
    lim = min(len(cached), len(ids) - 1)
    while p < lim and cached[p] == ids[p]:
        p += 1
    model.cache.pos = p
    del cached[p:]
    logits = model.prefill(ids[p:])
    cached.extend(ids[p:])
    return logits, p


def generate_ids(model, prompt_ids: Sequence[int], sampler: Callable = None, max_tokens: int = 256,
                 eot_ids: Sequence[int] = (), stats: Optional[GenStats] = None) -> Iterator[int]:
    """Yield sampled token ids. `sampler(logits, previous_ids) -> id`; `model` is a LlamaModel."""
    prompt_ids = [int(t) for t in prompt_ids]
    if not prompt_ids:
        raise ValueError("empty prompt: nothing to condition on")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    n_ctx = model.n_ctx
    if len(prompt_ids) >= n_ctx:
        raise ContextFullError(0, len(prompt_ids), n_ctx, f"prompt too long: {len(prompt_ids)} tokens, but the "
                               f"context holds {n_ctx} (prompt + at least one new token); shorten the prompt "
                               f"or load with a larger n_ctx (model trained on {model.config.n_ctx_train})")
    vocab = model.config.vocab_size
    bad = [t for t in prompt_ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary (size {vocab})")
    sampler = sampler or Sampler(temperature=0.0)
    stats = stats if stats is not None else GenStats()
    stats.prompt_tokens = len(prompt_ids)
    cached = model.__dict__.setdefault("cached_ids", [])
    t0 = time.perf_counter()
    try:
        logits, stats.reused_tokens = _prefill(model, prompt_ids, cached)
    except BaseException:
        cached.clear()
        raise
    stats.prefill_s = time.perf_counter() - t0
    history = list(prompt_ids)
    eot = set(int(t) for t in eot_ids)
    stats.finish_reason = "length"
    t1 = None
    for i in range(max_tokens):
        tok = int(sampler(logits.reshape(-1), history))
        if t1 is None:
            t1 = time.perf_counter()
        stats.generated_tokens += 1
        stats.token_ids.append(tok)
        history.append(tok)
        if tok in eot:
            stats.finish_reason = "eos"
            return
        yield tok
        if i + 1 == max_tokens:
            break
        if model.cache.pos >= n_ctx:
            stats.finish_reason = "context"
            return
        logits = model.decode(tok)
        cached.append(tok)
        stats.decode_s = time.perf_counter() - t1


def stream_text(model, tokenizer, prompt_ids, sampler=None, max_tokens=256, stop: Sequence[str] = (),
                stats: Optional[GenStats] = None) -> Iterator[str]:
    """Yield text pieces as they become final; stop strings are cut (and text that might start one is held back
    until it is known not to)."""
    stop = [s for s in (stop or ()) if s]
    dec = tokenizer.stream_decoder()
    stats = stats if stats is not None else GenStats()
    pending = ""
    hold = max((len(s) for s in stop), default=1) - 1
    for tok in generate_ids(model, prompt_ids, sampler, max_tokens, tokenizer.eot_ids, stats):
        pending += dec.push(tok)
        if stop:
            hit = min((i for i in (pending.find(s) for s in stop) if i >= 0), default=-1)
            if hit >= 0:
                if pending[:hit]:
                    yield pending[:hit]
                stats.finish_reason = "stop"
                return
            if len(pending) > hold:
                yield pending[: len(pending) - hold]
                pending = pending[len(pending) - hold:]
        elif pending:
            yield pending
            pending = ""
    pending += dec.flush()
    if stop:
        hit = min((i for i in (pending.find(s) for s in stop) if i >= 0), default=-1)
        if hit >= 0:
            pending, stats.finish_reason = pending[:hit], "stop"
    if pending:
        yield pending
