"""Every supported GGUF tensor type loads: F32 runtime weights equal gguf.quants' dequantization, Q4_0/IQ4_NL/
Q8_0 blocks are repacked byte for byte when they match the runtime format, and logits track a float64 forward."""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

import tiny_llama
from llama_reference import reference_logits
from lowbit.formats.repack import interleave
from lowbit.io.gguf import GGUFSource
from lowbit.model import LlamaModel

TYPES = {"token_embd.weight": T.F16, "attn_q.weight": T.Q4_K, "attn_k.weight": T.Q6_K, "attn_v.weight": T.BF16,
         "attn_output.weight": T.Q4_1, "ffn_gate.weight": T.IQ4_NL, "ffn_up.weight": T.Q8_0,
         "ffn_down.weight": T.Q4_0, "output.weight": T.F32}
LOGIT_ATOL = 1e-3            # f32 runtime vs f64 reference, logits of magnitude ~10


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama.write(tmp_path_factory.mktemp("m") / "tiny.gguf", TYPES, tied=False)


def _load(path, fmt):
    src = GGUFSource(path)
    m = LlamaModel(src, fmt)
    return m, src


def test_f32_weights_equal_gguf_dequantize(tiny):
    m, src = _load(tiny, "f32")
    t = {x.name: x for x in src.reader.tensors}
    deq = lambda n: dequantize(t[n].data, t[n].tensor_type)
    for i, L in enumerate(m.layers):
        p = f"blk.{i}."
        np.testing.assert_array_equal(L.wqkv.w, np.concatenate([deq(p + "attn_q.weight"), deq(p + "attn_k.weight"),
                                                                deq(p + "attn_v.weight")]))
        np.testing.assert_array_equal(L.wo.w, deq(p + "attn_output.weight"))
        np.testing.assert_array_equal(L.wgu.w, np.concatenate([deq(p + "ffn_gate.weight"), deq(p + "ffn_up.weight")]))
        np.testing.assert_array_equal(L.wdown.w, deq(p + "ffn_down.weight"))
    rows = np.zeros((3, m.config.n_embd), np.float32)
    m.embed.lookup([0, 5, 63], rows)
    np.testing.assert_array_equal(rows, deq("token_embd.weight")[[0, 5, 63]])


def test_q4_0_blocks_repacked_without_requantizing(tiny):
    m, src = _load(tiny, "q4_0")
    t = {x.name: x for x in src.reader.tensors}
    for i, L in enumerate(m.layers):
        raw = np.asarray(t[f"blk.{i}.ffn_down.weight"].data)
        pw = L.wdown.pw
        want = interleave(raw, "q4_0", pw.N, pw.K, pw.kernel["R"], pw.kernel["B"]).reshape(-1)
        np.testing.assert_array_equal(pw.data, want)
    what = {r[0]: (r[3], r[4]) for r in m.log}
    assert what["blk.0.ffn_down.weight"] == ("q4_0", "Q4_0 blocks repacked as-is")
    assert what["blk.0.attn_q.weight"][0] == "q4_0" and "Q4_K dequantized" in what["blk.0.attn_q.weight"][1]
    assert what["output.weight"][0] == "q8_0"       # sensitive matrix re-quantized from F32: kept at 8 bits


def test_logits_match_reference_for_all_types(tiny):
    toks = [1, 7, 9, 11, 13, 40, 2]
    ref = reference_logits(tiny, toks)
    m, _ = _load(tiny, "f32")
    np.testing.assert_allclose(m.prefill(toks, all_logits=True), ref, atol=LOGIT_ATOL, rtol=0)
    # quantized runtimes: relative RMS error of all logits. Random Gaussian weights are 4-bit's worst case;
    # measured 0.013 (q8_0), 0.38 (q4_0), 0.30 (iq4_nl). A wrong layout or scale gives ~1.
    for fmt, tol in (("q8_0", 0.05), ("q4_0", 0.5), ("iq4_nl", 0.5)):
        m, _ = _load(tiny, fmt)
        got = m.prefill(toks, all_logits=True)
        err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert err < tol, (fmt, err)
