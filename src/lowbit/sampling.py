"""Next-token sampling in numpy. A Sampler maps (logits, previous tokens) -> token id; generation takes any
callable with that signature, so tests and callers can inject their own."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass
class SamplerConfig:
    temperature: float = 0.8       # 0 -> greedy
    top_k: int = 40                # 0 -> off
    top_p: float = 0.95            # 1 -> off
    min_p: float = 0.05            # 0 -> off; keep tokens with p >= min_p * p_max
    repeat_penalty: float = 1.0    # 1 -> off; llama.cpp rule: divide positive logits, multiply negative ones
    repeat_last_n: int = 64        # how many previous tokens the penalty looks at
    seed: Optional[int] = None

    def validate(self):
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repeat_penalty <= 0:
            raise ValueError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        if self.repeat_last_n < 0:
            raise ValueError(f"repeat_last_n must be >= 0, got {self.repeat_last_n}")


class Sampler:
    def __init__(self, config: SamplerConfig = None, **kw):
        self.config = config or SamplerConfig(**kw)
        self.config.validate()
        self.rng = np.random.default_rng(self.config.seed)

    def penalize(self, logits: np.ndarray, prev: Sequence[int]) -> np.ndarray:
        c = self.config
        if c.repeat_penalty == 1.0 or not c.repeat_last_n or not len(prev):
            return logits
        ids = np.unique(np.asarray(prev[-c.repeat_last_n:], dtype=np.int64))
        vals = logits[ids]
        logits[ids] = np.where(vals > 0, vals / c.repeat_penalty, vals * c.repeat_penalty)
        return logits

    def probs(self, logits: np.ndarray, prev: Sequence[int] = ()):
        """(candidate ids, their probabilities) after penalty, temperature, top-k, top-p, min-p."""
        c = self.config
        z = self.penalize(np.array(logits, dtype=np.float64).reshape(-1), prev)
        ids = np.arange(z.size)
        if c.top_k and c.top_k < z.size:
            ids = np.argpartition(-z, c.top_k - 1)[: c.top_k]
        order = ids[np.argsort(-z[ids], kind="stable")]
        zs = z[order] / c.temperature
        p = np.exp(zs - zs[0])
        p /= p.sum()
        keep = p.size
        if c.top_p < 1.0:
            keep = min(keep, int(np.searchsorted(np.cumsum(p), c.top_p)) + 1)   # smallest prefix with mass >= p
        if c.min_p > 0:
            keep = min(keep, int(np.count_nonzero(p >= c.min_p * p[0])))
        keep = max(keep, 1)
        order, p = order[:keep], p[:keep]
        return order, p / p.sum()

    def __call__(self, logits: np.ndarray, prev: Sequence[int] = ()) -> int:
        if self.config.temperature == 0:
            z = logits.reshape(-1)
            if self.config.repeat_penalty != 1.0 and len(prev):
                z = self.penalize(np.array(z, dtype=np.float64), prev)
            return int(np.argmax(z))
        ids, p = self.probs(logits, prev)
        return int(ids[self.rng.choice(p.size, p=p)])


def greedy(logits: np.ndarray, prev: Sequence[int] = ()) -> int:
    return int(np.argmax(logits))
