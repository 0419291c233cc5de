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


def test_bench_codebook_file(tmp_path):
    """A `lowbit quantize` file: its I8 block tensors count as cb4 weights (32 per 18 bytes) and it runs."""
    from lowbit.registry import embedded_model
    q = tmp_path / "s260_cb4.gguf"
    assert main(["quantize", str(embedded_model()), "--format", "cb4", "--codebooks", "2", "--all",
                 "-o", str(q)]) == 0
    info = e2e.gguf_summary(q)
    assert info["main_type"] == "CB4"
    from lowbit.io.gguf import open_reader
    r = open_reader(q)
    names = {t.name for t in r.tensors}
    assert "output.weight" in names      # --all writes the tied output as its own cb tensor: the lookup isn't streamed
    mats = [t for t in r.tensors if len(t.shape) == 2 and not t.name.endswith(".cb_tables")
            and t.name != "token_embd.weight"]
    cb = [t for t in mats if f"lowbit.cb.{t.name}.format" in r.fields]
    assert cb and all(t.tensor_type.name == "I8" for t in cb)
    weights = sum(int(t.n_elements) // 18 * 32 if t in cb else int(t.n_elements) for t in mats)
    assert info["bpw"] == pytest.approx(8 * sum(int(t.n_bytes) for t in mats) / weights)
    assert info["macs_per_token"] == sum(int(t.n_elements) // 18 * 32 if t in cb else int(t.n_elements)
                                         for t in mats if t.name.startswith("blk."))
    res = e2e.run(q, n_prompt=8, n_gen=2, threads=(1,), reps=1, roofline=False, log=lambda *a: None)
    rows = res["runs"][0]["rows"] if "runs" in res else res["rows"]
    assert {r["format"] for r in rows} == {"cb4"} and all(r["median"] > 0 for r in rows)


def test_depth(tmp_path):
    """-d D: D tokens sit in the cache before each timed test (llama-bench -d), rows named pp16@dD / tg4@dD."""
    m = synthetic.write(tmp_path / "tiny.gguf", "tiny", "q4_0")
    e = e2e._Lowbit(str(m), "q4_0", 64, 512)
    pre = [1] + list(range(3, 34))
    e.tg(4, 7, pre)
    assert e.model.cache.pos == 32 + 4
    e.pp(list(range(3, 19)), pre)
    assert e.model.cache.pos == 32 + 16
    e.tg(4, 7)
    assert e.model.cache.pos == 4
    j = tmp_path / "r.json"
    assert main(["bench", str(m), "-p", "16", "-n", "4", "-t", "1", "-r", "1", "-d", "32", "--no-roofline",
                 "--json", str(j)]) == 0
    rows = json.loads(j.read_text())["runs"][0]["rows"]
    assert [r["test"] for r in rows] == ["pp16@d32", "tg4@d32"] and all(r["median"] > 0 for r in rows)
    with pytest.raises(ValueError, match="depth"):
        e2e.run(m, depth=-1)
