"""logprobs, top_logprobs and echo through the real server (embedded stories260K, the `openai` client): values
are the runtime's own log-softmax, the shapes are OpenAI's, echo scores a prompt given as token ids the way
evaluation harnesses ask (lm-eval's local-completions: prompt=[ids], echo, logprobs=1, max_tokens 0 or 1)."""
import numpy as np
import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from lowbit.api import load  # noqa: E402
from lowbit.server import create_app  # noqa: E402
from lowbit.logprobs import CHUNK as ECHO_CHUNK, token_logprobs  # noqa: E402
from lowbit.server.lowbit_engine import LowbitEngine  # noqa: E402
from lowbit.server.runner import BackgroundServer  # noqa: E402

CTX = 512
PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play"


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    return z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))


def test_token_logprobs_unit():
    z = np.array([[1.0, 3.0, 3.0, -2.0, 0.5], [0.0, 0.0, 0.0, 0.0, 9.0]], np.float32)
    out = token_logprobs(z, [3, 4], 3)
    ref = _log_softmax(z)
    assert out[0][0] == 3 and out[0][1] == pytest.approx(ref[0, 3], abs=1e-12)
    assert [i for i, _ in out[0][2]] == [1, 2, 0]                  # most likely first, ties by id
    assert [v for _, v in out[0][2]] == pytest.approx(list(ref[0, [1, 2, 0]]), abs=1e-12)
    assert out[1][2][0][0] == 4 and token_logprobs(z, [0, 0], 0)[1][2] == []
    assert len(token_logprobs(z, [0, 0], 20)[0][2]) == 5                 # more than the vocabulary: all of it


@pytest.fixture(scope="module")
def llm():
    return load(None, n_ctx=CTX)


@pytest.fixture(scope="module")
def client(llm):
    eng = LowbitEngine(llm, model_id="s")
    with BackgroundServer(create_app(eng)) as srv, httpx.Client(timeout=60) as http:
        yield openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, http_client=http), eng


def _greedy_reference(llm, ids, n):
    """The runtime's own greedy run: logits of the prompt's last token, then of each generated token."""
    m = load(None, n_ctx=CTX).model
    rows, toks = [m.prefill(ids).copy()], []
    for _ in range(n - 1):
        toks.append(int(np.argmax(rows[-1])))
        rows.append(m.decode(toks[-1])[0].copy())
    toks.append(int(np.argmax(rows[-1])))
    return toks, np.stack(rows)


def test_completion_logprobs_match_runtime(client, llm):
    cl, eng = client
    r = cl.completions.create(model="s", prompt=PROMPT, max_tokens=10, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    ids = eng.encode(PROMPT)
    toks, rows = _greedy_reference(llm, ids, 10)
    n = r.usage.completion_tokens
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.tokens) == n
    ref = _log_softmax(rows)[np.arange(n), toks[:n]]
    np.testing.assert_allclose(lp.token_logprobs, ref, atol=1e-3, rtol=0)   # server decode vs runtime decode
    for tok, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3 and max(top.values()) == tok            # greedy: the chosen one is the best
        assert all(v <= 0 for v in top.values())
    assert lp.text_offset == list(np.cumsum([0] + [len(t) for t in lp.tokens[:-1]]))


@pytest.mark.parametrize("max_tokens", [0, 1])
def test_echo_scores_a_prompt_of_token_ids(client, llm, max_tokens):
    cl, eng = client
    ids = eng.encode(PROMPT + " with a green car in the rain.")       # a few tokens the model does not expect
    r = cl.completions.create(model="s", prompt=[ids], max_tokens=max_tokens, temperature=0, logprobs=1,
                              echo=True)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) + max_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    ref = _log_softmax(load(None, n_ctx=CTX).model.prefill(ids, all_logits=True))
    want = ref[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(lp.token_logprobs[1:len(ids)], want, atol=1e-9, rtol=0)   # same prefill rows
    greedy = [max(top.values()) == t for t, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:])]
    assert greedy == list(np.argmax(ref[:len(ids) - 1], -1) == ids[1:]) + [True] * max_tokens
    assert any(greedy) and not all(greedy)                            # lm-eval's is_greedy test is meaningful
    text = r.choices[0].text
    assert text.startswith(eng.detokenize(ids))
    assert r.usage.completion_tokens == max_tokens
    offs = lp.text_offset                                              # positions in the echoed text
    assert offs[0] == 0 and offs == sorted(offs) and offs[-1] <= len(text)
    for o, t in zip(offs[1:], lp.tokens[1:]):
        assert text[o:].startswith(t.lstrip() if o == 0 else t), (o, t)


