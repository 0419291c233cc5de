"""The native `.lowbit` file: a model already packed in the layout of this CPU family's kernels, mapped
zero-copy at load (docs/native-format.md).

    0   8s  magic b"LOWBIT\\x00N"
    8   u32 version (1)          12  u32 flags (0)
    16  u64 header_len           24  u64 data_offset (64-aligned, = align64(40 + header_len))
    32  u64 data_size            40  header: UTF-8 JSON, then zero padding up to data_offset
    data_offset: tensors, each at a 64-aligned offset relative to data_offset

Every number in the header is checked against the file size before anything is mapped or allocated: the file
may come from a stranger. Packed weights carry their layout tag (kernel name, R, B); when it matches the kernel
selected on this CPU the bytes are used in place (np.frombuffer over the mmap), otherwise they are
de-interleaved and repacked at load."""
from __future__ import annotations

import json
import mmap
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from . import ModelFileError
from .atomic import atomic_path
from .source import TensorSource

MAGIC = b"LOWBIT\x00N"
VERSION = 1
ALIGN = 64
_PRE = struct.Struct("<8sIIQQQ")
MAX_HEADER = 256 << 20          # a 256k-token vocabulary's JSON is ~10 MB
MAX_DIM = 1 << 31
_DTYPES = {"u8": np.uint8, "i8": np.int8, "f32": np.float32, "f16": np.float16}
_CFG_INT = ("n_layer", "n_embd", "n_ff", "n_head", "n_head_kv", "n_ctx_train", "vocab_size")
_PACKED_FORMATS = ("q4_0", "iq4_nl", "q8_0", "cb4", "cb2")
_HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                       "generation_config.json", "chat_template.jinja")


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def is_native(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == MAGIC
    except (OSError, TypeError):
        return False


# ---- header validation helpers: every field typed and bounded, errors name the field --------------------------

def _bad(path, msg):
    return ModelFileError(f"{path}: bad .lowbit file: {msg}")


def _int(path, d, key, lo=0, hi=1 << 62):
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _bad(path, f"{key} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _str(path, d, key, choices=None):
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, str) or (choices is not None and v not in choices):
        raise _bad(path, f"{key} must be {'one of ' + ', '.join(choices) if choices else 'a string'}, got {v!r}")
    return v


def _dict(path, d, key):
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, dict):
        raise _bad(path, f"{key} must be an object")
    return v


