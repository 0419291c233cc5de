"""The server's prompt (prefix) cache: KV caches of finished sequences with the tokens they hold, least recently
used first out, under a byte budget. A new request copies the longest cached prefix of its prompt into its own
cache and prefills only the rest, so a system prompt shared by many requests, or the earlier turns of a chat, is
not computed again. The entry is copied, not handed over, so the next request can use it too.

Every op of prefill is row-wise (GEMM rows equal lone GEMV rows; attention is per row), so a prompt prefilled in
two pieces gives the same bits as in one: reuse changes the speed, not the answer. Tokens that were decoded one
at a time (an earlier answer) can differ from a prefill of the same tokens by float rounding, as in `lowbit chat`.
Only the engine thread calls this, so it takes no lock."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..model.kv_cache import KVCache


class PromptCache:
    def __init__(self, budget_bytes: int, token_bytes: int, min_tokens: int = 16):
        self.budget, self.token_bytes, self.min_tokens = int(budget_bytes), int(token_bytes), int(min_tokens)
        self._entries: OrderedDict[int, tuple[np.ndarray, KVCache]] = OrderedDict()   # key -> (ids, cache)
        self._next = 0
        self.hits = self.reused_tokens = 0

    @property
    def nbytes(self) -> int:
        return sum(len(ids) for ids, _ in self._entries.values()) * self.token_bytes

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _common(a: np.ndarray, b: np.ndarray) -> int:
        n = min(len(a), len(b))
        diff = np.flatnonzero(a[:n] != b[:n])
        return int(diff[0]) if len(diff) else n

    def fill(self, ids: list[int], cache: KVCache, live=()) -> int:
        """Copy the longest cached prefix of `ids` into the empty `cache` (at most len(ids) - 1 tokens: the last
        prompt token is always run, for its logits); set cache.pos and return how many tokens it holds. `live`:
        (ids, cache) of sequences still running, whose first cache.pos positions are final too (a sequence only
        appends), so concurrent requests with one system prompt share it before any of them finishes."""
        if self.budget <= 0 or len(ids) < 2:
            return 0
        want = np.asarray(ids, np.int64)
        best, best_key, src = 0, None, None
        for key, (have, c) in self._entries.items():
            p = self._common(want, have)
            if p > best:
                best, best_key, src = p, key, c
        for have, c in live:
            p = self._common(want, np.asarray(have[: c.pos], np.int64))
            if p > best:
                best, best_key, src = p, None, c
        best = min(best, len(ids) - 1)
        if best < self.min_tokens:
            return 0
        if best_key is not None:
            self._entries.move_to_end(best_key)
        cache.k[:, :, :best] = src.k[:, :, :best]
        cache.v[:, :, :best] = src.v[:, :, :best]
        cache.pos = best
        self.hits += 1
        self.reused_tokens += best
        return best

    def put(self, ids: list[int], cache: KVCache) -> None:
        """Keep a finished sequence's cache (ids = the tokens it holds, in order). An entry that is a prefix of
        it is dropped (this one serves every request that one could); one that extends it makes it redundant."""
        n = min(len(ids), cache.pos)
        if self.budget <= 0 or n < self.min_tokens or n * self.token_bytes > self.budget:
            return
        have = np.asarray(ids[:n], np.int64)
        for key, (old, _) in list(self._entries.items()):
            p = self._common(have, old)
            if p == len(old):
                del self._entries[key]
            elif p == n:
                self._entries.move_to_end(key)
                return
        self._entries[self._next] = (have, cache)
        self._next += 1
        while self.nbytes > self.budget:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
