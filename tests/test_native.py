"""Native .lowbit files (lowbit convert): the same logits as the model they came from, weights used in place from
the mapping when the stored layout is this CPU's kernel layout, repacked otherwise, never overwritten silently."""
import numpy as np
import pytest

import lowbit
from lowbit.cli import main
from lowbit.io import native
from lowbit.registry import embedded_model

PROMPT = "Once upon a time, there was a little girl named Lily."


def _logits(llm):
    return llm.model.prefill(llm.encode_prompt(PROMPT), all_logits=True)


def _packed(llm):
    return [getattr(L, a).pw for L in llm.model.layers for a in ("wqkv", "wo", "wgu") if hasattr(getattr(L, a), "pw")]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("native")
    out = {}
    for fmt in ("q4_0", "q8_0", "iq4_nl"):
        out[fmt] = d / f"s_{fmt}.lowbit"
        assert main(["convert", "--format", fmt, "-o", str(out[fmt])]) == 0
    return out


@pytest.mark.parametrize("fmt", ["q4_0", "q8_0", "iq4_nl"])
def test_same_logits_and_zero_copy(converted, fmt):
    ref = lowbit.load(format=fmt)
    nat = lowbit.load(converted[fmt])
    assert nat.format == fmt
    np.testing.assert_array_equal(_logits(nat), _logits(ref))     # same blocks, same kernel: bit-identical
    pws = _packed(nat)
    assert pws and all(pw.kernel["name"] == lowbit.ops.kernel_for(fmt)["name"] for pw in pws)
    # used in place: read-only views of the file mapping, not copies
    assert all(not pw.data.flags.owndata and not pw.data.flags.writeable for pw in pws)
    assert any("mapped zero-copy" in line[4] for line in nat.model.log)
    assert nat.generate(PROMPT, max_tokens=8, temperature=0) == ref.generate(PROMPT, max_tokens=8, temperature=0)


def test_other_layout_is_repacked(tmp_path, converted):
    src = lowbit.load(format="q4_0")
    p = tmp_path / "s_4x4.lowbit"
    native.write_native(src, p, layout={"q4_0": "q4_0_4x4__scalar"})
    nat = lowbit.load(p)
    whats = {line[4] for line in nat.model.log if line[3] == "q4_0"}
    assert whats == {f"stored for q4_0_4x4__scalar (R=4, B=4): repacked for {lowbit.ops.kernel_for('q4_0')['name']}"}
    assert all(pw.data.flags.owndata or pw.data.base is not None and pw.data.flags.writeable for pw in _packed(nat))
    np.testing.assert_array_equal(_logits(nat), _logits(lowbit.load(converted["q4_0"])))


def test_info_says_which(converted, tmp_path):
    text = lowbit.describe_model(converted["q4_0"], print_=False)
    assert "prepacked for q4_0_" in text and "mapped zero-copy" in text
    p = tmp_path / "r.lowbit"
    native.write_native(lowbit.load(format="q8_0"), p, layout={"q8_0": "q8_0_4x8__scalar"})
    assert "repacked for" in lowbit.describe_model(p, print_=False)


