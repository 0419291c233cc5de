"""`lowbit quantize --format cb2 --keep-cb4 PATTERNS`: a cb2/cb4 mixture (cb4 on the matching tensors) that the
runtime loads, whose error lies between all-cb2 and all-cb4; bad patterns fail cleanly."""
import numpy as np
import pytest

import lowbit
from lowbit.cli import main
from lowbit.io.gguf import open_reader
from lowbit.quantize.gguf_io import codebook_formats
from lowbit.registry import embedded_model

KEEP = "*.attn_v.*,blk.0.*"
FAST = ["--codebooks", "2", "--cb4-codebooks", "2", "--rounds", "1", "--sample", "512"]


def _quantize(path, *extra):
    assert main(["quantize", str(embedded_model()), "-o", str(path), *extra]) == 0
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    return {"mix": _quantize(d / "mix.gguf", "--format", "cb2", "--keep-cb4", KEEP, *FAST),
            "cb2": _quantize(d / "cb2.gguf", "--format", "cb2", *FAST[:2], *FAST[4:]),
            "cb4": _quantize(d / "cb4.gguf", "--format", "cb4", *FAST[:2], *FAST[4:])}


def test_formats_follow_the_patterns(files):
    fmts = codebook_formats(open_reader(files["mix"]))
    cb4 = {n for n, f in fmts.items() if f == "cb4"}
    want = {n for n in fmts if n.startswith("blk.0.") or ".attn_v." in n}
    assert cb4 == want and len(cb4) == 6 + 4            # blk.0's 6 quantized matrices (ffn_down K=172 is not) + 4 attn_v
    assert set(fmts.values()) == {"cb2", "cb4"}


def _logits(path, fmt=None):
    llm = lowbit.load(path, format=fmt)
    return llm.model.prefill(llm.encode_prompt("Once upon a time, there was a little girl named Lily."),
                             all_logits=True)


def test_mixture_runs_between_cb2_and_cb4(files):
    ref = _logits(embedded_model(), "f32")
    err = {k: np.linalg.norm(_logits(p) - ref) / np.linalg.norm(ref) for k, p in files.items()}
    assert err["cb4"] < err["mix"] < err["cb2"], err


@pytest.mark.parametrize("extra, msg", [
    (["--format", "cb2", "--keep-cb4", "*.nothing.*"], "matches none"),
    (["--format", "cb2", "--keep-cb4", "*.attn_v.*,"], "empty pattern"),
    (["--format", "cb4", "--keep-cb4", "*.attn_v.*"], "cb2 only"),
    (["--format", "cb2", "--keep-cb4", "*.attn_v.*", "--cb4-codebooks", "17"], "1..16"),
])
def test_bad_keep_cb4(tmp_path, capsys, extra, msg):
    assert main(["quantize", str(embedded_model()), "-o", str(tmp_path / "x.gguf"), *extra]) == 1
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "x.gguf").exists()
