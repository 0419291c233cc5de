"""Codebook learning on CPU (cb4 / cb2): see learn.py for the algorithm and docs/codebooks.md for the choices."""
from .learn import CodebookTensor, learn_tables, quantize_tensor

__all__ = ["CodebookTensor", "learn_tables", "quantize_tensor"]
