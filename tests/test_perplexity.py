"""Perplexity as llama.cpp computes it, on the embedded stories260K: checked against an independent token-by-token
recomputation, repeatable to the bit, and KLD of a model vs itself is exactly 0."""
import math
from importlib import resources

import numpy as np
import pytest

from lowbit.eval import perplexity as P

STORIES = str(resources.files("lowbit") / "data" / "stories260K.gguf")
CTX = 32


@pytest.fixture(scope="module")
def model():
    from lowbit.io.gguf import GGUFSource
    from lowbit.model import LlamaModel
    return LlamaModel(GGUFSource(STORIES), "f32", n_ctx=CTX, n_batch=CTX)


@pytest.fixture(scope="module")
def tokens():
    rng = np.random.default_rng(7)
    return [1] + rng.integers(3, 512, size=3 * CTX + 5).tolist()     # 3 full chunks, a ragged tail dropped


def test_chunking_matches_llama_cpp(tokens):
    chunks = P.make_chunks(tokens, CTX, bos=1)
    assert len(chunks) == len(tokens) // CTX == 3
    for i, c in enumerate(chunks):
        assert c[0] == 1 and c[1:] == tokens[i * CTX + 1:(i + 1) * CTX]
    assert len(P.make_chunks(tokens, CTX, n_chunks=2, bos=1)) == 2
    assert P.make_chunks(tokens, CTX, bos=None)[1][0] == tokens[CTX]
    with pytest.raises(ValueError, match="2\\*ctx"):
        P.make_chunks(tokens[: 2 * CTX - 1], CTX)
    with pytest.raises(ValueError, match="even"):
        P.make_chunks(tokens, 33)


def test_ppl_equals_exp_mean_nll_of_second_halves(model, tokens):
    chunks = P.make_chunks(tokens, CTX, bos=1)
    res = P.score(P.lowbit_logits_fn(model), chunks, progress=False)
    # independent: decode one token at a time (the GEMV path, not prefill), softmax by hand
    nll = []
    for c in chunks:
        model.reset()
        rows = [model.decode(t)[0].astype(np.float64).copy() for t in c]
        for j in range(CTX // 2, CTX - 1):
            z = rows[j] - rows[j].max()
            nll.append(-(z[c[j + 1]] - math.log(np.exp(z).sum())))
    assert res.n_scored == len(nll) == 3 * (CTX - 1 - CTX // 2)
    assert res.ppl == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)   # prefill vs decode float order only
    assert res.ppl > 1.0


@pytest.mark.parametrize("n_batch, start", [(CTX, 16), (8, 13), (8, 1), (8, 0), (5, 30)])
def test_prefill_logits_from_equals_the_tail_of_all_logits(tokens, n_batch, start):
    """prefill(all_logits, logits_from=k) is rows k.. of the full logits, over batch boundaries (n_batch < ctx),
    a batch that yields no rows, and a one-token last batch (the decode path)."""
    from lowbit.io.gguf import GGUFSource
    from lowbit.model import LlamaModel
    m = LlamaModel(GGUFSource(STORIES), "f32", n_ctx=CTX, n_batch=n_batch)
    toks = tokens[:CTX - 1] if n_batch == 5 else tokens[:CTX]   # 31 = 6 x 5 + 1: last batch is one token
    m.reset()
    full = m.prefill(toks, all_logits=True).copy()
    m.reset()
    part = m.prefill(toks, all_logits=True, logits_from=start)
    assert part.shape == (len(toks) - start, full.shape[1])
    np.testing.assert_allclose(part, full[start:], rtol=0, atol=1e-5)   # same rows; float order of batching only


def test_score_accepts_full_or_scored_half_logits(model, tokens):
    chunks = P.make_chunks(tokens, CTX, bos=1)
    half = P.score(P.lowbit_logits_fn(model), chunks, progress=False)

    def full_fn(c):
        model.reset()
        return model.prefill(c, all_logits=True)
    full = P.score(full_fn, chunks, progress=False)
    assert full.ppl == pytest.approx(half.ppl, rel=1e-6) and full.n_scored == half.n_scored
    with pytest.raises(RuntimeError, match="expected"):
        P.score(lambda c: np.zeros((CTX - 3, 512), np.float32), chunks, progress=False)


def test_repeated_runs_identical(model, tokens):
    chunks = P.make_chunks(tokens, CTX, bos=1)
    a = P.score(P.lowbit_logits_fn(model), chunks, progress=False)
    b = P.score(P.lowbit_logits_fn(model), chunks, progress=False)
    assert a.ppl == b.ppl and a.chunk_ppl == b.chunk_ppl


def test_kld_self_is_zero_and_other_is_positive(model, tokens, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path))
    chunks = P.make_chunks(tokens, CTX, bos=1)
    cache = P.RefCache(STORIES, "f32", tokens, CTX, len(chunks), 512)
    assert not cache.ready
    arr, keep = cache.writer()
    P.score(P.lowbit_logits_fn(model), chunks, progress=False, keep_logp=keep)
    cache.finish(arr)
    assert cache.ready and cache.path.parent == tmp_path / "kld"
    same = P.score(P.lowbit_logits_fn(model), chunks, ref=cache.reader(), progress=False)
    assert same.kld["kld_mean"] == 0.0 and same.kld["same_top"] == 1.0
    # the reference's PPL read back from the cache (float32 log-probs) is the PPL of the run that wrote it
    nll = cache.target_nll(chunks)
    ppl, err = P.ppl_and_err(nll)
    assert len(nll) == same.n_scored
    assert ppl == pytest.approx(same.ppl, rel=1e-6) and err == pytest.approx(same.ppl_err, rel=1e-5)
    # a perturbed model (logits scaled) must show a positive divergence
    fn = P.lowbit_logits_fn(model)
    other = P.score(lambda c: fn(c) * 0.5, chunks, ref=cache.reader(), progress=False)
    assert other.kld["kld_mean"] > 1e-3 and other.kld["kld_positions"] == same.n_scored
    # the key covers the tokens: other tokens -> another cache entry
    assert P.RefCache(STORIES, "f32", tokens[::-1], CTX, len(chunks), 512).path != cache.path


