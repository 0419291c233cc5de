"""Open a GGUF with the `gguf` package (tensor data stays memory-mapped) and turn its metadata into a config."""
from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Sequence

import numpy as np

from . import ModelFileError
from .source import TensorSource

SUPPORTED_ARCHS = ("llama",)    # Llama-family layout: q/k/v/o, gate/up/down, RMSNorm, normal RoPE
# float types and the ggml block types gguf.quants can dequantize (or we repack directly)
SUPPORTED_TYPES = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                   "Q6_K", "IQ4_NL", "IQ4_XS"}


class ArrayParts(Sequence):
    """`ReaderField.parts` of a 1-D metadata array, made on demand: [key parts, item type, length, then per element the
    numpy views GGUFReader would make ([length, bytes] for a string, [value] for a scalar)]. GGUFReader builds
    those views eagerly, ~100k numpy objects for a 49k-token vocabulary (~2 s and ~70 MiB); this keeps one
    offset per element. `values()` decodes the whole array at once (the tokenizer's path)."""

    def __init__(self, reader, head, offs, itype, nptype, n):
        self._r, self.head, self._offs, self._n = reader, head, offs, n
        self.item_type, self._np = itype, nptype

    def __len__(self):
        return len(self.head) + self._n * (2 if self._np is None else 1)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = int(k)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError("field part index out of range")
        if k < len(self.head):
            return self.head[k]
        r, j = self._r, k - len(self.head)
        if self._np is not None:                       # scalar array: one contiguous run
            return r._get(self._offs + j * np.dtype(self._np).itemsize, self._np)
        i, sub = divmod(j, 2)
        a = int(self._offs[i])
        return r._get(a, np.uint64) if sub == 0 else r._get(a + 8, np.uint8, int(self._offs[i + 1]) - a - 8)

    def values(self) -> list:
        r = self._r
        if self._np is not None:
            return r._get(self._offs, self._np, self._n).tolist()
        o = self._offs
        base = int(o[0])
        buf = r.data[base:int(o[-1])].tobytes()
        starts = (o[:-1] - base + 8).tolist()
        ends = (o[1:] - base).tolist()
        return [buf[a:b].decode("utf-8", errors="replace") for a, b in zip(starts, ends)]


def _reader_class():
    import gguf
    from gguf import GGUFValueType

    class Reader(gguf.GGUFReader):
        """GGUFReader over a plain-ndarray view of its np.memmap: still memory-mapped (the view keeps the mapping
        alive), but slicing skips np.memmap's Python-level __array_finalize__. Large 1-D arrays (vocabulary,
        merges, scores) get lazy ArrayParts instead of one numpy view per element; the gguf package still
        walks the structure (keys, types, tensor infos)."""

        @property
        def data(self):
            return self._data

        @data.setter
        def data(self, v):
            self._data = v.view(np.ndarray) if isinstance(v, np.memmap) else v

        def _build_fields(self, offs, count):
            # GGUFReader._build_fields, except that lazy array parts are not copied into a list
            for _ in range(count):
                orig_offs = offs
                kv_klen, kv_kdata = self._get_str(offs)
                offs += int(kv_klen.nbytes + kv_kdata.nbytes)
                raw_kv_type = self._get(offs, np.uint32)
                offs += int(raw_kv_type.nbytes)
                parts = [kv_klen, kv_kdata, raw_kv_type]
                size, fparts, fidxs, ftypes = self._get_field_parts(offs, raw_kv_type[0])
                if isinstance(fparts, ArrayParts):
                    fparts.head[:0] = parts
                    parts, idxs = fparts, range(fidxs.start + 3, fidxs.stop + 3, fidxs.step)
                else:
                    parts, idxs = parts + list(fparts), [i + 3 for i in fidxs]
                self._push_field(gguf.ReaderField(orig_offs, str(bytes(kv_kdata), encoding="utf-8"), parts, idxs,
                                                  ftypes), skip_sum=True)
                offs += size
            return offs

        def _get_field_parts(self, orig_offs, raw_type):
            if GGUFValueType(raw_type) != GGUFValueType.ARRAY or self.byte_order != "I":
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            n, offs = int(alen[0]), orig_offs + 12
            try:
                itype = GGUFValueType(int(raw_itype[0]))
            except ValueError:
                return super()._get_field_parts(orig_offs, raw_type)   # let the reader report it
            nptype = self.gguf_scalar_to_np.get(itype)
            if n == 0 or (nptype is None and itype != GGUFValueType.STRING):
                return super()._get_field_parts(orig_offs, raw_type)   # empty or nested arrays: rare, small
            if nptype is not None:
                end = offs + n * np.dtype(nptype).itemsize
                if end > len(self.data):
                    raise ValueError(f"array at offset {orig_offs} runs past the end of the file")
                parts = ArrayParts(self, [raw_itype, alen], offs, itype, nptype, n)
                return end - orig_offs, parts, range(2, 2 + n), [GGUFValueType.ARRAY, itype]
            starts, size, unpack = [], len(self.data), struct.Struct("<Q").unpack_from
            for _ in range(n):                     # string i: u64 length at starts[i], then its bytes
                if offs + 8 > size:
                    raise ValueError(f"string array at offset {orig_offs} runs past the end of the file")
                starts.append(offs)
                offs += 8 + unpack(self.data, offs)[0]
            if offs > size:
                raise ValueError(f"string array at offset {orig_offs} runs past the end of the file")
            starts.append(offs)
            parts = ArrayParts(self, [raw_itype, alen], np.array(starts, dtype=np.int64), itype, None, n)
            return offs - orig_offs, parts, range(3, 2 + 2 * n, 2), [GGUFValueType.ARRAY, itype]

    return Reader


