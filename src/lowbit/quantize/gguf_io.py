"""Codebook-quantized models as GGUF files (written and read with the `gguf` package).

ggml has no codebook types, so a cb tensor is stored as:
  tensor  <name>             I8  [N, K/32 * block_bytes]   the plain cb4/cb2 blocks (formats/cb.py), row-major
  tensor  <name>.cb_tables   I8  [C, 16]                    its int8 codebooks
  key     lowbit.cb.<name>.format = "cb4" | "cb2"
  key     lowbit.cb.version = 2    (1: the id was a separate byte after the scale; such files are refused)
Every other tensor and key is copied unchanged. CodebookSource wraps the runtime's GGUFSource so a cb tensor
reports type "CB4"/"CB2" with its logical [N, K] shape, raw() gives its blocks and tables(name) its codebooks;
fuse() joins tensors along N (ids of later parts offset by the earlier tables) for fused q/k/v, gate/up, when
the parts hold at most 16 tables together (4-bit ids); otherwise the parts run as separate weights."""
from __future__ import annotations

import numpy as np

from ..formats.cb import BLOCK_BYTES, ID_MASK, MAX_TABLES, block_words
from .learn import CodebookTensor

VERSION = 2
TABLES_SUFFIX = ".cb_tables"


def fmt_key(name: str) -> str:
    return f"lowbit.cb.{name}.format"


def copy_fields(reader, writer) -> None:
    import gguf
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(key, field.contents(), vtype, sub)


def add_codebook_tensor(writer, name: str, ct: CodebookTensor) -> None:
    import gguf
    writer.add_tensor(name, ct.blocks.view(np.int8), raw_dtype=gguf.GGMLQuantizationType.I8)
    writer.add_tensor(name + TABLES_SUFFIX, np.ascontiguousarray(ct.tables), raw_dtype=gguf.GGMLQuantizationType.I8)
    writer.add_string(fmt_key(name), ct.fmt)


def add_copied_tensor(writer, t) -> None:
    import gguf
    data = np.asarray(t.data)
    if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        writer.add_tensor(t.name, np.ascontiguousarray(data))
    else:
        writer.add_tensor(t.name, np.ascontiguousarray(data), raw_dtype=t.tensor_type)


def is_codebook_gguf(reader) -> bool:
    return "lowbit.cb.version" in reader.fields


def check_version(reader, path) -> None:
    """Only files in this layout load: an older one would be read as garbage."""
    from ..io import ModelFileError
    try:
        v = int(reader.fields["lowbit.cb.version"].contents())
    except (KeyError, TypeError, ValueError):
        v = None
    if v != VERSION:
        raise ModelFileError(f"{path}: codebook file version {v} (lowbit.cb.version); this lowbit reads version "
                             f"{VERSION} (the codebook id lives in the scale word since version 2): re-quantize "
                             f"the original model with `lowbit quantize`")


def codebook_formats(reader) -> dict:
    """{tensor name: "cb4" | "cb2"} from the lowbit.cb.<name>.format keys."""
    pre, suf = "lowbit.cb.", ".format"
    return {k[len(pre):-len(suf)]: f.contents() for k, f in reader.fields.items()
            if k.startswith(pre) and k.endswith(suf)}