def test_echo_longer_than_a_chunk(client, llm):
    cl, eng = client
    ids = (eng.encode(PROMPT) * 30)[: ECHO_CHUNK + 40]
    r = cl.completions.create(model="s", prompt=ids, max_tokens=0, logprobs=0, echo=True)
    ref = _log_softmax(load(None, n_ctx=CTX).model.prefill(ids, all_logits=True))
    np.testing.assert_allclose(r.choices[0].logprobs.token_logprobs[1:], ref[np.arange(len(ids) - 1), ids[1:]],
                               atol=1e-9, rtol=0)
    tops = r.choices[0].logprobs.top_logprobs[1:]
    assert all(len(t) == 1 for t in tops)                             # logprobs=0: just the chosen token


def test_stream_logprobs_equal_whole(client):
    cl, _ = client
    kw = dict(model="s", prompt=PROMPT, max_tokens=12, temperature=0, logprobs=2)
    whole = cl.completions.create(**kw).choices[0].logprobs
    toks, lps, offs = [], [], []
    for c in cl.completions.create(stream=True, **kw):
        if c.choices and c.choices[0].logprobs:
            toks += c.choices[0].logprobs.tokens
            lps += c.choices[0].logprobs.token_logprobs
            offs += c.choices[0].logprobs.text_offset
    assert toks == whole.tokens and lps == whole.token_logprobs and offs == whole.text_offset


def test_chat_logprobs(client):
    cl, _ = client
    kw = dict(model="s", messages=[{"role": "user", "content": "Lily went to the park"}], max_tokens=8,
              temperature=0, logprobs=True, top_logprobs=2)
    r = cl.chat.completions.create(**kw)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(c.token for c in content) == r.choices[0].message.content
    for c in content:
        assert len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob >= c.top_logprobs[1].logprob
        assert c.logprob == c.top_logprobs[0].logprob and bytes(c.bytes).decode() == c.token
    streamed = [x for ch in cl.chat.completions.create(stream=True, **kw) if ch.choices and ch.choices[0].logprobs
                for x in ch.choices[0].logprobs.content]
    assert [(x.token, x.logprob) for x in streamed] == [(x.token, x.logprob) for x in content]
    plain = cl.chat.completions.create(**dict(kw, logprobs=None, top_logprobs=None))
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == r.choices[0].message.content


@pytest.mark.parametrize("kw,match", [
    (dict(prompt="a", logprobs=21), "logprobs"),
    (dict(prompt="a", max_tokens=0), "needs echo"),
    (dict(prompt=[[1, 2], [3]]), "one prompt"),
])
def test_bad_logprob_requests(client, kw, match):
    cl, _ = client
    with pytest.raises(openai.BadRequestError, match=match):
        cl.completions.create(model="s", **kw)


def test_chat_top_logprobs_without_logprobs(client):
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        client[0].chat.completions.create(model="s", messages=[{"role": "user", "content": "x"}], top_logprobs=2)


def test_no_batching_refuses_logprobs(llm):
    with BackgroundServer(create_app(LowbitEngine(llm, model_id="s"), batching=False)) as srv, \
            httpx.Client(timeout=60) as http:
        cl = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, http_client=http)
        with pytest.raises(openai.BadRequestError, match="batched scheduler"):
            cl.completions.create(model="s", prompt="a", logprobs=1)
        assert cl.completions.create(model="s", prompt="a", max_tokens=2).choices[0].text is not None


def test_stop_string_cuts_the_entries(client):
    """Tokens whose text lies past a stop string are not reported: the entries spell the returned text."""
    cl, _ = client
    base = cl.completions.create(model="s", prompt=PROMPT, max_tokens=16, temperature=0, logprobs=1)
    text = base.choices[0].text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert stop and text.find(stop) > 0
    for stream in (False, True):
        kw = dict(model="s", prompt=PROMPT, max_tokens=16, temperature=0, logprobs=1, stop=[stop])
        if stream:
            chunks = [c for c in cl.completions.create(stream=True, **kw) if c.choices]
            got = "".join(c.choices[0].text for c in chunks)
            toks = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
        else:
            r = cl.completions.create(**kw)
            got, toks = r.choices[0].text, r.choices[0].logprobs.tokens
        assert got == text[: text.find(stop)]
        joined = "".join(toks)
        assert joined.startswith(got) and len(joined) - len(toks[-1]) < len(got) <= len(joined)
        assert toks == base.choices[0].logprobs.tokens[: len(toks)]


def test_logprobs_per_choice(client):
    cl, _ = client
    r = cl.completions.create(model="s", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2, n=2)
    a, b = (c.logprobs for c in r.choices)
    assert a.tokens == b.tokens and a.token_logprobs == b.token_logprobs and a.text_offset == b.text_offset
    assert "".join(a.tokens) == r.choices[0].text
