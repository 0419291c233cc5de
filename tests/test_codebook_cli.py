"""`lowbit quantize` on the embedded stories260K: the GGUF it writes holds cb tensors as documented, the runtime
loads it, and the quantized model's logits stay close to the float model's; bad arguments fail cleanly."""
import numpy as np
import pytest

import lowbit
from lowbit.cli import main
from lowbit.io.gguf import open_reader
from lowbit.registry import embedded_model

PROMPT = "Once upon a time, there was a little girl named Lily. She loved to"


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    out = {}
    for fmt in ("cb4", "cb2"):
        path = tmp_path_factory.mktemp(fmt) / f"s260_{fmt}.gguf"
        assert main(["quantize", str(embedded_model()), "--format", fmt, "--codebooks", "2", "-o", str(path)]) == 0
        out[fmt] = path
    return out


def test_file_layout(quantized):
    r = open_reader(quantized["cb4"])
    assert r.fields["lowbit.cb.version"].contents() == 2
    assert r.fields["lowbit.cb.blk.0.attn_q.weight.format"].contents() == "cb4"
    t = {x.name: x for x in r.tensors}
    q, tab = t["blk.0.attn_q.weight"], t["blk.0.attn_q.weight.cb_tables"]
    assert q.tensor_type.name == "I8" and tab.tensor_type.name == "I8"
    K = int(q.shape[0]) // 18 * 32                                  # 18-byte cb4 blocks: the id is in the scale
    assert K == 64 and int(tab.shape[0]) == 16 and int(tab.shape[1]) == 2
    assert t["token_embd.weight"].tensor_type.name == "F32"         # copied unchanged


def _logits(path, fmt=None):
    llm = lowbit.load(path, format=fmt)
    ids = llm.encode_prompt(PROMPT)
    return llm.model.prefill(ids, all_logits=True)


@pytest.mark.parametrize("fmt, max_rel", [("cb4", 0.15), ("cb2", 0.6)])
def test_runtime_loads_and_stays_close(quantized, fmt, max_rel):
    """Relative logit error vs the F32 model (measured: cb4 C=2 0.077, cb2 C=2 0.31; q4_0 0.106)."""
    ref = _logits(embedded_model(), "f32")
    got = _logits(quantized[fmt])
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert rel < max_rel, rel
    if fmt == "cb4":
        assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.8


def test_version_1_file_refused(quantized, tmp_path):
    """A file from before the id moved into the scale word would decode as garbage: refused, naming the file."""
    data = bytearray(quantized["cb4"].read_bytes())
    key = b"lowbit.cb.version"
    at = data.index(key) + len(key)                 # then u32 value type, u32 value
    assert int.from_bytes(data[at + 4: at + 8], "little") == 2
    data[at + 4: at + 8] = (1).to_bytes(4, "little")
    old = tmp_path / "old_cb.gguf"
    old.write_bytes(bytes(data))
    from lowbit.io import ModelFileError
    with pytest.raises(ModelFileError, match=r"old_cb\.gguf.*version 1.*re-quantize"):
        lowbit.load(old)


def test_split_parts_match_fused(quantized, monkeypatch):
    """Fused q/k/v and gate/up (tables stacked, ids offset) and the same parts run one by one (what happens past
    16 tables together) give the same logits bit for bit, for decode (M = 1) and prefill (M > 1)."""
    from lowbit.model.weights import PackedLinear, SplitLinear
    from lowbit.quantize import gguf_io
    fused = lowbit.load(quantized["cb4"])
    assert isinstance(fused.model.layers[0].wqkv, PackedLinear)
    monkeypatch.setattr(gguf_io, "can_fuse", lambda parts: False)
    split = lowbit.load(quantized["cb4"])
    assert isinstance(split.model.layers[0].wqkv, SplitLinear) and isinstance(split.model.layers[0].wgu, SplitLinear)
    ids = fused.encode_prompt(PROMPT)
    np.testing.assert_array_equal(split.model.prefill(ids, all_logits=True), fused.model.prefill(ids, all_logits=True))
    a, b = fused.model.prefill(ids[:1]), split.model.prefill(ids[:1])
    np.testing.assert_array_equal(a, b)


def test_failed_run_leaves_no_file(tmp_path, monkeypatch, capsys):
    """A run that fails mid-way (here: the learner raising on the third tensor) leaves neither OUT nor a
    temporary file behind."""
    from lowbit import quantize as q
    real, calls = q.quantize_tensor, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("learner failed")
        return real(*a, **k)
    monkeypatch.setattr(q, "quantize_tensor", flaky)
    out = tmp_path / "o.gguf"
    assert main(["quantize", str(embedded_model()), "--format", "cb4", "--codebooks", "2", "-o", str(out)]) == 1
    assert "learner failed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_sixteen_codebooks_run_unfused(tmp_path):
    """The cb4 default (C=16): q/k/v hold 48 tables together, more than a 4-bit id names, so they run split."""
    from lowbit.model.weights import SplitLinear
    path = tmp_path / "c16.gguf"
    assert main(["quantize", str(embedded_model()), "--format", "cb4", "--codebooks", "16", "-o", str(path)]) == 0
    llm = lowbit.load(path)
    assert isinstance(llm.model.layers[0].wqkv, SplitLinear)
    ref = _logits(embedded_model(), "f32")
    got = _logits(path)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.15


@pytest.mark.parametrize("args, msg", [
    (["--codebooks", "0"], "--codebooks"),
    (["--format", "q4_0", "--codebooks", "4"], "--codebooks applies"),
])
def test_bad_arguments(tmp_path, capsys, args, msg):
    rc = main(["quantize", str(embedded_model()), "-o", str(tmp_path / "o.gguf")] + args)
    assert rc == 1 and msg in capsys.readouterr().err


def test_refuses_overwrite_and_requantize(quantized, capsys, tmp_path):
    assert main(["quantize", str(quantized["cb4"]), "-o", str(quantized["cb4"])]) == 1
    assert "overwrite" in capsys.readouterr().err
    mine = tmp_path / "mine.gguf"               # a file the user already has: kept unless --force
    mine.write_bytes(b"precious")
    args = ["quantize", str(embedded_model()), "--format", "q4_0", "-o", str(mine)]
    assert main(args) == 1
    assert "--force" in capsys.readouterr().err and mine.read_bytes() == b"precious"
    assert main(args + ["--force"]) == 0 and mine.read_bytes()[:4] == b"GGUF"
    assert main(["quantize", str(quantized["cb4"]), "-o", str(tmp_path / "again.gguf")]) == 1
    assert "already holds codebook tensors" in capsys.readouterr().err
