"""RoPE frequency scaling (Llama 3.1+ rope_freqs, linear position scaling) read from GGUF, HF config.json and
.lowbit files, applied by prefill and decode, and carried through convert, export-gguf and quantize."""
import json
import math

import gguf
import numpy as np
import pytest

import lowbit
import tiny_llama
from llama_reference import reference_logits
from lowbit.cli import main
from lowbit.io import ModelFileError
from lowbit.io.gguf import GGUFSource
from lowbit.model import LlamaModel
from lowbit.model.config import llama3_freq_factors

LOGIT_ATOL = 1e-3            # f32 runtime vs the float64 reference (as in test_model_types)
TOKS = [1, 5, 9, 22, 40, 3, 17, 60, 8, 31, 12, 44, 7, 50, 2, 19, 33, 61, 25, 11]
HD = tiny_llama.DIMS["n_embd"] // tiny_llama.DIMS["n_head"]
FACTORS = np.geomspace(1.0, 40.0, HD // 2).astype(np.float32)     # slows the low frequencies, as llama3 does


def _tiny(tmp_path, name="t.gguf", factors=FACTORS, rope_scaling=None, **kw):
    extra = None if factors is None else ("rope_freqs.weight", np.asarray(factors, np.float32))
    return tiny_llama.write(tmp_path / name, extra_tensor=extra, rope_scaling=rope_scaling, **kw)


def _logits(path, fmt="f32"):
    return LlamaModel(GGUFSource(path), fmt).prefill(TOKS, all_logits=True)


def test_llama3_factors_match_hf_formula():
    """Against HF's vectorised form (inv_freq rescaled with np.where), for Llama 3.2's parameters."""
    hd, base, factor, lo, hi, orig = 64, 500000.0, 32.0, 1.0, 4.0, 8192
    inv = 1.0 / base ** (np.arange(0, hd, 2) / hd)
    wavelen = 2 * np.pi / inv
    scaled = np.where(wavelen > orig / lo, inv / factor, inv)
    smooth = (orig / wavelen - lo) / (hi - lo)
    mid = ~(wavelen < orig / hi) & ~(wavelen > orig / lo)
    scaled = np.where(mid, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    ours = np.asarray(llama3_freq_factors(hd, base, factor, lo, hi, orig))
    np.testing.assert_allclose(inv / ours, scaled, rtol=1e-12)
    assert ours[0] == 1.0 and ours[-1] == factor and 1.0 < ours[mid].min() < ours[mid].max() < factor
    with pytest.raises(ValueError, match="llama3"):
        llama3_freq_factors(hd, base, factor, 4.0, 1.0, orig)          # high <= low


def test_rope_freqs_tensor_applied_in_prefill_and_decode(tmp_path):
    path = _tiny(tmp_path)
    ref = reference_logits(path, TOKS)
    plain = reference_logits(_tiny(tmp_path, "plain.gguf", factors=None), TOKS)
    assert np.abs(ref - plain).max() > 50 * LOGIT_ATOL      # the factors change the logits: the check can fail
    np.testing.assert_allclose(_logits(path), ref, atol=LOGIT_ATOL, rtol=0)
    m = LlamaModel(GGUFSource(path), "f32")
    dec = np.stack([m.decode(t)[0].copy() for t in TOKS])     # the GEMV path reads the same table
    np.testing.assert_allclose(dec, ref, atol=LOGIT_ATOL, rtol=0)
    assert "rope_freqs.weight" not in GGUFSource(path).names()    # config, not a weight


def test_unit_factors_are_bit_identical_to_none(tmp_path):
    a = _logits(_tiny(tmp_path, "ones.gguf", factors=np.ones(HD // 2)))
    b = _logits(_tiny(tmp_path, "none.gguf", factors=None))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["linear", None, "none"])      # llama.cpp applies the factor whatever the type
def test_linear_scaling(tmp_path, kind):
    path = _tiny(tmp_path, factors=None, rope_scaling=(kind, 4.0))
    assert GGUFSource(path).config.rope_scale == 4.0
    ref = reference_logits(path, TOKS)
    assert np.abs(ref - reference_logits(_tiny(tmp_path, "p.gguf", factors=None), TOKS)).max() > 50 * LOGIT_ATOL
    np.testing.assert_allclose(_logits(path), ref, atol=LOGIT_ATOL, rtol=0)


@pytest.mark.parametrize("factors,scaling,match", [
    (np.ones(HD // 2 - 1), None, "expected F32"),
    (np.r_[np.ones(HD // 2 - 1), -1.0], None, "non-positive"),
    (np.r_[np.ones(HD // 2 - 1), np.nan], None, "non-finite"),
    (None, ("yarn", 4.0), "'yarn' is not supported"),
    (None, ("linear", -2.0), "not a positive number"),
])
def test_bad_rope_scaling_is_refused(tmp_path, factors, scaling, match):
    path = _tiny(tmp_path, factors=factors, rope_scaling=scaling)
    with pytest.raises(ModelFileError, match=match):
        lowbit.load(path)


# ---- HF safetensors ------------------------------------------------------------------------------------------
def _hf(tmp_path, rope_scaling):
    from test_model_safetensors import write_hf
    d = write_hf(tmp_path / "hf")
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_scaling"] = rope_scaling
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_safetensors_llama3_equals_gguf_with_rope_freqs(tmp_path):
    """A HF directory with "llama3" rope_scaling runs like the GGUF llama.cpp's converter makes of it (the same
    weights plus rope_freqs.weight); stories260K: head dim 8, wavelengths 6.3, 63, 628, 6283."""
    rs = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 200}
    hf = lowbit.load(_hf(tmp_path, rs), format="f32")
    f = hf.config.rope_freq_factors
    assert f == llama3_freq_factors(8, 10000.0, 8.0, 1.0, 4.0, 200)
    assert f[0] == 1.0 and 1.0 < f[1] < 8.0 and f[2] == f[3] == 8.0        # kept, interpolated, slowed
    g = _with_rope(tmp_path / "g.gguf", f, None)
    ids = hf.tokenizer.encode("Once upon a time, there was a little dog named Max")
    a = hf.model.prefill(ids, all_logits=True)
    b = lowbit.load(g, format="f32").model.prefill(ids, all_logits=True)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    plain = lowbit.load(format="f32").model.prefill(ids, all_logits=True)
    assert np.abs(a - plain).max() > 0.05


@pytest.mark.parametrize("rs,match", [({"rope_type": "yarn", "factor": 4.0}, "'yarn' is not supported"),
                                      ({"rope_type": "llama3", "factor": 8.0}, "missing"),
                                      ("linear", "must be an object")])
def test_safetensors_bad_rope_scaling(tmp_path, rs, match):
    with pytest.raises(ModelFileError, match=match):
        lowbit.load(_hf(tmp_path, rs))


def test_safetensors_linear(tmp_path):
    hf = lowbit.load(_hf(tmp_path, {"type": "linear", "factor": 2.0}), format="f32")
    assert hf.config.rope_scale == 2.0 and hf.config.rope_freq_factors is None


# ---- carried through convert / export-gguf / quantize ------------------------------------------------------
def _with_rope(out, factors, scale):
    """The embedded stories260K GGUF plus RoPE scaling, written the way llama.cpp's converter writes it."""
    from lowbit.io.gguf import open_reader
    from lowbit.quantize import gguf_io
    from lowbit.registry import embedded_model
    r = open_reader(str(embedded_model()))
    w = gguf.GGUFWriter(str(out), "llama")
    gguf_io.copy_fields(r, w)
    if scale is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(scale)
    if factors is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(factors, np.float32))
    for t in r.tensors:
        gguf_io.add_copied_tensor(w, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


STORIES_FACTORS = (1.0, 1.7, 8.0, 8.0)
PROMPT = "Once upon a time, there was a little dog named Max"


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    return _with_rope(tmp_path_factory.mktemp("rope") / "s.gguf", STORIES_FACTORS, 2.0)


def _prefill(path, fmt):
    llm = lowbit.load(path, format=fmt)
    return llm, llm.model.prefill(llm.tokenizer.encode(PROMPT), all_logits=True)


def test_convert_keeps_rope_scaling(tmp_path, scaled):
    out = tmp_path / "s.lowbit"
    assert main(["convert", str(scaled), "-o", str(out), "--format", "q4_0"]) == 0
    llm, a = _prefill(out, "q4_0")
    assert llm.config.rope_freq_factors == tuple(np.float32(STORIES_FACTORS).tolist())
    assert llm.config.rope_scale == 2.0
    assert np.array_equal(a, _prefill(scaled, "q4_0")[1])


def test_export_gguf_keeps_rope_scaling(tmp_path, scaled):
    out = tmp_path / "e.gguf"
    assert main(["export-gguf", str(scaled), "-o", str(out), "--type", "f32"]) == 0
    r = gguf.GGUFReader(str(out))
    assert [t.name for t in r.tensors].count("rope_freqs.weight") == 1
    assert r.fields["llama.rope.scaling.type"].contents() == "linear"
    assert math.isclose(r.fields["llama.rope.scaling.factor"].contents(), 2.0)
    assert np.array_equal(_prefill(out, "f32")[1], _prefill(scaled, "f32")[1])


def test_quantize_keeps_rope_scaling(tmp_path, scaled):
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(scaled), "--format", "cb4", "--codebooks", "1", "-o", str(out)]) == 0
    c = lowbit.load(out).config
    assert c.rope_freq_factors == tuple(np.float32(STORIES_FACTORS).tolist()) and c.rope_scale == 2.0


def test_native_header_rope_values_checked(tmp_path, scaled):
    from dataclasses import asdict

    from lowbit.io.native import _config
    cfg = asdict(lowbit.load(scaled).config)
    for bad, match in (({"rope_scale": 0}, "rope_scale"), ({"rope_freq_factors": [1, -1, 1, 1]}, "rope_freq"),
                       ({"rope_freq_factors": [1.0, 2.0]}, "frequency factors for head dim")):
        with pytest.raises(ModelFileError, match=match):
            _config("x.lowbit", {"config": dict(cfg, **bad)})
    old = {k: v for k, v in cfg.items() if not k.startswith("rope_") or k == "rope_base"}
    c = _config("x.lowbit", {"config": old})                  # written before RoPE scaling existed
    assert c.rope_scale == 1.0 and c.rope_freq_factors is None


def test_llama_cpp_agrees_on_scaled_rope(scaled):
    """llama.cpp (the peer venv, when present) reads the same file to the same logits. Its KV cache is made F32
    so the two differ by float order only: measured 1.7e-5 max, against 3.2-10 for RoPE without the scaling."""
    import subprocess

    from test_export_gguf import _LLAMA_CPP, _peer_python
    py = _peer_python()
    if py is None:
        pytest.skip("llama-cpp-python not installed (pip install lowbit[peer])")
    script = _LLAMA_CPP.replace("verbose=False", "verbose=False, type_k=0, type_v=0")     # GGML_TYPE_F32
    assert script != _LLAMA_CPP
    r = subprocess.run([py, "-c", script, str(scaled), PROMPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    llm, ours = _prefill(scaled, "f32")
    assert got["tokens"] == llm.tokenizer.encode(PROMPT)
    theirs = np.array(got["logits"], np.float32)
    plain = lowbit.load(format="f32").model.prefill(got["tokens"], all_logits=True)
    assert np.abs(plain - theirs).max() > 1.0                   # unscaled RoPE would not pass
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_info_names_the_scaling(scaled):
    assert "rope base 10000 / linear x2, frequency factors 1-8" in lowbit.load(scaled).describe()
