"""Hostile model files: every loader (GGUF, safetensors, native .lowbit) rejects each class of bad file with a
ModelFileError (a ValueError) naming the problem, before allocating anything a header merely claims."""
import json
import struct
import tracemalloc

import numpy as np
import pytest

import lowbit
import tiny_llama
from lowbit.io import ModelFileError
from lowbit.io import native

TINY = dict(n_embd=64, n_head=4, n_head_kv=2, n_ff=96, n_layer=1, vocab=32, ctx=64)
MiB = 1 << 20


# ---- a hand-rolled GGUF writer: every count, length, dim, type and offset under the test's control ---------------
def _s(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def gguf_bytes(kv=(), tensors=(), version=3, align=32, n_kv=None, n_tensors=None, data=None, magic=b"GGUF"):
    """kv: (key, type id, payload bytes); tensors: (name, dims, ggml type, offset, nbytes of data)."""
    out = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                              len(kv) if n_kv is None else n_kv)
    for k, t, payload in kv:
        out += _s(k) + struct.pack("<I", t) + payload
    for name, dims, t, off, _ in tensors:
        out += _s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", t, off)
    out += b"\0" * (-len(out) % align)
    if data is None:
        data = b"\0" * max((off + n for _, _, _, off, n in tensors), default=0)
    return out + data


ARCH = ("general.architecture", 8, _s("llama"))
F32 = 0


def _load_err(path, match):
    with pytest.raises(ModelFileError, match=match):
        lowbit.load(path)


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory):
    return tiny_llama.write(tmp_path_factory.mktemp("g") / "tiny.gguf", **TINY)


@pytest.fixture(scope="module")
def good_native(tmp_path_factory, good_gguf):
    p = tmp_path_factory.mktemp("n") / "tiny.lowbit"
    native.write_native(lowbit.load(good_gguf), p)
    return p


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ---- GGUF ------------------------------------------------------------------------------------------------------
def test_gguf_truncated_anywhere(tmp_path, good_gguf):
    data = good_gguf.read_bytes()
    for n in (3, 10, 30, 200, len(data) // 3, len(data) - 1):
        _load_err(_write(tmp_path, f"cut{n}.gguf", data[:n]), "truncated|not a GGUF")


def test_gguf_wrong_magic_and_version(tmp_path, good_gguf):
    data = bytearray(good_gguf.read_bytes())
    _load_err(_write(tmp_path, "m.gguf", b"GGUX" + data[4:]), "not a GGUF file")
    _load_err(_write(tmp_path, "v.gguf", data[:4] + struct.pack("<I", 99) + data[8:]), "unsupported GGUF version 99")
    _load_err(_write(tmp_path, "be.gguf", data[:4] + struct.pack(">I", 3) + data[8:]), "big-endian")


def test_gguf_absurd_counts_allocate_nothing(tmp_path):
    for kw, match in ((dict(n_kv=1 << 60), "cannot fit"), (dict(n_tensors=1 << 61), "cannot fit")):
        p = _write(tmp_path, "c.gguf", gguf_bytes([ARCH], **kw))
        tracemalloc.start()
        _load_err(p, match)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 16 * MiB, f"rejecting {kw} allocated {peak} bytes"
    # a string / array claiming more bytes than the file holds
    _load_err(_write(tmp_path, "s.gguf", gguf_bytes([("k", 8, struct.pack("<Q", 1 << 62))])), "truncated")
    arr = struct.pack("<IQ", 8, 1 << 59)        # array of 2^59 strings
    _load_err(_write(tmp_path, "a.gguf", gguf_bytes([("k", 9, arr)])), "truncated")
    _load_err(_write(tmp_path, "t.gguf", gguf_bytes([("k", 42, b"")])), "unknown value type 42")


def test_gguf_absurd_dimensions(tmp_path):
    for dims, match in (([1 << 41, 4], "absurd dimensions"), ([0, 4], "absurd dimensions"),
                        ([1 << 20, 1 << 20], "needs .* bytes"), ([4] * 5, "5 dimensions"), ([33, 1], "block size")):
        t = ("token_embd.weight", dims, 2 if dims == [33, 1] else F32, 0, 64)
        _load_err(_write(tmp_path, "d.gguf", gguf_bytes([ARCH], [t])), match)


def test_gguf_offsets_past_end_or_overlapping(tmp_path):
    past = [("a", [16], F32, 1 << 30, 0)]
    _load_err(_write(tmp_path, "p.gguf", gguf_bytes([ARCH], past, data=b"\0" * 64)), "truncated")
    over = [("a", [16], F32, 0, 64), ("b", [16], F32, 32, 64)]
    _load_err(_write(tmp_path, "o.gguf", gguf_bytes([ARCH], over, data=b"\0" * 128)), "overlap")
    dup = [("a", [8], F32, 0, 32), ("a", [8], F32, 32, 32)]
    _load_err(_write(tmp_path, "dup.gguf", gguf_bytes([ARCH], dup)), "duplicate tensor name")


def test_gguf_bad_alignment(tmp_path):
    _load_err(_write(tmp_path, "u.gguf", gguf_bytes([ARCH], [("a", [8], F32, 4, 32)])), "not aligned to 32")
    for a in (0, 3, 1 << 30):
        kv = [ARCH, ("general.alignment", 4, struct.pack("<I", a))]
        _load_err(_write(tmp_path, "al.gguf", gguf_bytes(kv)), "general.alignment")
    _load_err(_write(tmp_path, "at.gguf", gguf_bytes([("general.alignment", 8, _s("x"))])), "must be a uint32")


def test_gguf_wrong_typed_metadata(tmp_path):
    p = tiny_llama.write(tmp_path / "w.gguf", **TINY)
    data = p.read_bytes()
    key = _s("llama.block_count") + struct.pack("<I", 4)        # uint32 block count ...
    i = data.index(key) + len(key)
    bad = data[:i - 4] + struct.pack("<I", 6) + data[i:]         # ... retyped as a float32
    _load_err(_write(tmp_path, "w2.gguf", bad), "non-positive model dimensions")


def test_gguf_garbage(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(20):
        body = rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()
        _load_err(_write(tmp_path, "g.gguf", b"GGUF" + struct.pack("<I", 3) + body), ".")
    _load_err(_write(tmp_path, "r.gguf", rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()), "not a GGUF")
    _load_err(_write(tmp_path, "e.gguf", b""), "not a GGUF|truncated")


# ---- safetensors -------------------------------------------------------------------------------------------------
def st_dir(tmp_path, header, data=b"", n=None):
    d = tmp_path / "hf"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 1, "intermediate_size": 96, "vocab_size": 32}))
    (d / "tokenizer.json").write_text("{}")
    h = json.dumps(header).encode()
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(h) if n is None else n) + h + data)
    return d


