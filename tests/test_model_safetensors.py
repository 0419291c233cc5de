"""A HF safetensors directory (written here from the embedded stories260K, with Q/K rows in HF's rotate-half
order) loads to the same model as the GGUF: same logits, same greedy text."""
import json

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

import lowbit
from lowbit.io import ModelFileError
from lowbit.registry import embedded_model

HF_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
            "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
            "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def _to_hf_rope_order(w, n_head):          # inverse of llama.cpp's permute: [head][i][half] -> [head][half][i]
    N = w.shape[0]
    return w.reshape(n_head, N // n_head // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)


def write_hf(dest, dtype=np.float32, tokenizer=True):
    r = gguf.GGUFReader(str(embedded_model()))
    meta = lambda k: r.fields[k].contents()
    H, Hkv = int(meta("llama.attention.head_count")), int(meta("llama.attention.head_count_kv"))
    out = {}
    for t in r.tensors:
        w = np.array(t.data, dtype=np.float32)
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        else:
            _, i, kind, _ = t.name.split(".")
            if kind == "attn_q":
                w = _to_hf_rope_order(w, H)
            elif kind == "attn_k":
                w = _to_hf_rope_order(w, Hkv)
            name = f"model.layers.{i}.{HF_NAMES[kind]}.weight"
        out[name] = np.ascontiguousarray(w.astype(dtype))
    dest.mkdir(parents=True, exist_ok=True)
    save_file(out, str(dest / "model.safetensors"))
    (dest / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
        "num_attention_heads": H, "num_key_value_heads": Hkv, "num_hidden_layers": 5, "vocab_size": 512,
        "rms_norm_eps": float(meta("llama.attention.layer_norm_rms_epsilon")), "rope_theta": 10000.0,
        "max_position_embeddings": 2048, "tie_word_embeddings": False}))
    if tokenizer:
        from lowbit.tokenizer import Tokenizer
        Tokenizer.from_gguf(r)._hf.save(str(dest / "tokenizer.json"))
        (dest / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                                "add_bos_token": True}))
    return dest


@pytest.fixture(scope="module")
def gguf_f32():
    return lowbit.load(format="f32")


def test_safetensors_f32_equals_gguf(tmp_path, gguf_f32):
    hf = lowbit.load(write_hf(tmp_path / "hf"), format="f32")
    toks = [1, 403, 407, 261, 378, 65, 300]
    gguf_f32.model.reset()
    a = gguf_f32.model.prefill(toks, all_logits=True)
    b = hf.model.prefill(toks, all_logits=True)
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    assert hf.generate("Once upon a time", max_tokens=24, temperature=0) == \
        gguf_f32.generate("Once upon a time", max_tokens=24, temperature=0)


def test_safetensors_f16_and_q8_0(tmp_path, gguf_f32):
    hf = lowbit.load(write_hf(tmp_path / "hf16", np.float16), format="q8_0")
    assert {r[1] for r in hf.model.log} == {"F16"}
    text = hf.generate("Once upon a time", max_tokens=12, temperature=0)
    assert text.startswith(", there was a little girl")


def test_safetensors_missing_tokenizer(tmp_path):
    with pytest.raises(ModelFileError, match="missing tokenizer"):
        lowbit.load(write_hf(tmp_path / "notok", tokenizer=False))
