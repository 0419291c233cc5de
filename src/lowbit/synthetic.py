"""Random-weight GGUF models with real shapes, for speed work on models we cannot download.

Speed does not depend on weight values, so a file with the exact tensor shapes of TinyLlama / Llama-2-7B /
SmolLM2 and random weights measures what the real model would. Every file is labelled: general.name contains
"synthetic" and lowbit.synthetic = true. The tokenizer is a minimal but valid llama SentencePiece vocabulary of the
model's size (control tokens, the 256 byte tokens, then letter pieces) so llama.cpp and lowbit both load it.
Tensors are generated and written one at a time (a 7B F16 file never sits in memory)."""
from __future__ import annotations

import string
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import gguf

from .formats import iq4_nl as _iq4_nl
from .formats import q4_0 as _q4_0
from .formats import q8_0 as _q8_0


@dataclass(frozen=True)
class Shape:
    dim: int
    n_layers: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    ctx: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tied_embeddings: bool = False
    llama3_rope: tuple | None = None     # (factor, low_freq_factor, high_freq_factor, original context): rope_freqs

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def matrices(self):
        """(name, (rows=out, cols=in)) of every weight matrix, in file order."""
        kv = self.n_kv_heads * self.head_dim
        yield "token_embd.weight", (self.vocab, self.dim)
        for i in range(self.n_layers):
            b = f"blk.{i}."
            yield b + "attn_q.weight", (self.dim, self.dim)
            yield b + "attn_k.weight", (kv, self.dim)
            yield b + "attn_v.weight", (kv, self.dim)
            yield b + "attn_output.weight", (self.dim, self.dim)
            yield b + "ffn_gate.weight", (self.ffn, self.dim)
            yield b + "ffn_up.weight", (self.ffn, self.dim)
            yield b + "ffn_down.weight", (self.dim, self.ffn)
        if not self.tied_embeddings:
            yield "output.weight", (self.vocab, self.dim)

    def n_params(self) -> int:
        return sum(r * c for _, (r, c) in self.matrices()) + self.dim * (2 * self.n_layers + 1)


SHAPES = {
    "tinyllama-1.1b": Shape(2048, 22, 5632, 32, 4, 32000),
    "1b-16l": Shape(2048, 16, 5632, 32, 4, 32000),   # the benchmark protocol's quicker 1B shape (835M params)
    "llama2-7b": Shape(4096, 32, 11008, 32, 32, 32000, ctx=4096),
    "smollm2-135m": Shape(576, 30, 1536, 9, 3, 49152, ctx=8192, rope_theta=100000.0, tied_embeddings=True),
    # Llama 3.2 1B: 128k vocabulary (tied embedding = a fifth of the weights), llama3 RoPE frequency factors
    "llama3.2-1b": Shape(2048, 16, 8192, 32, 8, 128256, ctx=131072, rope_theta=500000.0, tied_embeddings=True,
                         llama3_rope=(32.0, 1.0, 4.0, 8192)),
    "tiny": Shape(64, 2, 128, 4, 2, 512, ctx=256),    # for tests
}

_QT = gguf.GGMLQuantizationType
_FTYPE = gguf.LlamaFileType
TYPES = {  # name -> (ggml type, file type, float [n,32] -> blocks or None for plain float)
    "f32": (_QT.F32, _FTYPE.ALL_F32),
    "f16": (_QT.F16, _FTYPE.MOSTLY_F16),
    "q8_0": (_QT.Q8_0, _FTYPE.MOSTLY_Q8_0),
    "q4_0": (_QT.Q4_0, _FTYPE.MOSTLY_Q4_0),
    "iq4_nl": (_QT.IQ4_NL, _FTYPE.MOSTLY_IQ4_NL),
}


def _iq4_nl_fast(x: np.ndarray) -> np.ndarray:
    """IQ4_NL blocks by nearest table value at scale max/-127 (no scale search: the full quantizer costs ~1 h on
    835M random weights, and speed does not depend on which codes were chosen)."""
    x = x.reshape(-1, 32)
    imax = np.abs(x).argmax(axis=-1, keepdims=True)
    d = (np.take_along_axis(x, imax, axis=-1) / np.float32(-127)).astype(np.float16)
    df = d.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(df != 0, x / df, 0)
    q = _iq4_nl._nearest(u)
    qs = q[:, :16] | (q[:, 16:] << np.uint8(4))
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), qs], axis=-1)


_QUANTIZERS = {"q4_0": _q4_0.quantize_blocks, "q8_0": _q8_0.quantize_blocks, "iq4_nl": _iq4_nl_fast}


