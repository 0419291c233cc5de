"""`lowbit bench MODEL` on a tiny synthetic model: rows, medians, table/markdown/JSON (speed itself is not tested)."""
import json

import pytest

from lowbit import synthetic
from lowbit.bench import e2e
from lowbit.cli import main


def test_bench_tiny_model(tmp_path, capsys):
    m = synthetic.write(tmp_path / "tiny.gguf", "tiny", "q4_0")
    info = e2e.gguf_summary(m)
    s = synthetic.SHAPES["tiny"]
    assert info["main_type"] == "Q4_0" and info["synthetic"] and info["vocab"] == s.vocab
    # streamed per token: every matrix except the embedding lookup, 18 bytes per 32 weights
    assert info["weight_bytes"] == (s.n_params() - s.vocab * s.dim - s.dim * (2 * s.n_layers + 1)) * 18 // 32
    j = tmp_path / "r.json"
    assert main(["bench", str(m), "-p", "16", "-n", "4", "-t", "1,2", "-r", "2", "--no-roofline",
                 "--json", str(j), "--markdown", str(tmp_path / "t.md")]) == 0
    rows = json.loads(j.read_text())["runs"][0]["rows"]
    assert [(r["test"], r["threads"]) for r in rows] == [("pp16", 1), ("tg4", 1), ("pp16", 2), ("tg4", 2)]
    for r in rows:
        assert len(r["tps"]) == 2 and r["min"] <= r["median"] <= r["max"] and r["median"] > 0
    assert "| tiny | lowbit | q4_0 |" in (tmp_path / "t.md").read_text()


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        e2e.run(tmp_path / "none.gguf")
    with pytest.raises(ValueError, match="positive"):
        e2e._threads("0,1")
