"""An independent float64 Llama forward for tests: weights via gguf.quants.dequantize, a plain per-head loop,
RoPE on (even, odd) pairs written out with cos/sin (GGUF's Q/K row order), no KV cache, no lowbit code."""
import gguf
import numpy as np
from gguf.quants import dequantize


def _meta(r, key, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


def reference_logits(path, tokens):
    from lowbit.io.gguf import open_reader      # only the faster metadata parsing; tensors as gguf reads them
    r = open_reader(path)
    arch = _meta(r, "general.architecture")
    t = {x.name: x for x in r.tensors}

    def W(name):
        x = t[name]
        return np.asarray(dequantize(x.data, x.tensor_type), dtype=np.float64)

    E = int(_meta(r, f"{arch}.embedding_length"))
    H = int(_meta(r, f"{arch}.attention.head_count"))
    Hkv = int(_meta(r, f"{arch}.attention.head_count_kv", H))
    L = int(_meta(r, f"{arch}.block_count"))
    eps = float(_meta(r, f"{arch}.attention.layer_norm_rms_epsilon"))
    base = float(_meta(r, f"{arch}.rope.freq_base", 10000.0))
    hd = int(_meta(r, f"{arch}.attention.key_length", E // H))
    # llama.cpp's RoPE scaling: positions divided by the linear factor, frequency i divided by rope_freqs[i]
    lin = float(_meta(r, f"{arch}.rope.scaling.factor", 0.0) or 1.0)
    ff = np.asarray(t["rope_freqs.weight"].data, np.float64) if "rope_freqs.weight" in t else np.ones(hd // 2)
    n = len(tokens)
    emb = W("token_embd.weight")
    x = emb[np.asarray(tokens)]

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    def rope(v):                                # v [n, heads, hd]
        out = v.copy()
        for pos in range(n):
            for i in range(hd // 2):
                th = pos / lin * base ** (-2.0 * i / hd) / ff[i]
                c, s = np.cos(th), np.sin(th)
                a, b = v[pos, :, 2 * i], v[pos, :, 2 * i + 1]
                out[pos, :, 2 * i] = a * c - b * s
                out[pos, :, 2 * i + 1] = a * s + b * c
        return out

    for li in range(L):
        p = f"blk.{li}."
        h = rms(x, W(p + "attn_norm.weight"))
        q = rope((h @ W(p + "attn_q.weight").T).reshape(n, H, hd))
        k = rope((h @ W(p + "attn_k.weight").T).reshape(n, Hkv, hd))
        v = (h @ W(p + "attn_v.weight").T).reshape(n, Hkv, hd)
        att = np.zeros((n, H, hd))
        for hh in range(H):
            kv = hh // (H // Hkv)
            sc = q[:, hh] @ k[:, kv].T / np.sqrt(hd)
            sc[np.triu_indices(n, 1)] = -np.inf
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            att[:, hh] = sc @ v[:, kv]
        x = x + att.reshape(n, H * hd) @ W(p + "attn_output.weight").T
        h = rms(x, W(p + "ffn_norm.weight"))
        g, u = h @ W(p + "ffn_gate.weight").T, h @ W(p + "ffn_up.weight").T
        x = x + (g / (1 + np.exp(-g)) * u) @ W(p + "ffn_down.weight").T
    out = W("output.weight") if "output.weight" in t else emb
    return rms(x, W("output_norm.weight")) @ out.T
