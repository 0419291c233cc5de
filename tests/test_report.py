"""lowbit report: reads bench + perplexity JSON, finds the Pareto front, draws a PNG (when matplotlib exists)."""
import json

import pytest

from lowbit.commands import report


def _bench(tmp_path):
    rows = [dict(model="m", engine=e, format=f, test="tg128", threads=t, bpw=b, median=v, tps=[v])
            for e, f, b, v in [("lowbit", "q4_0", 4.5, 30.0), ("llama.cpp", "q4_0", 4.5, 25.0),
                               ("lowbit", "q8_0", 8.5, 20.0), ("lowbit", "cb2", 2.5, 40.0),
                               ("llama.cpp", "f16", 16.0, 10.0)] for t in (1, 2)]
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"runs": [{"rows": rows}],
                             "perplexity": [{"format": "q4_0", "kld": {"kld_mean": 0.05}},
                                            {"format": "cb2", "kld": {"kld_mean": 0.3}}]}))
    return p


def test_collect_and_pareto(tmp_path):
    pts = report.collect([_bench(tmp_path)], "tg")
    assert {p["threads"] for p in pts} == {2} and len(pts) == 5
    by = {(p["engine"], p["format"]): p for p in pts}
    assert by[("lowbit", "q4_0")]["kld"] == 0.05 and by[("llama.cpp", "q4_0")]["kld"] is None
    front = {(p["engine"], p["format"]) for p in report.pareto(pts)}
    assert front == {("lowbit", "cb2")}              # fastest and smallest beats everything else here
    with pytest.raises(ValueError, match="no pp rows"):
        report.collect([_bench(tmp_path)], "pp")


def test_png(tmp_path):
    pytest.importorskip("matplotlib")
    from lowbit.cli import main
    out = tmp_path / "c.png"
    assert main(["report", "--json", str(_bench(tmp_path)), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