def open_reader(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"model file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF')")
    from .gguf_check import check_gguf_file
    check_gguf_file(path)              # bounds-check the header before the reader trusts it (hostile files)
    try:
        reader = _reader_class()(path, "r")
    except Exception as e:  # the reader fails deep inside numpy on short files: say what it means
        raise ModelFileError(f"{path}: truncated or corrupt GGUF ({type(e).__name__}: {e})") from None
    size = os.path.getsize(path)
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size or t.data.nbytes != t.n_bytes:
            raise ModelFileError(f"{path}: truncated GGUF: tensor {t.name} needs bytes up to "
                                 f"{t.data_offset + t.n_bytes}, the file has {size}")
    return reader


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def read_config(reader, path=""):
    from ..model.config import LlamaConfig
    arch = _field(reader, "general.architecture")
    if arch is None:
        raise ModelFileError(f"{path}: GGUF has no general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ModelFileError(f"{path}: unsupported architecture {arch!r}; lowbit runs {', '.join(SUPPORTED_ARCHS)}")

    def need(key):
        v = _field(reader, f"{arch}.{key}")
        if v is None:
            raise ModelFileError(f"{path}: GGUF metadata lacks {arch}.{key}")
        return v

    n_embd = int(need("embedding_length"))
    n_head = int(need("attention.head_count"))
    if n_head < 1:
        raise ModelFileError(f"{path}: attention.head_count is {n_head}")
    key_length = int(_field(reader, f"{arch}.attention.key_length", 0))
    value_length = int(_field(reader, f"{arch}.attention.value_length", key_length))
    if value_length != key_length:
        raise ModelFileError(f"{path}: attention.value_length {value_length} != key_length {key_length} is not "
                             f"supported")
    if key_length == n_embd // n_head and n_embd % n_head == 0:
        key_length = 0                                     # the usual width: store nothing extra
    head_dim = key_length or n_embd // n_head
    rope_dim = int(_field(reader, f"{arch}.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ModelFileError(f"{path}: partial rotary (rope dim {rope_dim} of head dim {head_dim}) is not supported")
    emb = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if emb is None:
        raise ModelFileError(f"{path}: GGUF has no token_embd.weight tensor")
    vocab = int(_field(reader, f"{arch}.vocab_size", int(emb.shape[1])))
    rope_scale, factors = _rope_scaling(reader, arch, path, head_dim)
    return LlamaConfig(
        arch=arch, name=str(_field(reader, "general.name", os.path.basename(str(path)))),
        n_layer=int(need("block_count")), n_embd=n_embd, n_ff=int(need("feed_forward_length")),
        n_head=n_head, n_head_kv=int(_field(reader, f"{arch}.attention.head_count_kv", n_head)),
        n_ctx_train=int(_field(reader, f"{arch}.context_length", 2048)), vocab_size=vocab,
        rms_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_base=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        tied_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
        rope_scale=rope_scale, rope_freq_factors=factors, key_length=key_length)


ROPE_FREQS = "rope_freqs.weight"     # llama.cpp's per-frequency RoPE divisors (Llama 3.1+), not a weight matrix


def _rope_scaling(reader, arch, path, head_dim):
    """-> (linear position scale, per-frequency factors or None), as llama.cpp reads them; the scaling types
    lowbit does not implement (yarn, longrope) are refused rather than run with the wrong positions."""
    kind = _field(reader, f"{arch}.rope.scaling.type")
    factor = _field(reader, f"{arch}.rope.scaling.factor")
    if factor is None:
        factor = _field(reader, f"{arch}.rope.scale_linear")      # the older key for the same thing
    scale = 1.0
    if kind not in (None, "none", "linear"):
        raise ModelFileError(f"{path}: RoPE scaling type {kind!r} is not supported (lowbit runs none, linear "
                             f"and per-frequency factors)")
    if factor is not None and float(factor) != 0.0:       # llama.cpp applies it whatever the type says
        scale = float(factor)
        if not (math.isfinite(scale) and scale > 0):
            raise ModelFileError(f"{path}: RoPE scaling factor {factor!r} is not a positive number")
    t = next((t for t in reader.tensors if t.name == ROPE_FREQS), None)
    if t is None:
        return scale, None
    if t.tensor_type.name != "F32" or t.shape.tolist() != [head_dim // 2]:
        raise ModelFileError(f"{path}: {ROPE_FREQS} is {t.tensor_type.name} {t.shape.tolist()}; expected F32 "
                             f"[{head_dim // 2}] (head dim {head_dim})")
    f = np.asarray(t.data, np.float64)
    if not (np.isfinite(f).all() and (f > 0).all()):
        raise ModelFileError(f"{path}: {ROPE_FREQS} holds non-positive or non-finite factors")
    return scale, tuple(f.tolist())


class GGUFSource(TensorSource):
    """Tensors by GGUF name: (ggml type name, [N, K] shape, raw memmap bytes). Q/K already in GGUF rope order."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.reader = open_reader(self.path)
        try:
            self.config = read_config(self.reader, self.path)
        except ModelFileError:
            raise
        except (TypeError, ValueError, OverflowError, IndexError) as e:   # e.g. a string where a count belongs
            raise ModelFileError(f"{self.path}: bad GGUF metadata ({type(e).__name__}: {e})") from None
        self._t = {t.name: t for t in self.reader.tensors if t.name != ROPE_FREQS}   # that one is in config
        self._pending = []               # file ranges read by raw() whose pages can leave our RSS
        for t in self.reader.tensors:
            if t.tensor_type.name not in SUPPORTED_TYPES and not (t.tensor_type.name == "I8" and
                                                                  "lowbit.cb.version" in self.reader.fields):
                raise ModelFileError(f"{self.path}: tensor {t.name} has unsupported type {t.tensor_type.name} "
                                     f"(supported: {', '.join(sorted(SUPPORTED_TYPES))})")
            want_nd = 1 if t.name.endswith("norm.weight") else 2      # what the model builder unpacks
            if t.name.endswith(".weight") and t.name != ROPE_FREQS and len(t.shape) != want_nd:
                raise ModelFileError(f"{self.path}: tensor {t.name} has {len(t.shape)} dimensions, expected {want_nd}")

    def names(self):
        return list(self._t)

    def info(self, name):
        t = self._t[name]
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))   # gguf lists ne0 (K) first
        return t.tensor_type.name, shape

    def raw(self, name):
        # The builder reads tensors one after another and copies what it keeps: the pages of the tensors read
        # before this one leave our RSS now (they stay in the page cache; a later read just faults them in
        # again), so loading never holds the whole mapped file resident on top of the runtime weights.
        self._release(self._pending)
        t = self._t[name]
        self._pending = [(int(t.data_offset), int(t.n_bytes))]
        return t.data

    def _release(self, ranges):
        mm = getattr(getattr(getattr(self.reader, "data", None), "base", None), "_mmap", None)
        if mm is None or not hasattr(mm, "madvise"):
            return
        for off, n in ranges:
            a, b = off - off % mmap.PAGESIZE, min(len(mm), off + n)
            if b > a:
                try:
                    mm.madvise(mmap.MADV_DONTNEED, a, b - a)   # read-only file mapping: contents unchanged
                except (OSError, ValueError):
                    return

    def file_rows(self, name):
        """(offset, row_bytes) of a 2-D tensor's data in the file, for row lookups without the full mapping."""
        t = self._t[name]
        N = int(t.shape[-1])
        return self.path, int(t.data_offset), N, int(t.n_bytes) // N

    def drop_metadata(self):
        """Free the reader's parsed key/values once the tokenizer is built, and the header pages they were read
        from (~3 MB for a 49k vocabulary); tensors stay available."""
        if self.reader is not None:
            self.reader.fields.clear()
            self._release([(0, int(self.reader.data_offset))])

    def close(self):
        self._t, self._pending = {}, []
        self.reader = None             # the last reference to the file mapping (with the tensor views above)