def test_never_overwrites_without_force(tmp_path, capsys):
    p = tmp_path / "x.lowbit"
    p.write_bytes(b"precious")
    assert main(["convert", "-o", str(p)]) == 1
    assert "exists" in capsys.readouterr().err and p.read_bytes() == b"precious"
    with pytest.raises(FileExistsError):
        native.write_native(lowbit.load(), p)
    assert p.read_bytes() == b"precious"
    assert main(["convert", "-o", str(p), "--force"]) == 0
    assert native.is_native(p) and lowbit.load(p).format == "q4_0"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.lowbit"]        # no temp file left behind


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    p = tmp_path / "y.lowbit"

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(native.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        native.write_native(lowbit.load(), p)
    assert list(tmp_path.iterdir()) == []


def test_format_is_the_files(converted):
    with pytest.raises(ValueError, match="pre-packed as q4_0"):
        lowbit.load(converted["q4_0"], format="q8_0")


def test_tensor_data_64_byte_aligned(converted):
    data = converted["q4_0"].read_bytes()
    h, doff, dsize = native.read_header(data, len(data))
    assert doff % 64 == 0 and doff + dsize == len(data)
    assert all(t["offset"] % 64 == 0 for t in h["tensors"].values())
    assert {e["kernel"] for e in h["linears"].values() if e["kind"] == "packed"} == \
        {lowbit.ops.kernel_for("q4_0")["name"], lowbit.ops.kernel_for("q8_0")["name"]}   # ffn_down/output kept q8


@pytest.mark.parametrize("fmt, C", [("cb4", 2), ("cb2", 2), ("cb4", 16)])
def test_codebook_convert(tmp_path, fmt, C):
    """C=16: fused q/k/v would need 48 tables (ids have 4 bits), so the parts are stored and run unfused."""
    from lowbit.model.weights import SplitLinear
    q = tmp_path / f"{fmt}.gguf"
    assert main(["quantize", str(embedded_model()), "--format", fmt, "--codebooks", str(C), "-o", str(q)]) == 0
    out = tmp_path / f"{fmt}.lowbit"
    assert main(["convert", str(q), "--format", fmt, "-o", str(out)]) == 0
    nat, ref = lowbit.load(out), lowbit.load(q)
    assert nat.format == fmt and any(pw.fmt == fmt and pw.aux is not None for pw in _packed(nat))
    assert isinstance(nat.model.layers[0].wqkv, SplitLinear) == (C == 16)
    np.testing.assert_array_equal(_logits(nat), _logits(ref))


def test_codebook_convert_quantizes_other_models(tmp_path, capsys):
    out = tmp_path / "c.lowbit"
    assert main(["convert", "--format", "cb2", "-o", str(out)]) == 0
    assert "learning codebooks" in capsys.readouterr().out
    nat = lowbit.load(out)
    assert nat.format == "cb2" and any(pw.fmt == "cb2" for pw in _packed(nat))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.lowbit"]          # the codebook GGUF is gone
    assert nat.generate(PROMPT, max_tokens=4, temperature=0)


def test_from_hf_directory(tmp_path):
    """A safetensors checkpoint directory converts too; the tokenizer travels as its tokenizer.json."""
    import json
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    E, F, V = 64, 128, lowbit.load().tokenizer.vocab_size
    shapes = {"model.embed_tokens.weight": (V, E), "model.norm.weight": (E,), "lm_head.weight": (V, E)}
    for i in range(2):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (E,), p + "post_attention_layernorm.weight": (E,),
                       p + "self_attn.q_proj.weight": (E, E), p + "self_attn.k_proj.weight": (32, E),
                       p + "self_attn.v_proj.weight": (32, E), p + "self_attn.o_proj.weight": (E, E),
                       p + "mlp.gate_proj.weight": (F, E), p + "mlp.up_proj.weight": (F, E),
                       p + "mlp.down_proj.weight": (E, F)})
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file({k: (0.05 * rng.standard_normal(s) + (1 if len(s) == 1 else 0)).astype(np.float32)
               for k, s in shapes.items()}, str(hf / "model.safetensors"))
    (hf / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": E, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": F, "vocab_size": V,
        "tie_word_embeddings": False}))
    (hf / "tokenizer.json").write_text(lowbit.load().tokenizer._hf.to_str())
    out = tmp_path / "hf.lowbit"
    assert main(["convert", str(hf), "-o", str(out)]) == 0
    nat, ref = lowbit.load(out), lowbit.load(hf)
    assert nat.tokenizer.encode(PROMPT) == ref.tokenizer.encode(PROMPT)
    np.testing.assert_array_equal(_logits(nat), _logits(ref))
