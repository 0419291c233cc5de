"""Importance weights for codebook learning: per input column, the mean squared activation entering each
linear layer while the model reads calibration text (llama.cpp's imatrix idea). Never use the evaluation text
(WikiText-2 test) here; docs/codebooks.md names the text used."""
from __future__ import annotations

import numpy as np

# runtime linear -> the source tensors that share its input
_FUSED = {"wqkv": ("attn_q", "attn_k", "attn_v"), "wo": ("attn_output",), "wgu": ("ffn_gate", "ffn_up"),
          "wdown": ("ffn_down",)}


class _Recorder:
    def __init__(self, inner):
        self.inner = inner
        self.sumsq = np.zeros(inner.K, np.float64)
        self.rows = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, x, out):
        self.sumsq += np.einsum("ij,ij->j", x, x, dtype=np.float64)
        self.rows += x.shape[0]
        return self.inner(x, out)


def collect_importance(model_path, text: str, max_tokens: int = 4096, ctx: int = 512, fmt: str = "q8_0",
                       progress=None) -> dict:
    """Run the model (runtime format fmt) over up to max_tokens tokens of text in ctx-long chunks; return
    {tensor name: float32 [K] mean squared input} for every block linear of every layer."""
    from ..api import load
    llm = load(model_path, format=fmt, n_ctx=ctx)
    model = llm.model
    ids = list(llm.encode_prompt(text))[:max_tokens]
    if len(ids) < 2:
        raise ValueError("calibration text is too short (fewer than 2 tokens)")
    recs = {}
    for i, L in enumerate(model.layers):
        for attr in _FUSED:
            r = _Recorder(getattr(L, attr))
            setattr(L, attr, r)
            recs[(i, attr)] = r
    try:
        for s in range(0, len(ids), ctx):
            model.reset()
            model.prefill(ids[s: s + ctx])
            if progress:
                progress(min(ctx, len(ids) - s))
    finally:
        for (i, attr), r in recs.items():
            setattr(model.layers[i], attr, r.inner)
    out = {}
    for (i, attr), r in recs.items():
        mean = (r.sumsq / max(r.rows, 1)).astype(np.float32)
        for t in _FUSED[attr]:
            out[f"blk.{i}.{t}.weight"] = mean
    return out
