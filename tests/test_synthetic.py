"""make-synthetic writes a GGUF that gguf's reader (and lowbit's loader) accept, with the real model's shapes."""
import gguf
import numpy as np
import pytest

import lowbit
from lowbit import synthetic
from lowbit.cli import main as cli


@pytest.mark.parametrize("qtype", ["f16", "q4_0", "q8_0", "iq4_nl"])
def test_tiny_file_has_expected_tensors(tmp_path, qtype):
    p = synthetic.write(tmp_path / f"t-{qtype}.gguf", "tiny", qtype)
    r = gguf.GGUFReader(p)
    s = synthetic.SHAPES["tiny"]
    assert "synthetic" in r.fields["general.name"].contents()
    assert r.fields["lowbit.synthetic"].contents() is True
    assert r.fields["llama.block_count"].contents() == s.n_layers
    assert r.fields["llama.attention.head_count_kv"].contents() == s.n_kv_heads
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == s.vocab and len(set(tokens)) == s.vocab and tokens[3] == "<0x00>"
    t = {x.name: x for x in r.tensors}
    assert len(t) == 2 + 9 * s.n_layers + 1
    want = dict(synthetic.SHAPES["tiny"].matrices())
    for name, (rows, cols) in want.items():
        assert t[name].tensor_type.name == qtype.upper()
        assert [int(v) for v in t[name].shape] == [cols, rows]          # GGUF lists ne0 (the row length) first
    w = t["blk.1.ffn_down.weight"]
    deq = gguf.quants.dequantize(w.data, w.tensor_type).reshape(s.dim, s.ffn)
    assert np.isfinite(deq).all() and 0.01 < deq.std() < 0.03            # N(0, 0.02^2) survived quantization
    assert np.all(t["output_norm.weight"].data == 1)


def test_deterministic_and_seeded(tmp_path):
    a = synthetic.write(tmp_path / "a.gguf", "tiny", "q4_0", seed=3).read_bytes()
    b = synthetic.write(tmp_path / "b.gguf", "tiny", "q4_0", seed=3).read_bytes()
    c = synthetic.write(tmp_path / "c.gguf", "tiny", "q4_0", seed=4).read_bytes()
    assert a == b and a != c


def test_real_shapes():
    s = synthetic.SHAPES["1b-16l"]
    assert (s.dim, s.n_layers, s.ffn, s.n_heads, s.n_kv_heads, s.vocab) == (2048, 16, 5632, 32, 4, 32000)
    assert 834e6 < s.n_params() < 837e6
    assert abs(synthetic.SHAPES["tinyllama-1.1b"].n_params() - 1.1e9) < 0.01e9
    assert abs(synthetic.SHAPES["llama2-7b"].n_params() - 6.74e9) < 0.01e9
    assert abs(synthetic.SHAPES["smollm2-135m"].n_params() - 134.5e6) < 1e6
    assert abs(synthetic.SHAPES["llama3.2-1b"].n_params() - 1.2358e9) < 0.001e9


def test_llama3_rope_factors(tmp_path, monkeypatch):
    """A shape with llama3 RoPE writes rope_freqs.weight, which the loader turns into the config's factors."""
    import dataclasses

    from lowbit.model.config import llama3_freq_factors
    monkeypatch.setitem(synthetic.SHAPES, "tiny3", dataclasses.replace(synthetic.SHAPES["tiny"],
                                                                       llama3_rope=(8.0, 1.0, 4.0, 64)))
    llm = lowbit.load(synthetic.write(tmp_path / "t3.gguf", "tiny3", "q4_0"))
    want = tuple(np.float32(llama3_freq_factors(16, 10000.0, 8.0, 1.0, 4.0, 64)).tolist())
    assert llm.config.rope_freq_factors == want and want[0] == 1.0 and want[-1] == 8.0


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown shape"):
        synthetic.write(tmp_path / "x.gguf", "gpt5", "q4_0")
    with pytest.raises(ValueError, match="unknown type"):
        synthetic.write(tmp_path / "x.gguf", "tiny", "q3_k")


def test_cli_and_runtime_load(tmp_path):
    out = tmp_path / "cli.gguf"
    assert cli(["make-synthetic", "--shape", "tiny", "--type", "q4_0", "-o", str(out)]) == 0
    lowbit = pytest.importorskip("lowbit.api", reason="runtime not built yet")
    llm = lowbit.load(str(out), format="q4_0")
    logits = llm.model.prefill([1, 5, 7, 9])
    assert logits.shape[-1] == synthetic.SHAPES["tiny"].vocab and np.isfinite(logits).all()
