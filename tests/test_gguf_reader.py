"""lowbit.io.gguf's reader (lazy array parts) must expose exactly what gguf.GGUFReader does: same fields, offsets,
types, data indices, parts and contents, on every kind of metadata array."""
from pathlib import Path

import gguf
import numpy as np
import pytest

from lowbit.io import ModelFileError
from lowbit.io.gguf import ArrayParts, open_reader
from lowbit.tokenizer import _field_value

STORIES = Path(__file__).resolve().parents[1] / "src" / "lowbit" / "data" / "stories260K.gguf"


def _assert_same(path):
    ours, ref = open_reader(path), gguf.GGUFReader(str(path))
    assert list(ours.fields) == list(ref.fields)
    for k, b in ref.fields.items():
        a = ours.fields[k]
        assert (a.offset, a.name, list(a.types), list(a.data)) == (b.offset, b.name, list(b.types), list(b.data)), k
        assert len(a.parts) == len(b.parts), k
        for i in sorted({0, 1, 2, 3, 4, 5, len(b.parts) - 2, len(b.parts) - 1, -1} & set(range(-1, len(b.parts)))):
            assert a.parts[i].dtype == b.parts[i].dtype and np.array_equal(a.parts[i], b.parts[i]), (k, i)
        assert a.contents() == b.contents(), k
        if b.types[0] == gguf.GGUFValueType.ARRAY and len(b.data) > 1:
            assert a.contents(1) == b.contents(1) and a.contents(slice(1, None)) == b.contents(slice(1, None)), k
            if b.types[-1] != gguf.GGUFValueType.ARRAY:
                assert _field_value(a) == b.contents(), k
    assert [(t.name, t.data_offset, t.n_bytes) for t in ours.tensors] == \
           [(t.name, t.data_offset, t.n_bytes) for t in ref.tensors]
    return ours


def test_reader_matches_gguf_on_stories():
    r = _assert_same(STORIES)
    assert isinstance(r.fields["tokenizer.ggml.tokens"].parts, ArrayParts)      # the fast path was taken
    assert isinstance(r.fields["tokenizer.ggml.scores"].parts, ArrayParts)


def _write(path, fill):
    w = gguf.GGUFWriter(str(path), "llama")
    fill(w)
    w.add_tensor("t.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_reader_matches_gguf_on_every_array_kind(tmp_path):
    p = tmp_path / "arrays.gguf"

    def fill(w):
        w.add_array("x.strings", ["", "a", "héllo wörld", "\u2581tok", "x" * 300, ""])
        w.add_array("x.one_string", ["only"])
        w.add_array("x.empty", [])
        w.add_array("x.ints", [1, -2, 3, 2**20])
        w.add_array("x.floats", [0.5, -1.25, 3.0])
        w.add_array("x.bools", [True, False, True])
        w.add_key_value("x.u8s", [1, 2, 255], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT8)
        w.add_key_value("x.u64s", [2**40, 7], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT64)
        w.add_string("x.plain", "plain string")
        w.add_uint32("x.scalar", 7)
    _write(p, fill)
    r = _assert_same(p)
    assert _field_value(r.fields["x.strings"]) == ["", "a", "héllo wörld", "\u2581tok", "x" * 300, ""]
    assert _field_value(r.fields["x.u64s"]) == [2**40, 7]


def test_reader_string_array_past_end_is_an_error(tmp_path):
    p = tmp_path / "cut.gguf"
    _write(p, lambda w: w.add_array("x.strings", ["abc"] * 1000))
    data = p.read_bytes()
    p.write_bytes(data[: data.index(b"abc") + 2000])         # cut inside the string array
    with pytest.raises(ModelFileError):
        open_reader(p)
