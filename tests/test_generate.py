"""Generation loop and streaming: max tokens, EOS, stop strings (cut, even across pieces), prompt-too-long,
context full, cached-prefix reuse. A scripted fake model/tokenizer keeps these exact; then the embedded model."""
import numpy as np
import pytest

from lowbit.generate import GenStats, generate_ids, stream_text
from lowbit.model.llama import ContextFullError


class FakeModel:
    """Logits always favour the token after the last one (mod vocab)."""

    def __init__(self, vocab=16, n_ctx=32):
        self.n_ctx, self.pos, self.calls = n_ctx, 0, []
        self.config = type("C", (), {"vocab_size": vocab, "n_ctx_train": n_ctx})()
        self.cache = self

    def _logits(self, t):
        z = np.zeros(self.config.vocab_size, np.float32)
        z[(t + 1) % self.config.vocab_size] = 1
        return z

    def prefill(self, toks):
        self.calls.append(("prefill", self.pos, list(toks)))
        self.pos += len(toks)
        return self._logits(toks[-1])

    def decode(self, t):
        self.calls.append(("decode", self.pos, t))
        self.pos += 1
        return self._logits(t)[None]


class FakeTok:
    eot_ids = [0]

    def stream_decoder(self):
        class D:
            def push(self, i):
                return "abcdefghijklmnop"[i]

            def flush(self):
                return ""
        return D()


def test_max_tokens_and_eos():
    assert list(generate_ids(FakeModel(), [3], max_tokens=4)) == [4, 5, 6, 7]
    st = GenStats()
    assert list(generate_ids(FakeModel(), [13], max_tokens=10, eot_ids=[0], stats=st)) == [14, 15]
    assert st.finish_reason == "eos"


def test_stop_string_cut_across_pieces():
    st = GenStats()
    out = "".join(stream_text(FakeModel(), FakeTok(), [1], max_tokens=10, stop=["efg"], stats=st))
    assert out == "cd" and st.finish_reason == "stop"
    pieces = list(stream_text(FakeModel(), FakeTok(), [1], max_tokens=5))
    assert pieces == ["c", "d", "e", "f", "g"]       # streamed one piece per token when no stop strings


def test_prompt_too_long_and_context_full():
    with pytest.raises(ContextFullError, match="prompt too long: 40 tokens"):
        list(generate_ids(FakeModel(n_ctx=32), list(range(1, 16)) * 2 + list(range(1, 11)), max_tokens=1))
    st = GenStats()
    out = list(generate_ids(FakeModel(n_ctx=8), [1, 2, 3], max_tokens=100, stats=st))
    assert len(out) == 6 and st.finish_reason == "context"   # positions 3..7 decoded + the last sampled token


def test_empty_prompt_ids_rejected():
    with pytest.raises(ValueError, match="empty prompt"):
        list(generate_ids(FakeModel(), [], max_tokens=3))


def test_cached_prefix_is_reused():
    m = FakeModel()
    list(generate_ids(m, [1, 2, 3, 4], max_tokens=2))
    st = GenStats()
    list(generate_ids(m, [1, 2, 3, 9, 9], max_tokens=1, stats=st))
    assert st.reused_tokens == 3 and m.calls[-1] == ("prefill", 3, [9, 9])


def test_embedded_model_generates_and_streams():
    import lowbit
    llm = lowbit.load(format="f32")
    text = lowbit.generate(llm, "Once upon a time", max_tokens=24, temperature=0)
    assert text.startswith(", there was a little girl named Lily") or "Lily" in text, text
    pieces = list(lowbit.stream_generate(llm, "Once upon a time", max_tokens=24, temperature=0))
    assert len(pieces) > 5 and "".join(pieces) == text
    assert "".join(llm.stream("Once upon a time", max_tokens=24, temperature=0, stop=["Lily"])).endswith("named ")
    a = llm.generate("Once upon a time", max_tokens=20, temperature=1.0, seed=5)
    assert a == llm.generate("Once upon a time", max_tokens=20, temperature=1.0, seed=5)


def test_cli_run_default_model_prints_story(capsys):
    from lowbit.cli import main
    assert main(["run", "Once upon a time", "--temp", "0", "-n", "30"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Once upon a time, there was a little girl named Lily"), out