def _norm(off=(0, 16), dt="F32", shape=(4,)):
    return {"model.norm.weight": {"dtype": dt, "shape": list(shape), "data_offsets": list(off)}}


def test_safetensors_truncated_and_absurd_header(tmp_path):
    _load_err(st_dir(tmp_path, _norm(), b"\0" * 8), "unreadable safetensors|truncated")
    _load_err(st_dir(tmp_path, _norm(), b"\0" * 16, n=1 << 62), "unreadable safetensors")
    _load_err(st_dir(tmp_path, _norm(), b"\0" * 16, n=3), "unreadable safetensors")


def test_safetensors_offsets_past_end_or_overlapping(tmp_path):
    _load_err(st_dir(tmp_path, _norm(off=(0, 1 << 40), shape=(1 << 38,)), b"\0" * 16), "unreadable safetensors")
    h = dict(_norm(), **{"model.layers.0.input_layernorm.weight":
                         {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})
    _load_err(st_dir(tmp_path, h, b"\0" * 24), "unreadable safetensors")


def test_safetensors_absurd_dimensions_and_alignment(tmp_path):
    _load_err(st_dir(tmp_path, _norm(off=(0, 0), shape=(0, 4))), "expected 1-D")
    _load_err(st_dir(tmp_path, _norm(off=(0, 0), shape=(0,))), "positive sizes")
    q = {"model.layers.0.self_attn.q_proj.weight": {"dtype": "F32", "shape": [2, 2, 2], "data_offsets": [0, 32]}}
    _load_err(st_dir(tmp_path, q, b"\0" * 32), "expected 2-D")
    h = {"pad": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, **_norm(off=(1, 17))}
    _load_err(st_dir(tmp_path, h, b"\0" * 17), "not aligned")


def test_safetensors_garbage(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(20):
        body = rng.integers(0, 256, int(rng.integers(0, 2048)), dtype=np.uint8).tobytes()
        d = st_dir(tmp_path, {})
        (d / "model.safetensors").write_bytes(struct.pack("<Q", len(body)) + body)
        _load_err(d, ".")


# ---- native .lowbit ----------------------------------------------------------------------------------------------
def _native_with(good, edit=None, pre=None):
    """The good native file with its JSON header edited (edit(h) -> None) and/or preamble fields replaced."""
    s = good.read_bytes()
    h, doff, dsize = native.read_header(s, len(s))
    if edit:
        edit(h)
    hj = json.dumps(h).encode()
    d2 = native._align(40 + len(hj))
    f = dict(magic=native.MAGIC, version=native.VERSION, flags=0, hlen=len(hj), doff=d2, dsize=dsize)
    f.update(pre or {})
    return (native._PRE.pack(f["magic"], f["version"], f["flags"], f["hlen"], f["doff"], f["dsize"]) + hj +
            b"\0" * (d2 - 40 - len(hj)) + s[doff:])


def test_native_roundtrip_loads(good_native):
    """The fixture itself is sound (so every rejection below is about the one edit)."""
    assert lowbit.load(good_native).generate(prompt_ids=[1], max_tokens=3, temperature=0) is not None


def test_native_truncated(tmp_path, good_native):
    data = good_native.read_bytes()
    for n in (0, 7, 39, 100, len(data) // 2, len(data) - 1):
        _load_err(_write(tmp_path, f"c{n}.lowbit", data[:n]), "truncated|not a GGUF")


def test_native_wrong_magic_version_flags(tmp_path, good_native):
    _load_err(_write(tmp_path, "v.lowbit", _native_with(good_native, pre=dict(version=2))),
              "unsupported .lowbit version 2")
    _load_err(_write(tmp_path, "f.lowbit", _native_with(good_native, pre=dict(flags=4))), "unknown flags")
    data = good_native.read_bytes()
    p = _write(tmp_path, "m.lowbit", b"LOWBIT\0X" + data[8:])
    with pytest.raises(ModelFileError):            # not our magic: falls through to the GGUF check
        lowbit.load(p)


def test_native_absurd_header_sizes(tmp_path, good_native):
    tracemalloc.start()
    _load_err(_write(tmp_path, "h.lowbit", _native_with(good_native, pre=dict(hlen=1 << 62))), "header length")
    _load_err(_write(tmp_path, "h2.lowbit", _native_with(good_native, pre=dict(hlen=1 << 27))), "truncated")
    _load_err(_write(tmp_path, "d.lowbit", _native_with(good_native, pre=dict(dsize=1 << 60))), "truncated")
    _load_err(_write(tmp_path, "o.lowbit", _native_with(good_native, pre=dict(doff=8))), "data offset")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * MiB


def _edit_tensor(field, value, name="output_norm.weight"):
    def f(h):
        h["tensors"][name][field] = value
    return f


def test_native_absurd_dimensions(tmp_path, good_native):
    for shape, match in (([1 << 40, 1 << 40], "absurd shape"), ([0], "absurd shape"), ([64, 2], "bytes")):
        _load_err(_write(tmp_path, "s.lowbit", _native_with(good_native, _edit_tensor("shape", shape))), match)

    def big_n(h):
        e = next(iter(h["linears"].values()))
        e["N"] = 1 << 40
    _load_err(_write(tmp_path, "n.lowbit", _native_with(good_native, big_n)), "N must be|parts")

    def heads(h):
        h["config"]["n_head"] = 3
    _load_err(_write(tmp_path, "c.lowbit", _native_with(good_native, heads)), "inconsistent heads")


def test_native_offsets_past_end_overlapping_misaligned(tmp_path, good_native):
    _load_err(_write(tmp_path, "p.lowbit", _native_with(good_native, _edit_tensor("offset", 1 << 40))), "truncated")
    _load_err(_write(tmp_path, "a.lowbit", _native_with(good_native, _edit_tensor("offset", 65))), "aligned")

    def overlap(h):
        h["tensors"]["output_norm.weight"]["offset"] = h["tensors"]["blk.0.attn_norm.weight"]["offset"]
    _load_err(_write(tmp_path, "o.lowbit", _native_with(good_native, overlap)), "overlap")


def test_native_bad_layout_tags_and_types(tmp_path, good_native):
    def first(h):
        return next(e for e in h["linears"].values() if e["kind"] == "packed")

    for field, value, match in (("R", 3, "unsupported layout"), ("format", "q5_0", "format must be"),
                                ("kernel", 7, "kernel must be"), ("data", "nope", "missing tensor"),
                                ("K", "64", "K must be")):
        def f(h, field=field, value=value):
            first(h)[field] = value
        _load_err(_write(tmp_path, "l.lowbit", _native_with(good_native, f)), match)

    def cfg(h):
        h["config"]["n_layer"] = "1"
    _load_err(_write(tmp_path, "t.lowbit", _native_with(good_native, cfg)), "n_layer must be an integer")


def test_native_bad_codebook_ids_rejected(tmp_path):
    """cb kernels index the tables by id unchecked: an id past the stored tables must be refused at load."""
    from lowbit.formats.cb import prepare_aux
    from lowbit.ops import PackedWeight, kernel_for
    rng = np.random.default_rng(0)
    N, K, fmt = 16, 64, "cb4"
    blocks = rng.integers(0, 256, (N, K // 32, 18), dtype=np.uint8)
    blocks[..., 0] &= 0xF0                           # id 0: the scale word's low 4 bits
    pw = PackedWeight.from_blocks(blocks.reshape(N, -1), fmt, N, K, aux=np.ones((1, 16), np.int8))
    k = kernel_for(fmt)
    bad = pw.data.copy().reshape(-1, k["R"] * 18)
    bad[0, 2 * (k["R"] - 1)] |= 5                    # id 5 (last row's scale word) with one table
    from lowbit.io.native import _check_packed_ids
    with pytest.raises(ModelFileError, match="codebook id 5"):
        _check_packed_ids(bad.reshape(-1), fmt, k["R"], 1, "x", "w")
    _check_packed_ids(pw.data, fmt, k["R"], 1, "x", "w")   # the sound one passes
    assert prepare_aux(blocks, np.ones((1, 16), np.int8), fmt).shape == (16, 16)


def test_native_garbage_and_bad_json(tmp_path, good_native):
    rng = np.random.default_rng(2)
    data = good_native.read_bytes()
    hlen = native._PRE.unpack_from(data)[3]
    for i in range(10):
        b = bytearray(data)
        b[40:40 + hlen] = rng.integers(0, 256, hlen, dtype=np.uint8).tobytes()
        _load_err(_write(tmp_path, "j.lowbit", bytes(b)), "not valid JSON|bad .lowbit")
    _load_err(_write(tmp_path, "x.lowbit", native.MAGIC + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()),
              "unsupported .lowbit version|truncated|header")


def test_native_bad_tokenizer_record(tmp_path, good_native):
    def blob_is_norm(h):                     # the tokenizer "JSON" is really float weights
        h["tokenizer"]["built"] = "output_norm.weight"
    _load_err(_write(tmp_path, "a.lowbit", _native_with(good_native, blob_is_norm)), "missing tokenizer")

    def unhashable(h):
        h["tokenizer"]["built"] = ["x"]
    _load_err(_write(tmp_path, "b.lowbit", _native_with(good_native, unhashable)), "missing tokenizer")

    data = bytearray(good_native.read_bytes())
    h, doff, _ = native.read_header(data, len(data))
    t = h["tensors"]["tokenizer:built"]
    a = doff + t["offset"]
    data[a:a + t["nbytes"]] = b"[" * t["nbytes"]
    _load_err(_write(tmp_path, "c.lowbit", bytes(data)), "not valid JSON")
    blob = json.loads(good_native.read_bytes()[a:a + t["nbytes"]])
    blob["bos_id"], blob["tail"] = 10 ** 9, None          # (dropping the tail keeps it within the blob)
    new = json.dumps(blob, separators=(",", ":")).encode()
    assert len(new) <= t["nbytes"]
    data[a:a + t["nbytes"]] = new + b" " * (t["nbytes"] - len(new))
    _load_err(_write(tmp_path, "d.lowbit", bytes(data)), "outside the vocabulary")


def _regguf(src, dst, change):
    """Copy a GGUF with the gguf writer, passing each (name, array) through change()."""
    import gguf
    from lowbit.quantize.gguf_io import copy_fields
    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), "llama")
    copy_fields(r, w)
    for t in r.tensors:
        name, arr = change(t.name, np.array(t.data))
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def test_gguf_tensor_rank_mismatch(tmp_path, good_gguf):
    def q3d(name, a):
        return name, (a.reshape(2, -1, a.shape[-1]) if name == "blk.0.attn_q.weight" else a)
    _load_err(_regguf(good_gguf, tmp_path / "r.gguf", q3d), "blk.0.attn_q.weight has 3 dimensions")

    def norm2d(name, a):
        return name, (a.reshape(2, -1) if name == "blk.0.attn_norm.weight" else a)
    _load_err(_regguf(good_gguf, tmp_path / "n.gguf", norm2d), "blk.0.attn_norm.weight has 2 dimensions")


def test_gguf_shapes_inconsistent_with_each_other(tmp_path, good_gguf):
    """Every tensor individually sound, but they do not fit together (or the config): refused at load, not at
    the first matmul or embedding lookup."""
    def k32(name, a):
        return name, (np.zeros((a.shape[0], 32), np.float32) if name == "blk.0.attn_k.weight" else a)
    _load_err(_regguf(good_gguf, tmp_path / "k.gguf", k32), "fused matrices need 2-D \\[N, K\\] with one K")

    def norm7(name, a):
        return name, (np.ones(7, np.float32) if name == "blk.0.attn_norm.weight" else a)
    _load_err(_regguf(good_gguf, tmp_path / "n.gguf", norm7), "norm weights have shapes \\(7,\\)")

    def short_emb(name, a):
        return name, (a[:-4] if name == "token_embd.weight" else a)
    _load_err(_regguf(good_gguf, tmp_path / "e.gguf", short_emb), "tokenizer has 32 tokens but the embedding only 28")