def read_codebook_tensor(reader, name: str, tensors=None, fmt=None) -> CodebookTensor:
    """One cb tensor of a GGUF written by `lowbit quantize`."""
    from ..io import ModelFileError
    if fmt is None:
        f = reader.fields.get(fmt_key(name))
        if f is None:
            raise ModelFileError(f"tensor {name} is not a codebook tensor (no {fmt_key(name)})")
        fmt = f.contents()
    if fmt not in BLOCK_BYTES:
        raise ModelFileError(f"tensor {name}: unknown codebook format {fmt!r}")
    tensors = tensors or {t.name: t for t in reader.tensors}
    if name not in tensors or name + TABLES_SUFFIX not in tensors:
        raise ModelFileError(f"codebook tensor {name} or its tables {name + TABLES_SUFFIX} is missing")
    blocks = np.asarray(tensors[name].data).view(np.uint8)
    tables = np.asarray(tensors[name + TABLES_SUFFIX].data).view(np.int8).reshape(-1, 16)
    N, row = blocks.shape
    if row % BLOCK_BYTES[fmt]:
        raise ModelFileError(f"tensor {name}: row of {row} bytes is not whole {fmt} blocks")
    return CodebookTensor(fmt, N, row // BLOCK_BYTES[fmt] * 32, tables, blocks)


def can_fuse(parts: list) -> bool:
    return (all(p.fmt == parts[0].fmt and p.K == parts[0].K for p in parts) and
            sum(p.C for p in parts) <= MAX_TABLES)


def fuse(parts: list) -> CodebookTensor:
    """Concatenate cb tensors with the same format and K along N: tables stacked, ids offset per part."""
    fmt, K = parts[0].fmt, parts[0].K
    if any(p.fmt != fmt or p.K != K for p in parts):
        raise ValueError("fused codebook tensors must share format and K")
    if sum(p.C for p in parts) > MAX_TABLES:
        raise ValueError(f"fused codebook tensors have more than {MAX_TABLES} tables in total (4-bit ids)")
    bb = BLOCK_BYTES[fmt]
    blocks, off = [], 0
    for p in parts:
        b = np.array(p.blocks, dtype=np.uint8).reshape(-1, bb)
        h = block_words(b, fmt)
        if h.size and int((h & ID_MASK).max()) >= p.C:
            raise ValueError(f"codebook block uses id {int((h & ID_MASK).max())}, the tensor has {p.C} tables")
        b[:, :2] = (h + np.uint16(off)).astype("<u2").reshape(-1, 1).view(np.uint8)   # id < C: no carry
        blocks.append(b.reshape(p.N, -1))
        off += p.C
    return CodebookTensor(fmt, sum(p.N for p in parts), K, np.concatenate([p.tables for p in parts]),
                          np.concatenate(blocks))


class CodebookSource:
    """Wraps a TensorSource over a GGUF from `lowbit quantize`: cb tensors look like type CB4/CB2 [N, K]."""

    def __init__(self, src):
        self.src = src
        self.config = src.config
        self.path = getattr(src, "path", "")
        self._tensors = {t.name: t for t in src.reader.tensors}
        check_version(src.reader, self.path)
        self._fmts = codebook_formats(src.reader)     # read now: the runtime drops the metadata after the tokenizer
        self._cb = {}

    def __getattr__(self, name):                       # anything else a TensorSource offers
        return getattr(self.src, name)

    def _get(self, name):
        if name not in self._cb:
            self._cb[name] = read_codebook_tensor(self.src.reader, name, self._tensors, self._fmts[name])
        return self._cb[name]

    def is_cb(self, name):
        return name in self._fmts

    def names(self):
        return [n for n in self.src.names() if not n.endswith(TABLES_SUFFIX)]

    def info(self, name):
        if self.is_cb(name):
            ct = self._get(name)
            return ct.fmt.upper(), (ct.N, ct.K)
        return self.src.info(name)

    def raw(self, name):
        return self._get(name).blocks if self.is_cb(name) else self.src.raw(name)

    def tables(self, name):
        return self._get(name).tables

    def codebook_tensor(self, name) -> CodebookTensor:
        return self._get(name)

    def codebook_linear(self, names, log):
        """The runtime weight for cb tensors `names` fused along N (PackedWeight with its tables as aux), or a
        list of one PackedWeight per name when they cannot share one (more than 16 tables together)."""
        from ..ops import PackedWeight
        parts = [self._get(n) for n in names]
        fused = len(parts) == 1 or can_fuse(parts)
        for p, n in zip(parts, names):
            log.append((n, p.fmt.upper(), (p.N, p.K), p.fmt, f"{p.fmt} blocks + {p.C} codebooks repacked as-is"
                        + ("" if fused else " (not fused: over 16 tables together)")))
        if not fused:
            return [PackedWeight.from_blocks(p.blocks, p.fmt, p.N, p.K, aux=p.tables) for p in parts]
        ct = parts[0] if len(parts) == 1 else fuse(parts)
        return PackedWeight.from_blocks(ct.blocks, ct.fmt, ct.N, ct.K, aux=ct.tables)

    def file_rows(self, name):
        return self.src.file_rows(name)

    def close(self):
        self._cb.clear()
        self.src.close()