def read_header(buf, size: int, path="<buffer>") -> tuple:
    """(header dict, data_offset) from the first bytes of a file of `size` bytes; raises ModelFileError."""
    if size < _PRE.size or len(buf) < _PRE.size:
        raise ModelFileError(f"{path}: truncated .lowbit file ({size} bytes, the preamble alone is {_PRE.size})")
    magic, version, flags, hlen, doff, dsize = _PRE.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ModelFileError(f"{path}: not a .lowbit file (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ModelFileError(f"{path}: unsupported .lowbit version {version} (this lowbit reads {VERSION})")
    if flags != 0:
        raise _bad(path, f"unknown flags {flags:#x}")
    if hlen > MAX_HEADER:
        raise _bad(path, f"header length {hlen} exceeds the {MAX_HEADER}-byte limit")
    if _PRE.size + hlen > size:
        raise ModelFileError(f"{path}: truncated .lowbit file: header needs {_PRE.size + hlen} bytes, file has {size}")
    if doff != _align(_PRE.size + hlen):
        raise _bad(path, f"data offset {doff} is not the 64-aligned end of the header ({_align(_PRE.size + hlen)})")
    if doff + dsize > size:
        raise ModelFileError(f"{path}: truncated .lowbit file: data ends at {doff + dsize}, file has {size}")
    if len(buf) < _PRE.size + hlen:
        raise ModelFileError(f"{path}: truncated .lowbit header")
    try:
        h = json.loads(bytes(buf[_PRE.size:_PRE.size + hlen]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(path, f"header is not valid JSON ({type(e).__name__})") from None
    if not isinstance(h, dict):
        raise _bad(path, "header is not a JSON object")
    return h, doff, dsize


def _tensor_table(path, h, dsize):
    """name -> (offset, nbytes, dtype, shape), checked: in bounds, 64-aligned, sizes consistent, no overlap."""
    ts = h.get("tensors")
    if not isinstance(ts, dict) or not ts:
        raise _bad(path, "no tensor table")
    out, spans = {}, []
    for name, t in ts.items():
        if not isinstance(t, dict):
            raise _bad(path, f"tensor {name!r} entry is not an object")
        off = _int(path, t, "offset")
        nbytes = _int(path, t, "nbytes", 1)
        dt = _str(path, t, "dtype", tuple(_DTYPES))
        shape = t.get("shape")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 4 or
                not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_DIM for s in shape)):
            raise _bad(path, f"tensor {name!r} has an absurd shape {shape!r}")
        n = int(np.prod(shape, dtype=object)) * np.dtype(_DTYPES[dt]).itemsize
        if n != nbytes:
            raise _bad(path, f"tensor {name!r}: shape {shape} of {dt} is {n} bytes, header says {nbytes}")
        if off % ALIGN:
            raise _bad(path, f"tensor {name!r} offset {off} is not {ALIGN}-byte aligned")
        if off + nbytes > dsize:
            raise ModelFileError(f"{path}: truncated .lowbit file: tensor {name!r} ends at {off + nbytes} past "
                                 f"the data section ({dsize} bytes)")
        out[name] = (off, nbytes, dt, tuple(shape))
        spans.append((off, off + nbytes, name))
    spans.sort()
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise _bad(path, f"tensors {an!r} and {bn!r} overlap")
    return out


def _config(path, h):
    from ..model.config import LlamaConfig
    c = _dict(path, h, "config")
    kw = {k: _int(path, c, k, 1, MAX_DIM) for k in _CFG_INT}
    for k in ("rms_eps", "rope_base"):
        v = c.get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 < v < 1e12):
            raise _bad(path, f"config.{k} must be a positive number, got {v!r}")
        kw[k] = float(v)
    if not isinstance(c.get("tied_embeddings"), bool):
        raise _bad(path, "config.tied_embeddings must be true or false")
    # RoPE scaling (files written before it existed have neither key: no scaling)
    scale = c.get("rope_scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not (0 < scale < 1e12):
        raise _bad(path, f"config.rope_scale must be a positive number, got {scale!r}")
    key_length = c.get("key_length", 0)          # absent in files from before it existed
    if not isinstance(key_length, int) or isinstance(key_length, bool) or not 0 <= key_length <= MAX_DIM:
        raise _bad(path, f"config.key_length must be a non-negative integer, got {key_length!r}")
    factors = c.get("rope_freq_factors")
    if factors is not None:
        if not isinstance(factors, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                    and 0 < x < 1e12 for x in factors):
            raise _bad(path, "config.rope_freq_factors must be a list of positive numbers")
        factors = tuple(float(x) for x in factors)
    cfg = LlamaConfig(arch=_str(path, c, "arch", ("llama",)), name=str(c.get("name", "")),
                      tied_embeddings=c["tied_embeddings"], rope_scale=float(scale), rope_freq_factors=factors,
                      key_length=key_length, **kw)
    cfg.validate(path)
    return cfg


class NativeSource(TensorSource):
    """A .lowbit file as a TensorSource; weight matrices come out of prepacked_linear() ready for the kernels."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise ModelFileError(f"{self.path}: cannot open ({e.strerror})") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            pre = f.read(_PRE.size)
            if len(pre) == _PRE.size and pre[:8] == MAGIC:
                hlen = _PRE.unpack_from(pre)[3]
                pre += f.read(min(hlen, MAX_HEADER, max(0, size - _PRE.size)))
            h, doff, dsize = read_header(pre, size, self.path)
            self._init_from_header(h, doff, dsize)
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._buf = np.frombuffer(self._mm, np.uint8) if self._mm is not None else None
        if self._buf is None or self._buf.size < doff + dsize:
            raise ModelFileError(f"{self.path}: truncated .lowbit file (changed while opening)")

    def _init_from_header(self, h, doff, dsize):
        p = self.path
        self.header, self._doff = h, doff
        self.format = _str(p, h, "format", _PACKED_FORMATS + ("f32", "f16"))
        self.config = _config(p, h)
        self._t = _tensor_table(p, h, dsize)
        lin = h.get("linears")
        if not isinstance(lin, dict):
            raise _bad(p, "no linears table")
        self._lin = {}
        for key, e in lin.items():
            if not isinstance(e, dict):
                raise _bad(p, f"linear {key!r} entry is not an object")
            self._lin[key] = self._check_linear(key, e)
        self._parts = {}
        for key, e in self._lin.items():
            for n, rows in e["parts"]:
                self._parts[n] = (key, rows)
        tok = h.get("tokenizer")
        if (not isinstance(tok, dict) or tok.get("kind") not in ("gguf_meta", "hf_files") or
                not all(k == "kind" or (isinstance(v, str) and v in self._t and self._t[v][2] == "u8")
                        for k, v in tok.items())):
            raise _bad(p, "missing tokenizer (the header must name its u8 JSON blobs)")
        emb = self._t.get("token_embd.weight")
        if emb is None:
            raise _bad(p, "no token_embd.weight")
        emb_type = _str(p, h, "embedding_type", ("F32", "F16", "BF16", "Q4_0", "Q8_0", "IQ4_NL", "Q4_1"))
        dim = self.config.n_embd
        bpr = _row_bytes(emb_type, dim)
        if emb[3] != (self.config.vocab_size, bpr) or emb[2] != "u8":
            raise _bad(p, f"token_embd.weight is {emb[3]} {emb[2]}, expected ({self.config.vocab_size}, {bpr}) u8 "
                          f"for {emb_type} rows of {dim}")
        self._emb_type = emb_type

    def _check_linear(self, key, e):
        p = self.path
        kind = _str(p, e, "kind", ("packed", "float"))
        N, K = _int(p, e, "N", 1, MAX_DIM), _int(p, e, "K", 1, MAX_DIM)
        parts = e.get("parts")
        if (not isinstance(parts, list) or not parts or
                not all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and isinstance(x[1], int) and
                        not isinstance(x[1], bool) and x[1] >= 1 for x in parts) or
                "|".join(x[0] for x in parts) != key or sum(x[1] for x in parts) != N):
            raise _bad(p, f"linear {key!r} has a bad parts list")
        data = _str(p, e, "data")
        if data not in self._t:
            raise _bad(p, f"linear {key!r} refers to missing tensor {data!r}")
        off, nbytes, dt, shape = self._t[data]
        out = dict(e, kind=kind, N=N, K=K)
        if kind == "float":
            if dt not in ("f32", "f16") or shape != (N, K):
                raise _bad(p, f"float linear {key!r} needs an f32/f16 [{N}, {K}] tensor, got {dt} {list(shape)}")
            return out
        from ..formats.repack import packed_nbytes
        fmt = _str(p, e, "format", _PACKED_FORMATS)
        R, B = _int(p, e, "R", 1, 64), _int(p, e, "B", 1, 64)
        _str(p, e, "kernel")
        from ..formats import get_format
        if R not in (4, 8) or B not in (4, 8, 16) or get_format(fmt).row_bytes % B or K % 32:
            raise _bad(p, f"linear {key!r}: unsupported layout R={R} B={B} K={K}")
        need = packed_nbytes(fmt, N, K, R)
        if dt != "u8" or nbytes != need:
            old = fmt in ("cb4", "cb2") and nbytes == need // (18 if fmt == "cb4" else 10) * (19 if fmt == "cb4" else 11)
            raise _bad(p, f"linear {key!r}: {fmt} [{N}, {K}] packed with R={R} is {need} bytes, tensor has {nbytes}"
                          + (" (the old layout with a separate codebook id byte: run lowbit convert again)"
                             if old else ""))
        if fmt in ("cb4", "cb2"):
            aux = e.get("aux")
            ta = self._t.get(aux) if isinstance(aux, str) else None
            if ta is None or ta[2] != "i8" or len(ta[3]) != 2 or ta[3][1] != 16 or ta[3][0] > 16:
                raise _bad(p, f"linear {key!r}: codebook tables missing or not int8 [C<=16, 16]")
        return out

    # ---- TensorSource ---------------------------------------------------------------------------------------------
    def _view(self, name):
        off, nbytes, dt, shape = self._t[name]
        a = self._doff + off
        return self._buf[a:a + nbytes]

    def names(self):
        return list(self._t) + list(self._parts)

    def info(self, name):
        if name == "token_embd.weight":
            return self._emb_type, (self.config.vocab_size, self.config.n_embd)
        if name in self._parts:
            e = self._lin[self._parts[name][0]]
            return (e["format"].upper() if e["kind"] == "packed" else "F32"), (self._parts[name][1], e["K"])
        off, nbytes, dt, shape = self._t[name]
        return {"f32": "F32", "f16": "F16"}.get(dt, dt.upper()), shape

    def raw(self, name):
        return self._view(name)

    def file_rows(self, name):
        off, nbytes, dt, shape = self._t[name]
        return self.path, self._doff + off, shape[0], shape[1]

    def tokenizer_record(self) -> dict:
        """The tokenizer record, its parts parsed from their JSON blobs (kept out of the header: parsing a large
        vocabulary's JSON is only done when it is needed)."""
        tok = dict(self.header["tokenizer"])
        for k, v in tok.items():
            if k != "kind":
                try:
                    tok[k] = json.loads(bytes(self._view(v)).decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError) as e:
                    raise _bad(self.path, f"tokenizer blob {v!r} is not valid JSON ({type(e).__name__})") from None
        return tok

    def tokenizer(self):
        from ..tokenizer import Tokenizer
        tok = self.header["tokenizer"]
        if tok["kind"] == "gguf_meta" and "built" in tok:
            tok = {"kind": "gguf_meta", "built": self.tokenizer_record()["built"]}
        else:
            tok = self.tokenizer_record()
        t = self._build_tokenizer(tok, Tokenizer)
        if t.vocab_size > self.config.vocab_size:
            raise _bad(self.path, f"tokenizer has {t.vocab_size} tokens, the model's vocabulary "
                                  f"{self.config.vocab_size}")
        return t

    def _build_tokenizer(self, tok, Tokenizer):
        try:
            if tok["kind"] == "gguf_meta":
                if isinstance(tok.get("built"), dict):
                    return _tokenizer_from_built(tok["built"])
                if not isinstance(tok.get("meta"), dict):
                    raise ValueError("tokenizer.meta is not an object")
                return Tokenizer.from_metadata(tok["meta"])
            files = tok.get("files")
            if not isinstance(files, dict) or not all(k in _HF_TOKENIZER_FILES and isinstance(v, str)
                                                      for k, v in files.items()):
                raise ValueError("tokenizer.files must map known tokenizer file names to text")
            with tempfile.TemporaryDirectory() as d:
                for k, v in files.items():
                    Path(d, k).write_text(v, encoding="utf-8")
                return Tokenizer.from_hf_dir(Path(d))
        except (ModelFileError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:   # tokenizers reports bad vocabularies in many ways, panics included (BaseException)
            raise _bad(self.path, f"unusable tokenizer ({type(e).__name__}: {str(e)[:200]})") from None

    def prepacked_linear(self, names, log):
        """The weight for the fused matrices `names`, as the model builder's PackedLinear / FloatLinear."""
        from .. import ops
        from ..model.weights import FloatLinear, PackedLinear
        key = "|".join(names)
        e = self._lin.get(key)
        if e is None and len(names) > 1 and all(n in self._lin for n in names):   # stored unfused (SplitLinear)
            from ..model.weights import SplitLinear
            return SplitLinear([self.prepacked_linear([n], log) for n in names])
        if e is None:
            raise _bad(self.path, f"no stored weight for {key}")
        data = self._view(e["data"])
        N, K = e["N"], e["K"]
        if e["kind"] == "float":
            dt = _DTYPES[self._t[e["data"]][2]]
            tn = "F16" if dt is np.float16 else "F32"
            for n, rows in e["parts"]:
                log.append((n, tn, (rows, K), tn.lower(), "stored float, mapped"))
            return FloatLinear(data.view(dt).reshape(N, K))
        fmt, R, B = e["format"], e["R"], e["B"]
        aux = None
        if fmt in ("cb4", "cb2"):
            from ..formats.cb import check_tables
            aux = check_tables(self._view(e["aux"]).view(np.int8).reshape(-1, 16), fmt)
        try:
            want = ops.kernel_for(fmt)
        except ValueError as err:
            raise ModelFileError(f"{self.path}: {err}") from None
        if want["name"] == e["kernel"] and (want["R"], want["B"]) == (R, B):
            if aux is not None:
                from ..formats.cb import pad_tables
                _check_packed_ids(data, fmt, R, len(aux), self.path, key)
                aux = pad_tables(aux)
            pw = ops.PackedWeight(fmt, N, K, want, data, aux)
            ops._check_packed(pw)
            what = f"prepacked for {want['name']}: mapped zero-copy"
        else:
            from ..formats.repack import deinterleave
            blocks = deinterleave(data, fmt, N, K, R, B).reshape(N, -1)
            pw = ops.PackedWeight.from_blocks(blocks, fmt, N, K, aux=aux)
            what = f"stored for {e['kernel']} (R={R}, B={B}): repacked for {want['name']}"
        for n, rows in e["parts"]:
            log.append((n, fmt.upper(), (rows, K), fmt, what))
        return PackedLinear(pw)

    def close(self):
        # views handed to the model keep the mapping alive; dropping our references is all that is needed
        self._buf = None
        self._mm = None


def _built_tokenizer(meta) -> dict:
    """The tokenizer built from GGUF keys, serialized: loading it skips rebuilding the vocabulary (the slowest
    part of loading a native file). The GGUF keys stay in the file too, for export-gguf."""
    from ..tokenizer import Tokenizer
    t = Tokenizer.from_metadata(meta)
    tail = None if t._hf_tail is None else ("same" if t._hf_tail is t._hf else t._hf_tail.to_str())
    return {"hf": t._hf.to_str(), "tail": tail, "bos_id": t.bos_id, "eos_id": t.eos_id, "add_bos": t.add_bos,
            "chat_template": t.chat_template, "eot_ids": sorted(t.eot_ids), "vocab_size": t.vocab_size}


def _tokenizer_from_built(b):
    from tokenizers import Tokenizer as HF

    from ..tokenizer import Tokenizer
    ids = (b.get("bos_id"), b.get("eos_id"))
    if (not isinstance(b.get("hf"), str) or not all(i is None or isinstance(i, int) for i in ids) or
            not isinstance(b.get("vocab_size"), int) or not isinstance(b.get("eot_ids"), list)):
        raise ValueError("tokenizer.built is malformed")
    n = b["vocab_size"]
    if not all(isinstance(i, int) and 0 <= i < n for i in [*ids, *b["eot_ids"]] if i is not None):
        raise ValueError(f"tokenizer special token ids {ids} / {b['eot_ids']} outside the vocabulary of {n}")
    hf = HF.from_str(b["hf"])
    tail = None if b.get("tail") is None else hf if b["tail"] == "same" else HF.from_str(b["tail"])
    return Tokenizer(hf, bos_id=ids[0], eos_id=ids[1], add_bos=bool(b.get("add_bos")),
                     chat_template=b.get("chat_template"), eot_ids=set(b["eot_ids"]), vocab_size=b["vocab_size"],
                     hf_tail=tail)


def _row_bytes(type_name, dim):
    sizes = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q8_0": (32, 34),
             "IQ4_NL": (32, 18), "Q4_1": (32, 20)}
    bs, ts = sizes[type_name]
    return -(-dim // bs) * ts


def _check_packed_ids(data, fmt, R, n_tables, path, key):
    """The kernels index the tables by each block's id unchecked: every id must be < n_tables."""
    from ..formats.cb import BLOCK_BYTES, ID_MASK
    sb = R * BLOCK_BYTES[fmt]
    ids = np.ascontiguousarray(data.reshape(-1, sb)[:, : 2 * R]).view("<u2") & ID_MASK   # id: scale word bits 0-3
    if ids.size and int(ids.max()) >= n_tables:
        raise _bad(path, f"linear {key!r} uses codebook id {int(ids.max())}, only {n_tables} tables stored")


# ---- writer ----------------------------------------------------------------------------------------------------

def _layer_groups(cfg):
    """(attribute path, names) in the order LlamaModel builds its linears."""
    out = []
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        out += [((i, "wqkv"), [p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"]),
                ((i, "wo"), [p + "attn_output.weight"]),
                ((i, "wgu"), [p + "ffn_gate.weight", p + "ffn_up.weight"]),
                ((i, "wdown"), [p + "ffn_down.weight"])]
    out.append(((None, "output"), ["token_embd.weight" if cfg.tied_embeddings else "output.weight"]))
    return out


def tokenizer_record(model_path) -> dict:
    """What the native file stores to rebuild the tokenizer: GGUF tokenizer.* keys, or HF tokenizer files."""
    p = Path(model_path)
    if p.is_dir():
        return {"kind": "hf_files", "files": {n: (p / n).read_text(encoding="utf-8") for n in _HF_TOKENIZER_FILES
                                              if (p / n).is_file()}}
    if is_native(p):
        return NativeSource(p).tokenizer_record()
    from ..tokenizer import _field_value
    from .gguf import open_reader
    r = open_reader(p)
    meta = {k: _field_value(f) for k, f in r.fields.items() if k.startswith("tokenizer.")}
    return {"kind": "gguf_meta", "meta": meta, "built": _built_tokenizer(meta)}


def write_native(llm, out, force=False, layout=None) -> dict:
    """Write a loaded LLM (lowbit.load) as a .lowbit file at `out`, atomically. layout: {fmt: kernel name} to
    store some formats for another kernel's layout (tests use it to exercise the repack-at-load path)."""
    from dataclasses import asdict

    from .. import ops
    from ..formats.repack import deinterleave, interleave
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    m, cfg = llm.model, llm.config
    tensors, linears, blobs = {}, {}, []
    pos = [0]

    def add(name, arr, dt):
        arr = np.ascontiguousarray(arr)
        tensors[name] = {"offset": pos[0], "nbytes": int(arr.nbytes), "dtype": dt, "shape": list(arr.shape)}
        blobs.append((pos[0], arr))
        pos[0] = _align(pos[0] + arr.nbytes)

    emb = m.embed
    add("token_embd.weight", np.asarray(emb.rows), "u8")
    for i, L in enumerate(m.layers):
        add(f"blk.{i}.attn_norm.weight", L.attn_norm.astype(np.float32), "f32")
        add(f"blk.{i}.ffn_norm.weight", L.ffn_norm.astype(np.float32), "f32")
    add("output_norm.weight", m.output_norm.astype(np.float32), "f32")
    groups = []
    for (i, attr), names in _layer_groups(cfg):
        lin = getattr(m if i is None else m.layers[i], attr)
        if hasattr(lin, "parts"):      # SplitLinear (cb parts with > 16 tables together): one entry per part
            groups += [([n], p) for n, p in zip(names, lin.parts)]
        else:
            groups.append((names, lin))
    for names, lin in groups:
        key, dname = "|".join(names), f"packed:{'|'.join(names)}"
        rows = [int(r) for r in _part_rows(llm, names, lin.N)]
        e = {"parts": [[n, r] for n, r in zip(names, rows)], "N": int(lin.N), "K": int(lin.K), "data": dname}
        if hasattr(lin, "pw"):
            pw = lin.pw
            k = pw.kernel
            data = pw.data
            if layout and pw.fmt in layout:
                k = ops.KERNELS[[x["name"] for x in ops.KERNELS].index(layout[pw.fmt])]
                blocks = deinterleave(pw.data, pw.fmt, pw.N, pw.K, pw.kernel["R"], pw.kernel["B"])
                data = interleave(blocks, pw.fmt, pw.N, pw.K, k["R"], k["B"]).reshape(-1)
            e.update(kind="packed", format=pw.fmt, kernel=k["name"], R=k["R"], B=k["B"])
            add(dname, data, "u8")
            if pw.aux is not None:
                add(f"tables:{key}", pw.aux, "i8")
                e["aux"] = f"tables:{key}"
        else:
            w = lin.w
            add(dname, w, "f16" if w.dtype == np.float16 else "f32")
            e["kind"] = "float"
        linears[key] = e
    tok = tokenizer_record(llm.path)
    for k in [k for k in tok if k != "kind"]:
        text = json.dumps(tok[k], separators=(",", ":")).encode("utf-8")
        add(f"tokenizer:{k}", np.frombuffer(text, np.uint8), "u8")
        tok[k] = f"tokenizer:{k}"
    header = {"format": llm.format, "cpu_family": ops.runtime_info()["arch"], "config": asdict(cfg),
              "embedding_type": emb.type_name, "tokenizer": tok,
              "tensors": tensors, "linears": linears, "source": str(llm.path.name)}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    doff = _align(_PRE.size + len(hj))
    dsize = max((o + a.nbytes for o, a in blobs), default=0)
    with atomic_path(out, force) as tmp:
        with open(tmp, "wb") as f:
            f.write(_PRE.pack(MAGIC, VERSION, 0, len(hj), doff, dsize))
            f.write(hj)
            f.write(b"\0" * (doff - _PRE.size - len(hj)))
            for o, a in blobs:
                f.seek(doff + o)
                f.write(memoryview(a.reshape(-1)).cast("B"))
            f.truncate(doff + dsize)
            f.flush()
            os.fsync(f.fileno())
    return {"path": str(out), "bytes": doff + dsize, "linears": len(linears)}


def _part_rows(llm, names, N):
    """Rows of each fused part, from the load log (one line per source tensor, with its [N, K] shape)."""
    shapes = {}
    for n, _t, shape, *_ in llm.model.log:
        if isinstance(shape, tuple) and len(shape) == 2:
            shapes[n] = shape[0]
    if len(names) == 1:
        return [N]
    rows = [shapes.get(n) for n in names]
    if None in rows or sum(rows) != N:
        raise ValueError(f"cannot split fused weight {names} into its parts")
    return rows
