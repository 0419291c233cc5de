"""`lowbit bench kernels` plumbing (not speed): options are checked, rows are computed from the timings and the
measured ceilings they claim to use. The machine probes are replaced by fixed numbers to keep this fast."""
import json

import pytest

from lowbit import cli
from lowbit.bench import kernels

FAKE_ROOF = {"clock_ghz": 2.0, "int8_macs_per_cycle_per_core": 32, "bandwidth_gbs": {"1": 10.0, "2": 16.0}}


@pytest.fixture
def fake_roof(monkeypatch):
    monkeypatch.setattr(kernels, "measure_machine", lambda threads: dict(FAKE_ROOF))


def test_rows_use_measured_ceilings(fake_roof, tmp_path):
    out = tmp_path / "k.json"
    rc = cli.main(["bench", "kernels", "--shapes", "24x64", "--formats", "q4_0,q8_0", "-t", "1,2", "--reps", "1",
                   "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [(r["format"], r["threads"]) for r in res["rows"]] == [("q4_0", 1), ("q4_0", 2), ("q8_0", 1), ("q8_0", 2)]
    for r in res["rows"]:
        assert r["gemv_gbs"] == pytest.approx(r["weight_bytes"] / (r["gemv_ms"] / 1e3) / 1e9)
        assert r["gemv_frac_bw"] == pytest.approx(r["gemv_gbs"] / FAKE_ROOF["bandwidth_gbs"][str(r["threads"])])
        assert r["gemm_gmacs"] == pytest.approx(kernels.GEMM_M * 24 * 64 / (r["gemm_ms"] / 1e3) / 1e9)
        assert r["gemm_frac_peak"] == pytest.approx(r["gemm_gmacs"] / (32 * 2.0 * r["threads"]))
        assert r["numpy_gemm_ms"] > 0 and r["gemm_speedup_vs_numpy"] == pytest.approx(r["numpy_gemm_ms"] / r["gemm_ms"])
    assert res["rows"][2]["weight_bytes"] > res["rows"][0]["weight_bytes"]   # q8_0 streams more than q4_0
    for q4, q8 in zip(res["rows"][:2], res["rows"][2:]):                     # same threads, same shape
        assert q8["gemv_vs_q4_0"] == pytest.approx(q4["gemv_ms"] / q8["gemv_ms"])
        assert q8["gemm_vs_q4_0"] == pytest.approx(q4["gemm_ms"] / q8["gemm_ms"])
        assert "gemv_vs_q4_0" not in q4


def test_summary_reports_ratios_to_q4_0():
    rows = [dict(format=f, N=64, K=K, threads=1, gemv_ms=v, gemm_ms=m, gemv_ms_all=[v], gemm_ms_all=[m],
                 gemv_frac_bw=0.5, gemm_macs_per_cycle_core=4.0, gemm_frac_peak=0.1)
            for f, K, v, m in [("q4_0", 64, 1.0, 10.0), ("cb4", 64, 2.0, 20.0), ("q4_0", 128, 1.0, 10.0),
                               ("cb4", 128, 4.0, 10.0), ("cb2", 256, 1.0, 1.0)]]       # cb2: no q4_0 twin
    res = {"roofline": FAKE_ROOF, "gemm_M": 512, "rows": rows}
    kernels.add_q4_0_ratios(res)
    text = kernels.summary(res)
    assert "cb4 1 thread(s): GEMV 0.38 (0.25-0.50), GEMM 0.75 (0.50-1.00) over 2 shape(s)" in text
    assert "cb2 1 thread" not in text and "q4_0 1 thread(s): GEMV" not in text


@pytest.mark.parametrize("argv,msg", [
    (["-t", "0"], "--threads"),
    (["-t", "a"], "--threads"),
    (["--formats", "nope"], "nope"),
    (["--shapes", "10x33"], "multiple of 32"),
    (["--shapes", "4096"], "NxK"),
    (["--reps", "0"], "--reps"),
])
def test_bad_options_are_clear_errors(fake_roof, capsys, argv, msg):
    assert cli.main(["bench", "kernels"] + argv) == 1
    assert msg in capsys.readouterr().err


def test_model_target_goes_to_e2e(capsys):
    with pytest.raises(SystemExit):   # e2e's own parser: -h prints its options
        cli.main(["bench", "some.gguf", "-h"])
    out = capsys.readouterr().out
    assert out.startswith("usage: lowbit bench") and "model" in out and "kernels" not in out.split("\n")[0]
