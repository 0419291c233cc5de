"""KV cache: float32 [layers, kv heads, n_ctx, head_dim], allocated once (np.zeros pages are only touched when
written, so a long context costs memory only as it fills)."""
import numpy as np


class KVCache:
    def __init__(self, n_layer: int, n_head_kv: int, n_ctx: int, head_dim: int):
        self.n_ctx = n_ctx
        self.k = np.zeros((n_layer, n_head_kv, n_ctx, head_dim), dtype=np.float32)
        self.v = np.zeros((n_layer, n_head_kv, n_ctx, head_dim), dtype=np.float32)
        self.pos = 0            # tokens stored so far

    def reset(self):
        self.pos = 0

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes
