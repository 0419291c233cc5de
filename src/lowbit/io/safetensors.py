"""A Hugging Face Llama checkpoint directory (config.json, *.safetensors, tokenizer.json). The `safetensors`
package validates each file and lists names, shapes and dtypes; tensor bytes are memory-mapped at the offsets
the header gives. Names are mapped to GGUF's, and Q/K rows are permuted into GGUF's RoPE order (HF rotates the
two halves of a head, GGUF adjacent pairs) exactly as llama.cpp's converter does."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np

from . import ModelFileError
from .source import TensorSource

_DTYPES = {"F32": ("F32", 4), "F16": ("F16", 2), "BF16": ("BF16", 2)}
_LAYER = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
          "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
          "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
          "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
          "mlp.down_proj.weight": "ffn_down.weight"}
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}
_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")


def gguf_name(hf: str):
    if hf in _TOP:
        return _TOP[hf]
    m = _RE.fullmatch(hf)
    if m and m.group(2) in _LAYER:
        return f"blk.{m.group(1)}.{_LAYER[m.group(2)]}"
    return None                      # rotary inv_freq buffers and the like: not weights we use


def read_config(path: Path):
    from ..model.config import LlamaConfig
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelFileError(f"{path}: no config.json")
    try:
        c = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ModelFileError(f"{cfg_path}: not valid JSON ({e})") from None
    archs = c.get("architectures") or []
    if c.get("model_type") != "llama" and "LlamaForCausalLM" not in archs:
        raise ModelFileError(f"{path}: unsupported architecture {c.get('model_type') or archs!r}; lowbit runs llama")
    try:
        n_embd, n_head = int(c["hidden_size"]), int(c["num_attention_heads"])
        if n_head < 1:
            raise ModelFileError(f"{cfg_path}: num_attention_heads is {n_head}")
        hd = int(c.get("head_dim") or n_embd // n_head)
        key_length = 0 if hd * n_head == n_embd else hd      # 0: the usual n_embd / n_head
        rope_base = float(c.get("rope_theta", 10000.0))
        rope_scale, factors = _rope_scaling(cfg_path, c.get("rope_scaling"), hd, rope_base)
        return LlamaConfig(
            arch="llama", name=path.name, n_layer=int(c["num_hidden_layers"]), n_embd=n_embd,
            n_ff=int(c["intermediate_size"]), n_head=n_head, n_head_kv=int(c.get("num_key_value_heads", n_head)),
            n_ctx_train=int(c.get("max_position_embeddings", 2048)), vocab_size=int(c["vocab_size"]),
            rms_eps=float(c.get("rms_norm_eps", 1e-6)), rope_base=rope_base,
            tied_embeddings=bool(c.get("tie_word_embeddings", False)), rope_scale=rope_scale,
            rope_freq_factors=factors, key_length=key_length)
    except KeyError as e:
        raise ModelFileError(f"{cfg_path}: missing {e.args[0]}") from None
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{cfg_path}: bad value ({e})") from None


def _rope_scaling(cfg_path, rs, head_dim, base):
    """HF rope_scaling -> (linear position scale, per-frequency factors or None). "llama3" (Llama 3.1+) becomes
    the factors llama.cpp's converter would store in rope_freqs.weight; types lowbit does not run are refused."""
    from ..model.config import llama3_freq_factors
    if not rs:
        return 1.0, None
    if not isinstance(rs, dict):
        raise ModelFileError(f"{cfg_path}: rope_scaling must be an object, got {rs!r}")
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return 1.0, None
    if kind == "linear":
        return float(rs["factor"]), None
    if kind == "llama3":
        return 1.0, llama3_freq_factors(head_dim, base, float(rs["factor"]), float(rs["low_freq_factor"]),
                                        float(rs["high_freq_factor"]), int(rs["original_max_position_embeddings"]))
    raise ModelFileError(f"{cfg_path}: rope_scaling {kind!r} is not supported (lowbit runs default, linear, llama3)")


def _header(file: Path):
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{file}: truncated safetensors file")
        (n,) = struct.unpack("<Q", head)
        raw = f.read(n)
    if len(raw) < n:
        raise ModelFileError(f"{file}: truncated safetensors header")
    return 8 + n, json.loads(raw)


class SafetensorsSource(TensorSource):
    def __init__(self, path):
        from safetensors import safe_open
        self.path = Path(path)
        self.config = read_config(self.path)
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise ModelFileError(f"{self.path}: no *.safetensors files")
        self._t = {}                                  # gguf name -> (file, offset, shape, dtype name, row bytes)
        for file in files:
            try:
                with safe_open(str(file), framework="numpy") as f:   # validates the header and offsets
                    keys = list(f.keys())
                    shapes = {k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in keys}
            except Exception as e:
                raise ModelFileError(f"{file}: unreadable safetensors ({e})") from None
            base, header = _header(file)
            size = file.stat().st_size
            for k in keys:
                name = gguf_name(k)
                if name is None:
                    continue
                shape, dt = shapes[k]
                if dt not in _DTYPES:
                    raise ModelFileError(f"{file}: tensor {k} has unsupported type {dt}")
                start, end = header[k]["data_offsets"]
                if base + end > size:
                    raise ModelFileError(f"{file}: truncated: tensor {k} ends at {base + end}, file has {size}")
                want_nd = 1 if name.endswith("norm.weight") else 2
                if len(shape) != want_nd or min(shape, default=0) < 1:     # hostile/odd headers: say so here
                    raise ModelFileError(f"{file}: tensor {k} has shape {list(shape)}; expected {want_nd}-D with "
                                         f"positive sizes")
                if (base + start) % _DTYPES[dt][1]:
                    raise ModelFileError(f"{file}: tensor {k} data at offset {base + start} is not aligned to "
                                         f"its {_DTYPES[dt][1]}-byte elements")
                self._t[name] = (file, base + start, tuple(int(s) for s in shape), _DTYPES[dt][0], end - start)
        if self.config.tied_embeddings or "output.weight" not in self._t:
            self.config.tied_embeddings = True
            self._t.pop("output.weight", None)
        self._maps = {}

    def names(self):
        return list(self._t)

    def info(self, name):
        _, _, shape, dt, _ = self._t[name]
        return dt, shape

    def _map(self, file):
        if file not in self._maps:
            self._maps[file] = np.memmap(file, dtype=np.uint8, mode="r").view(np.ndarray)
        return self._maps[file]

    def raw(self, name):
        file, off, shape, dt, nbytes = self._t[name]
        data = self._map(file)[off: off + nbytes]
        if len(shape) == 2:
            data = data.reshape(shape[0], -1)
            c = self.config
            if name.endswith("attn_q.weight"):
                data = _to_gguf_rope_order(data, c.n_head)
            elif name.endswith("attn_k.weight"):
                data = _to_gguf_rope_order(data, c.n_head_kv)
        return data

    def file_rows(self, name):
        file, off, shape, dt, nbytes = self._t[name]
        return str(file), off, shape[0], nbytes // shape[0]

    def close(self):
        self._maps = {}


def _to_gguf_rope_order(rows: np.ndarray, n_head: int) -> np.ndarray:
    """HF row order [head][half][i] -> GGUF [head][i][half] (llama.cpp convert_hf_to_gguf `permute`)."""
    N = rows.shape[0]
    return rows.reshape(n_head, 2, N // n_head // 2, -1).swapaxes(1, 2).reshape(N, -1)
