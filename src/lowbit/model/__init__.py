"""Llama-family model: config, weights in the runtime formats, KV cache, forward pass."""
from .config import LlamaConfig
from .llama import LlamaModel

__all__ = ["LlamaConfig", "LlamaModel"]
