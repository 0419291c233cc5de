"""`lowbit quantize --narrow-tables` / quantize_tensor(table_range=): cb2 tables learned in [-16, 16] (the range
the AVX2 kernel runs with q4_0's int16 schedule), cb4 tables in [-64, 64] (its int16 pair-add path); bad ranges
and formats fail cleanly."""
import numpy as np
import pytest

import lowbit
from lowbit.cli import main
from lowbit.formats.cb import NARROW_RANGE, TABLE_RANGE
from lowbit.io.gguf import open_reader
from lowbit.quantize import quantize_tensor
from lowbit.quantize.gguf_io import TABLES_SUFFIX, codebook_formats
from lowbit.registry import embedded_model

FAST = ["--codebooks", "2", "--cb4-codebooks", "2", "--rounds", "1", "--sample", "512"]


def _heavy(N, K, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_t(4, (N, K)) * rng.uniform(0.5, 2, (N, 1))).astype(np.float32)


def test_tables_stay_in_the_requested_range_and_reach_it():
    w = _heavy(64, 256, 0)
    for rng_ in (NARROW_RANGE["cb2"], (-32, 31)):
        ct = quantize_tensor(w, "cb2", 4, rounds=2, table_range=rng_)
        t = ct.tables[:, :4].astype(int)
        assert t.min() >= rng_[0] and t.max() <= rng_[1]
        assert (t == rng_[0]).any() or (t == rng_[1]).any()     # scaled to the bound, not shrunk inside it
    wide = quantize_tensor(w, "cb2", 4, rounds=2).tables[:, :4].astype(int)
    assert np.abs(wide).max() > 16 and wide.min() >= TABLE_RANGE["cb2"][0]


def test_narrow_tables_compute_like_their_dequantization():
    w = _heavy(40, 320, 1)
    ct = quantize_tensor(w, "cb2", 4, rounds=2, table_range=NARROW_RANGE["cb2"])
    x = np.random.default_rng(2).standard_normal((9, 320)).astype(np.float32)
    got = lowbit.linear(x, ct.pack())
    ref = x.astype(np.float64) @ ct.dequantize().astype(np.float64).T
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()      # q8_0 activation rounding, nothing more


@pytest.mark.parametrize("bad", [(-128, 16), (0, 16), (-16, 0), (-16, 200), (5, -5)])
def test_bad_table_range_raises(bad):
    with pytest.raises(ValueError, match="table range"):
        quantize_tensor(_heavy(8, 64, 3), "cb2", 2, table_range=bad)


def test_cli_narrow_tables_on_a_mixture(tmp_path):
    out = tmp_path / "narrow.gguf"
    assert main(["quantize", str(embedded_model()), "-o", str(out), "--format", "cb2", "--narrow-tables",
                 "--keep-cb4", "*.attn_v.*", *FAST]) == 0
    r = open_reader(out)
    fmts = codebook_formats(r)
    tabs = {t.name[: -len(TABLES_SUFFIX)]: np.asarray(t.data) for t in r.tensors if t.name.endswith(TABLES_SUFFIX)}
    lo, hi = NARROW_RANGE["cb2"]
    cb2 = [n for n, f in fmts.items() if f == "cb2"]
    cb4 = [n for n, f in fmts.items() if f == "cb4"]
    assert cb2 and cb4
    assert all(tabs[n][:, :4].min() >= lo and tabs[n][:, :4].max() <= hi for n in cb2)
    lo4, hi4 = NARROW_RANGE["cb4"]
    assert all(tabs[n].min() >= lo4 and tabs[n].max() <= hi4 for n in cb4)
    assert max(np.abs(tabs[n].astype(int)).max() for n in cb4) > hi          # cb4's narrow range is its own
    llm = lowbit.load(out)
    logits = llm.model.prefill(llm.encode_prompt("Once upon a time"), all_logits=True)
    assert np.isfinite(logits).all()


def test_cli_narrow_tables_refuses_non_codebook_formats(tmp_path, capsys):
    assert main(["quantize", str(embedded_model()), "-o", str(tmp_path / "x.gguf"), "--format", "q4_0",
                 "--narrow-tables"]) == 1
    assert "cb4/cb2" in capsys.readouterr().err
    assert not (tmp_path / "x.gguf").exists()
