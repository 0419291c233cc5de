"""A bounds-checked walk over a GGUF header before gguf.GGUFReader sees it. The reader trusts counts and lengths
from the file (it fails with odd numpy errors, or loops per claimed entry); this pass checks every count,
length, type, dimension, offset and the alignment against the file size, and says what is wrong. It reads the
header only (tensor data is never touched) and allocates nothing proportional to a claimed size."""
from __future__ import annotations

import struct

from . import ModelFileError

# GGUFValueType -> fixed byte size (STRING = 8, ARRAY = 9 are variable)
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
MAX_DIMS = 4                    # GGML_MAX_DIMS
MAX_KEY = 1 << 16
MAX_NAME = 1 << 12


def _type_sizes():
    import gguf
    return {int(t): v for t, v in gguf.GGML_QUANT_SIZES.items()}


class _Walker:
    def __init__(self, buf, size, path):
        self.b, self.size, self.path, self.o = buf, size, path, 0

    def fail(self, what):
        return ModelFileError(f"{self.path}: bad GGUF: {what}")

    def need(self, n, what):
        if n < 0 or self.o + n > self.size:
            raise ModelFileError(f"{self.path}: truncated GGUF: {what} needs {n} bytes at offset {self.o}, "
                                 f"the file has {self.size}")

    def u32(self, what):
        self.need(4, what)
        (v,) = struct.unpack_from("<I", self.b, self.o)
        self.o += 4
        return v

    def u64(self, what):
        self.need(8, what)
        (v,) = struct.unpack_from("<Q", self.b, self.o)
        self.o += 8
        return v

    def string(self, what, limit=None):
        n = self.u64(what + " length")
        if limit is not None and n > limit:
            raise self.fail(f"{what} is {n} bytes long (limit {limit})")
        self.need(n, what)
        s = bytes(self.b[self.o:self.o + n]) if limit is not None else None
        self.o += n
        return s

    def value(self, vtype, what, depth=0):
        if vtype in _SCALAR:
            self.need(_SCALAR[vtype], what)
            v = self.b[self.o:self.o + _SCALAR[vtype]]
            self.o += _SCALAR[vtype]
            return v
        if vtype == _STRING:
            self.string(what)
            return None
        if vtype == _ARRAY:
            if depth > 0:
                raise self.fail(f"{what}: nested arrays are not supported")
            itype = self.u32(what + " item type")
            count = self.u64(what + " count")
            if itype in _SCALAR:
                self.need(count * _SCALAR[itype], f"{what} ({count} items)")
                self.o += count * _SCALAR[itype]
            elif itype == _STRING:
                self.need(count * 8, f"{what} ({count} strings)")     # every string has an 8-byte length
                o, b, size, unpack = self.o, self.b, self.size, _U64.unpack_from   # hot: 50k-200k vocab strings
                try:
                    for _ in range(count):
                        o += 8 + unpack(b, o)[0]
                        if o > size:
                            raise struct.error
                except struct.error:      # a length field past the end (b is exactly the file)
                    raise ModelFileError(f"{self.path}: truncated GGUF: {what} runs past the end of the file") \
                        from None
                self.o = o
            else:
                raise self.fail(f"{what}: unknown array item type {itype}")
            return None
        raise self.fail(f"{what}: unknown value type {vtype}")


def check_gguf(buf, size: int, path="<buffer>") -> None:
    """Raise ModelFileError unless `buf` (the file's bytes, e.g. an mmap) is a structurally sound little-endian
    GGUF v2/v3: every length inside the file, tensor dims sane, data offsets aligned, in bounds, not overlapping."""
    w = _Walker(buf, size, path)
    w.need(4, "magic")
    if bytes(buf[0:4]) != b"GGUF":
        raise ModelFileError(f"{path} is not a GGUF file (magic {bytes(buf[0:4])!r}, expected b'GGUF')")
    w.o = 4
    version = w.u32("version")
    if version not in (2, 3):
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in (2, 3):
            raise w.fail("big-endian GGUF files are not supported")
        raise w.fail(f"unsupported GGUF version {version} (lowbit reads 2 and 3)")
    n_tensors = w.u64("tensor count")
    n_kv = w.u64("key/value count")
    # the smallest key/value is 13 bytes (empty key, type, one byte), the smallest tensor info 24
    if n_kv * 13 > size or n_tensors * 24 > size:
        raise w.fail(f"{n_tensors} tensors / {n_kv} key/values cannot fit in a {size}-byte file")
    alignment = 32
    for i in range(n_kv):
        key = w.string(f"key {i}", MAX_KEY).decode("utf-8", "replace")
        vtype = w.u32(f"type of key {key!r}")
        v = w.value(vtype, f"value of {key!r}")
        if key == "general.alignment":
            if vtype != 4:
                raise w.fail("general.alignment must be a uint32")
            alignment = struct.unpack("<I", bytes(v))[0]
            if alignment == 0 or alignment & (alignment - 1) or alignment > (1 << 20):
                raise w.fail(f"general.alignment {alignment} is not a power of two <= 1 MiB")
    sizes = _type_sizes()
    infos = []
    names = set()
    for i in range(n_tensors):
        name = w.string(f"tensor {i} name", MAX_NAME).decode("utf-8", "replace")
        nd = w.u32(f"tensor {name!r} dimension count")
        if not 1 <= nd <= MAX_DIMS:
            raise w.fail(f"tensor {name!r} has {nd} dimensions (1..{MAX_DIMS} allowed)")
        dims = [w.u64(f"tensor {name!r} dims") for _ in range(nd)]
        ttype = w.u32(f"tensor {name!r} type")
        off = w.u64(f"tensor {name!r} offset")
        if ttype not in sizes:
            raise w.fail(f"tensor {name!r} has unknown type {ttype}")
        if name in names:
            raise w.fail(f"duplicate tensor name {name!r}")
        names.add(name)
        if any(d < 1 or d > (1 << 40) for d in dims):
            raise w.fail(f"tensor {name!r} has absurd dimensions {dims}")
        bs, ts = sizes[ttype]
        if dims[0] % bs:
            raise w.fail(f"tensor {name!r}: first dimension {dims[0]} is not a multiple of its block size {bs}")
        n = 1
        for d in dims:
            n *= d
        nbytes = n // bs * ts
        if nbytes > size:
            raise w.fail(f"tensor {name!r} with dimensions {dims} needs {nbytes} bytes, the file has {size}")
        if off % alignment:
            raise w.fail(f"tensor {name!r} offset {off} is not aligned to {alignment}")
        infos.append((off, nbytes, name))
    data_start = -(-w.o // alignment) * alignment
    infos.sort()
    for j, (off, nbytes, name) in enumerate(infos):
        if data_start + off + nbytes > size:
            raise ModelFileError(f"{path}: truncated GGUF: tensor {name!r} needs bytes up to "
                                 f"{data_start + off + nbytes}, the file has {size}")
        if j and off < infos[j - 1][0] + infos[j - 1][1]:
            raise w.fail(f"tensors {infos[j - 1][2]!r} and {name!r} overlap")


def check_gguf_file(path) -> None:
    import mmap
    import os
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ModelFileError(f"{path}: truncated GGUF (empty file)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            check_gguf(m, size, os.fspath(path))
