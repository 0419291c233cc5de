"""Hyper-parameters of a Llama-architecture model, from GGUF metadata or a HF config.json."""
from dataclasses import dataclass


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

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self, where=""):
        from ..io import ModelFileError
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv or self.head_dim % 2:
            raise ModelFileError(f"{where}: inconsistent heads: n_embd={self.n_embd}, n_head={self.n_head}, "
                                 f"n_head_kv={self.n_head_kv}")
        if min(self.n_layer, self.n_embd, self.n_ff, self.vocab_size) < 1:
            raise ModelFileError(f"{where}: non-positive model dimensions in {self}")