def test_cli_on_text(tmp_path, capsys):
    pytest.importorskip("lowbit.tokenizer", reason="runtime tokenizer not built yet")
    from lowbit.cli import main
    text = tmp_path / "t.txt"
    text.write_text("Once upon a time, there was a little girl named Lily. She loved to play outside. " * 12)
    args = ["perplexity", STORIES, "--text", str(text), "--ctx", "64", "--no-progress", "--format", "f32",
            "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    out1 = capsys.readouterr().out
    assert main(args) == 0
    out2 = capsys.readouterr().out
    line = lambda o: [l for l in o.splitlines() if l.startswith("lowbit PPL")][0]
    assert line(out1) == line(out2)
    ppl = float(line(out1).split("=")[1].split()[0])
    assert 1.0 < ppl < 20        # a repeated story sentence is easy for the model that was trained on such text


def test_checkpoint_resume_gives_the_same_numbers(model, tmp_path):
    """A run killed after its first checkpoint resumes there (earlier chunks are not run again) and ends with
    exactly the numbers of an uninterrupted run; another run's checkpoint is refused."""
    rng = np.random.default_rng(3)
    toks = [1] + rng.integers(3, 512, size=11 * CTX).tolist()
    chunks = P.make_chunks(toks, CTX, bos=1)
    fn = P.lowbit_logits_fn(model)
    ref_logp = [P.log_softmax(fn(c)[: CTX - 1 - CTX // 2] * 0.7) for c in chunks]   # another "reference"
    ref = lambda i: ref_logp[i]
    whole = P.score(fn, chunks, ref=ref, progress=False)
    ck = P.Checkpoint(tmp_path / "run.npz", key="run-a", every=4)
    calls = []

    def dies_at_6(c):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return fn(c)
    with pytest.raises(KeyboardInterrupt):
        P.score(dies_at_6, chunks, ref=ref, progress=False, checkpoint=ck)
    assert ck.path.exists()
    seen = []
    resumed = P.score(lambda c: seen.append(1) or fn(c), chunks, ref=ref, progress=False, checkpoint=ck)
    assert len(seen) == len(chunks) - 4, "chunks before the checkpoint ran again"
    assert resumed.ppl == whole.ppl and resumed.ppl_err == whole.ppl_err and resumed.chunk_ppl == whole.chunk_ppl
    assert resumed.kld == whole.kld
    with pytest.raises(ValueError, match="another run"):
        P.score(fn, chunks, ref=ref, progress=False, checkpoint=P.Checkpoint(ck.path, key="run-b"))
    ck.path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        P.score(fn, chunks, progress=False, checkpoint=ck)


def test_cli_checkpoint_removed_when_done(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    from lowbit.cli import main
    text = tmp_path / "t.txt"
    text.write_text("Once upon a time, there was a little girl named Lily. She loved to play outside. " * 12)
    ck = tmp_path / "ck.npz"
    args = ["perplexity", STORIES, "--text", str(text), "--ctx", "32", "--no-progress", "--format", "f32",
            "--checkpoint", str(ck)]
    assert main(args) == 0
    assert not ck.exists() and "lowbit PPL" in capsys.readouterr().out