def _vocab(n: int):
    """A valid llama SPM vocabulary of exactly n pieces: <unk> <s> </s>, 256 byte tokens, then pieces."""
    if n < 3 + 256 + 2:
        raise ValueError(f"vocabulary of {n} is too small for a byte-fallback SentencePiece vocab (need >= 261)")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    seen = set(tokens)

    def pieces():
        yield "\u2581"
        for c in string.ascii_letters + string.digits + string.punctuation:
            yield c
            yield "\u2581" + c
        low = string.ascii_lowercase
        for length in (2, 3, 4):
            for idx in np.ndindex(*(len(low),) * length):
                p = "".join(low[i] for i in idx)
                yield "\u2581" + p
                yield p

    for p in pieces():
        if len(tokens) == n:
            break
        if p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(gguf.TokenType.NORMAL)
    scores = [0.0] * 259 + [-float(i) for i in range(n - 259)]
    return tokens, scores, types


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _tensor(name: str, shape, qtype: str, seed: int) -> np.ndarray:
    """Random weights N(0, 0.02^2) for one matrix, in the requested type (bytes for block formats)."""
    rows, cols = shape
    x = _rng(seed, name).standard_normal((rows, cols), dtype=np.float32)
    x *= np.float32(0.02)
    if qtype == "f32":
        return x
    if qtype == "f16":
        return x.astype(np.float16)
    return _QUANTIZERS[qtype](x).reshape(rows, -1)


def write(path, shape: str = "1b-16l", qtype: str = "q4_0", seed: int = 0, progress: bool = False) -> Path:
    """Write a synthetic GGUF. Matrices (embedding and output included) get `qtype`, norms are F32 ones."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    if qtype not in TYPES:
        raise ValueError(f"unknown type {qtype!r}; choose from {', '.join(TYPES)}")
    s = SHAPES[shape]
    if s.dim % 32 or s.ffn % 32:
        raise ValueError(f"shape {shape}: dim and ffn must be multiples of 32 for block formats")
    ggml_type, ftype = TYPES[qtype]
    path = Path(path)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"synthetic-{shape}-{qtype} (random weights, for speed only)")
    w.add_bool("lowbit.synthetic", True)
    w.add_string("lowbit.synthetic.shape", shape)
    w.add_uint32("lowbit.synthetic.seed", seed)
    w.add_context_length(s.ctx)
    w.add_embedding_length(s.dim)
    w.add_block_count(s.n_layers)
    w.add_feed_forward_length(s.ffn)
    w.add_rope_dimension_count(s.head_dim)
    w.add_head_count(s.n_heads)
    w.add_head_count_kv(s.n_kv_heads)
    w.add_layer_norm_rms_eps(s.norm_eps)
    w.add_rope_freq_base(s.rope_theta)
    w.add_vocab_size(s.vocab)
    w.add_file_type(int(ftype))
    tokens, scores, types = _vocab(s.vocab)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types([int(t) for t in types])
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    # Tensor infos first (GGUF header), then data streamed in the same order.
    order = []
    block = gguf.GGML_QUANT_SIZES[ggml_type]
    for name, (rows, cols) in s.matrices():
        nbytes = rows * cols // block[0] * block[1]
        if qtype in ("f32", "f16"):
            dt = np.float32 if qtype == "f32" else np.float16
            w.add_tensor_info(name, (rows, cols), np.dtype(dt), nbytes)
        else:
            w.add_tensor_info(name, (rows, cols * block[1] // block[0]), np.dtype(np.uint8), nbytes,
                              raw_dtype=ggml_type)
        order.append((name, (rows, cols)))
    norms = ["output_norm.weight"] + [f"blk.{i}.{n}" for i in range(s.n_layers) for n in ("attn_norm.weight",
                                                                                          "ffn_norm.weight")]
    for name in norms:
        w.add_tensor_info(name, (s.dim,), np.dtype(np.float32), s.dim * 4)
    freqs = None
    if s.llama3_rope is not None:      # what llama.cpp's converter stores for HF's "llama3" rope_scaling
        from .model.config import llama3_freq_factors
        freqs = np.asarray(llama3_freq_factors(s.head_dim, s.rope_theta, *s.llama3_rope), np.float32)
        w.add_tensor_info("rope_freqs.weight", freqs.shape, np.dtype(np.float32), freqs.nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    it = order
    if progress:
        from tqdm import tqdm
        it = tqdm(order, desc=f"writing {path.name}", unit="tensor")
    for name, shp in it:
        w.write_tensor_data(_tensor(name, shp, qtype, seed))
    ones = np.ones(s.dim, dtype=np.float32)
    for _ in norms:
        w.write_tensor_data(ones)
    if freqs is not None:
        w.write_tensor_data(freqs)
    w.close()
    return path
