"""Hyper-parameters of a Llama-architecture model, from GGUF metadata or a HF config.json."""
import math
from dataclasses import dataclass

import numpy as np


@dataclass
class LlamaConfig:
    arch: str
    name: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_ctx_train: int
    vocab_size: int
    rms_eps: float
    rope_base: float
    tied_embeddings: bool
    # RoPE frequency scaling, as llama.cpp applies it: angle = pos / rope_scale * base^(-2i/hd) / factor[i].
    # rope_scale is linear position scaling (GGUF rope.scaling.type "linear", HF rope_scaling "linear");
    # rope_freq_factors are per-frequency divisors (GGUF's rope_freqs.weight tensor, which llama.cpp's converter
    # computes from HF's "llama3" rope_scaling: Llama 3.1/3.2/3.3).
    rope_scale: float = 1.0
    rope_freq_factors: tuple | None = None
    # per-head width when it is not n_embd / n_head (GGUF attention.key_length, HF head_dim: e.g. Mistral Nemo,
    # Minitron); 0 = n_embd / n_head
    key_length: int = 0

    @property
    def head_dim(self) -> int:
        return self.key_length or self.n_embd // self.n_head

    def validate(self, where=""):
        from ..io import ModelFileError
        if min(self.n_layer, self.n_embd, self.n_ff, self.vocab_size, self.n_head, self.n_head_kv) < 1 \
                or self.key_length < 0:
            raise ModelFileError(f"{where}: non-positive model dimensions in {self}")
        if (self.n_embd % self.n_head and not self.key_length) or self.n_head % self.n_head_kv \
                or self.head_dim < 2 or self.head_dim % 2:
            raise ModelFileError(f"{where}: inconsistent heads: n_embd={self.n_embd}, n_head={self.n_head}, "
                                 f"n_head_kv={self.n_head_kv}, head dim {self.head_dim}")
        if not (math.isfinite(self.rope_base) and self.rope_base > 0):
            raise ModelFileError(f"{where}: RoPE base {self.rope_base} is not a positive number")
        if not (math.isfinite(self.rope_scale) and self.rope_scale > 0):
            raise ModelFileError(f"{where}: RoPE scaling factor {self.rope_scale} is not a positive number")
        f = self.rope_freq_factors
        if f is not None:
            if len(f) != self.head_dim // 2:
                raise ModelFileError(f"{where}: {len(f)} RoPE frequency factors for head dim {self.head_dim}; "
                                     f"expected {self.head_dim // 2}")
            if not all(math.isfinite(x) and x > 0 for x in f):
                raise ModelFileError(f"{where}: RoPE frequency factors must be positive numbers")

    def rope_inv_freq(self) -> np.ndarray:
        """Per-pair rotation speed in radians per position (float64, [head_dim / 2])."""
        hd = self.head_dim
        inv = self.rope_base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd) / self.rope_scale
        if self.rope_freq_factors is not None:
            inv = inv / np.asarray(self.rope_freq_factors, np.float64)
        return inv


def llama3_freq_factors(head_dim: int, base: float, factor: float, low_freq_factor: float,
                        high_freq_factor: float, original_context: int) -> tuple:
    """HF's "llama3" rope_scaling as per-frequency divisors (what llama.cpp's converter stores as rope_freqs):
    wavelengths longer than original_context / low_freq_factor are slowed by `factor`, shorter than
    original_context / high_freq_factor are kept, and the band between is interpolated."""
    if not (factor > 0 and low_freq_factor > 0 and high_freq_factor > low_freq_factor and original_context > 0):
        raise ValueError(f"bad llama3 rope_scaling: factor={factor}, low_freq_factor={low_freq_factor}, "
                         f"high_freq_factor={high_freq_factor}, original_max_position_embeddings={original_context}")
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * base ** (i / head_dim)
        if wavelen < original_context / high_freq_factor:
            out.append(1.0)
        elif wavelen > original_context / low_freq_factor:
            out.append(float(factor))
        else:
            smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return tuple(out)
