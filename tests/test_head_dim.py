"""Heads whose width is not n_embd / n_head (GGUF attention.key_length, HF head_dim; Mistral Nemo, Minitron):
logits track the float64 forward in prefill and decode, for float and 4-bit weights, from GGUF, HF safetensors and
.lowbit, and export-gguf keeps the width."""
import json

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

import lowbit
import tiny_llama
from llama_reference import reference_logits
from lowbit.cli import main
from lowbit.io import ModelFileError
from lowbit.io.gguf import GGUFSource
from lowbit.model import LlamaModel

LOGIT_ATOL = 1e-3            # f32 runtime vs the float64 reference (as in test_model_types)
TOKS = [1, 5, 9, 22, 40, 3, 17, 60, 8, 31, 12, 44, 7, 50, 2, 19, 33, 61, 25, 11]
KL = 96                      # n_embd 256, 4 heads: q is [384, 256], attn_output [256, 384]


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    return tiny_llama.write(tmp_path_factory.mktemp("hd") / "wide.gguf", key_length=KL, tied=False)


def test_config_and_shapes(wide):
    m = LlamaModel(GGUFSource(wide), "f32")
    assert m.config.head_dim == KL and m.config.n_head * KL != m.config.n_embd
    assert (m.layers[0].wo.N, m.layers[0].wo.K) == (256, 4 * KL)


@pytest.mark.parametrize("fmt,tol", [("f32", None), ("q8_0", 0.05), ("q4_0", 0.5)])
def test_logits_track_reference(wide, fmt, tol):
    ref = reference_logits(wide, TOKS)
    m = LlamaModel(GGUFSource(wide), fmt)
    got = m.prefill(TOKS, all_logits=True)
    dec = LlamaModel(GGUFSource(wide), fmt)
    steps = np.stack([dec.decode(t)[0].copy() for t in TOKS])
    if tol is None:
        np.testing.assert_allclose(got, ref, atol=LOGIT_ATOL, rtol=0)
        np.testing.assert_allclose(steps, ref, atol=LOGIT_ATOL, rtol=0)
    else:       # quantized: relative RMS error of all logits (random weights; a wrong layout gives ~1). Decode
        # and prefill differ by float order here (1/sqrt(96) is inexact), which can flip an int8 activation.
        for x in (got, steps):
            assert np.linalg.norm(x - ref) / np.linalg.norm(ref) < tol


def test_native_and_export_keep_the_width(tmp_path, wide):
    ref = LlamaModel(GGUFSource(wide), "q4_0").prefill(TOKS, all_logits=True)
    nat = tmp_path / "w.lowbit"
    assert main(["convert", str(wide), "-o", str(nat), "--format", "q4_0"]) == 0
    llm = lowbit.load(nat)
    assert llm.config.head_dim == KL
    assert np.array_equal(llm.model.prefill(TOKS, all_logits=True), ref)
    out = tmp_path / "w.gguf"
    assert main(["export-gguf", str(wide), "-o", str(out), "--type", "f32"]) == 0
    r = gguf.GGUFReader(str(out))
    assert r.fields["llama.attention.key_length"].contents() == KL
    np.testing.assert_allclose(lowbit.load(out, format="f32").model.prefill(TOKS, all_logits=True),
                               reference_logits(wide, TOKS), atol=LOGIT_ATOL, rtol=0)


def test_safetensors_head_dim(tmp_path, wide):
    from test_model_safetensors import HF_NAMES, _to_hf_rope_order
    from lowbit.tokenizer import Tokenizer
    r = gguf.GGUFReader(str(wide))
    d = tiny_llama.DIMS
    out = {}
    for t in r.tensors:
        w = np.array(t.data, np.float32)
        if t.name in ("token_embd.weight", "output.weight", "output_norm.weight"):
            name = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
                    "output_norm.weight": "model.norm.weight"}[t.name]
        else:
            _, i, kind, _ = t.name.split(".")
            if kind in ("attn_q", "attn_k"):
                w = _to_hf_rope_order(w, d["n_head"] if kind == "attn_q" else d["n_head_kv"])
            name = f"model.layers.{i}.{HF_NAMES[kind]}.weight"
        out[name] = np.ascontiguousarray(w)
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file(out, str(hf / "model.safetensors"))
    (hf / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": d["n_embd"], "intermediate_size": d["n_ff"], "head_dim": KL,
        "num_attention_heads": d["n_head"], "num_key_value_heads": d["n_head_kv"], "num_hidden_layers": d["n_layer"],
        "vocab_size": d["vocab"], "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": d["ctx"]}))
    Tokenizer.from_gguf(r)._hf.save(str(hf / "tokenizer.json"))
    llm = lowbit.load(hf, format="f32")
    assert llm.config.head_dim == KL
    np.testing.assert_allclose(llm.model.prefill(TOKS, all_logits=True), reference_logits(wide, TOKS),
                               atol=LOGIT_ATOL, rtol=0)


@pytest.mark.parametrize("kl,vl,match", [(96, 64, "value_length 64 != key_length 96"),
                                         (33, 33, "inconsistent heads")])
def test_bad_widths_refused(tmp_path, kl, vl, match):
    p = tiny_llama.write(tmp_path / "b.gguf", key_length=kl, value_length=vl)
    with pytest.raises(ModelFileError, match=match):
        lowbit.load(p)


_EVAL_IDS = r"""
import json, sys
import numpy as np
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=128, n_threads=2, logits_all=True, verbose=False, type_k=0, type_v=0)
toks = json.loads(sys.argv[2])
llm.eval(toks)
json.dump(np.array(llm.scores[:len(toks)], dtype=np.float32).tolist(), sys.stdout)
"""


def test_llama_cpp_agrees(wide):
    """llama.cpp (the peer venv, when present; its KV cache F32) on the same file: measured 1.4e-6 max."""
    import subprocess

    from test_export_gguf import _peer_python
    py = _peer_python()
    if py is None:
        pytest.skip("llama-cpp-python not installed (pip install lowbit[peer])")
    r = subprocess.run([py, "-c", _EVAL_IDS, str(wide), json.dumps(TOKS)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    theirs = np.array(json.loads(r.stdout), np.float32)
    np.testing.assert_allclose(LlamaModel(GGUFSource(wide), "f32").prefill(TOKS, all_logits=True), theirs,
                               atol=1e-4, rtol=0)
