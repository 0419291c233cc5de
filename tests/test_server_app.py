"""Server against a tiny fake engine (no model): routes, validation, auth, limits, SSE, stop strings, queue,
cancellation. Uses the real uvicorn on a free loopback port and the real `openai` client."""
import json
import threading
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from lowbit.server import create_app  # noqa: E402
from lowbit.server.engine import SamplingParams  # noqa: E402
from lowbit.server.runner import BackgroundServer  # noqa: E402
from lowbit.server.scheduler import StopMatcher  # noqa: E402

KEY = "sk-test-123"
HTTP = httpx.Client(timeout=10)  # one client: building one per request costs ~0.4 s (TLS context)


class FakeEngine:
    """Deterministic 'model': token i after a prompt of ids p is chr(ord('a') + (sum(p) + i) % 26); a prompt
    containing 'EOS' ends after 3 tokens. `delay` slows each token so concurrency/cancel are observable."""

    model_id = "fake"
    n_ctx = 64

    def __init__(self, delay=0.0):
        self.delay = delay
        self.live = 0  # generators currently open
        self.closed = 0
        self.lock = threading.Lock()

    def encode(self, text):
        return [ord(c) for c in text]

    def chat_ids(self, messages):
        return self.encode("".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>")

    def generate(self, ids, params: SamplingParams):
        with self.lock:
            self.live += 1
        try:
            limit = 3 if "EOS" in "".join(map(chr, ids)) else self.n_ctx - len(ids)
            for i in range(limit):
                if self.delay:
                    time.sleep(self.delay)
                t = ord("a") + (sum(ids) + i) % 26
                yield t, chr(t)
        finally:
            with self.lock:
                self.live -= 1
                self.closed += 1


def expected(prompt, n):
    s = sum(map(ord, prompt))
    return "".join(chr(ord("a") + (s + i) % 26) for i in range(n))


@pytest.fixture(scope="module")
def fake():
    eng = FakeEngine()
    with BackgroundServer(create_app(eng, api_key=KEY, max_queue=4, max_active=2)) as srv:
        yield eng, srv


@pytest.fixture(scope="module")
def client(fake):
    return openai.OpenAI(base_url=fake[1].url + "/v1", api_key=KEY, timeout=20, max_retries=0, http_client=HTTP)


def test_models_and_health(fake, client):
    assert [m.id for m in client.models.list().data] == ["fake"]
    r = HTTP.get(fake[1].url + "/health", timeout=5)  # /health needs no key (documented)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_completion_nonstream_usage(client):
    r = client.completions.create(model="fake", prompt="hi", max_tokens=5, temperature=0)
    assert r.choices[0].text == expected("hi", 5)
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (2, 5, 7)


def test_completion_eos_is_stop(client):
    r = client.completions.create(model="fake", prompt="EOS", max_tokens=10)
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 3


def test_completion_stream(client):
    chunks = list(client.completions.create(model="fake", prompt="hey", max_tokens=7, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == expected("hey", 7)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 7


def test_chat_nonstream_and_stream(client):
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}]
    prompt = "<system>s<user>hello<assistant>"
    r = client.chat.completions.create(model="fake", messages=msgs, max_tokens=4)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == expected(prompt, 4)
    assert r.usage.prompt_tokens == len(prompt)
    s = client.chat.completions.create(model="fake", messages=msgs, max_completion_tokens=4, stream=True)
    chunks = list(s)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected(prompt, 4)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_strings(client):
    full = expected("hi", 20)
    stop = full[5:7]
    r = client.completions.create(model="fake", prompt="hi", max_tokens=20, stop=[stop, "zzzz"])
    assert r.choices[0].text == full[:5] and r.choices[0].finish_reason == "stop"
    chunks = client.completions.create(model="fake", prompt="hi", max_tokens=20, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in chunks) == full[:5]


def test_stop_matcher_holds_back_prefixes():
    m = StopMatcher(["abc"])
    assert m.feed("xa") == ("x", False)
    assert m.feed("b") == ("", False)
    assert m.feed("d") == ("abd", False)
    assert m.feed("zab") == ("z", False)
    assert m.feed("cq") == ("", True)
    m = StopMatcher(["\n\n"])
    assert m.feed("a\n") == ("a", False) and m.flush() == "\n"


def _raw(srv, body, key=KEY, path="/v1/completions"):
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"} if key else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return HTTP.post(srv.url + path, content=data, headers=headers, timeout=10)


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "parse the JSON"),
    ({"model": "nope", "prompt": "x"}, 404, "does not exist"),
    ({"model": "fake", "prompt": "x", "max_tokens": -3}, 400, "max_tokens"),
    ({"model": "fake", "prompt": "x" * 100}, 400, "maximum context length"),
    ({"model": "fake", "prompt": "x" * 10, "max_tokens": 60}, 400, "maximum context length"),
    ({"model": "fake", "prompt": "x", "n": 17}, 400, "'n'"),
    ({"model": "fake", "prompt": "x", "n": 0}, 400, "'n'"),
    ({"model": "fake", "prompt": "x", "temperature": 9}, 400, "temperature"),
    ({"model": "fake"}, 400, "prompt"),
    ({"model": "fake", "prompt": ""}, 400, "empty"),
    ([1, 2], 400, "object"),
])
def test_bad_requests_get_openai_errors(fake, body, status, needle):
    r = _raw(fake[1], body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"]
    assert _raw(fake[1], {"model": "fake", "prompt": "ok", "max_tokens": 2}).status_code == 200  # still serving


def test_bad_chat_requests(fake):
    srv = fake[1]
    r = _raw(srv, {"model": "fake", "messages": []}, path="/v1/chat/completions")
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = _raw(srv, {"model": "fake", "messages": [{"role": "wizard", "content": "x"}]}, path="/v1/chat/completions")
    assert r.status_code == 400 and "role" in r.json()["error"]["param"]


def test_auth(fake):
    srv = fake[1]
    bad = openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", timeout=10, max_retries=0, http_client=HTTP)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="fake", prompt="x", max_tokens=1)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert _raw(srv, {"model": "fake", "prompt": "x"}, key=None).status_code == 401
    assert HTTP.get(srv.url + "/v1/nothing", headers={"Authorization": f"Bearer {KEY}"}).status_code == 404


def test_oversized_body_is_413(fake):
    r = _raw(fake[1], b'{"model": "fake", "prompt": "' + b"x" * (5 << 20) + b'"}')
    assert r.status_code == 413


def test_queue_full_is_503_and_disconnect_cancels():
    eng = FakeEngine(delay=0.05)
    app = create_app(eng, max_queue=1, max_active=1)
    with BackgroundServer(app) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", timeout=20, max_retries=0, http_client=HTTP)
        # Occupy the only slot with a stream, then fill the one waiting place.
        s1 = c.completions.create(model="fake", prompt="a", max_tokens=60, stream=True)
        next(iter(s1))
        waiter = threading.Thread(target=lambda: c.completions.create(model="fake", prompt="b", max_tokens=2))
        waiter.start()
        deadline = time.monotonic() + 5
        while HTTP.get(srv.url + "/health").json()["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(openai.APIStatusError) as ei:
            c.completions.create(model="fake", prompt="c", max_tokens=2)
        assert ei.value.status_code == 503 and "busy" in ei.value.message
        # Hang up on the stream: its generator must be closed long before its 60 tokens (3 s) are done.
        s1.close()
        waiter.join(10)
        assert not waiter.is_alive()
        deadline = time.monotonic() + 5
        while eng.live and time.monotonic() < deadline:
            time.sleep(0.01)
        assert eng.live == 0
        assert app.state.server.sched.stats["cancelled"] >= 1


def test_interleaving_all_streams_progress():
    """Two long streams on one worker: both get tokens before either finishes (round-robin, not FIFO-serial)."""
    eng = FakeEngine(delay=0.01)
    with BackgroundServer(create_app(eng, max_active=4)) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", timeout=20, max_retries=0, http_client=HTTP)
        order = []

        def run(p):
            for ch in c.completions.create(model="fake", prompt=p, max_tokens=30, stream=True):
                if ch.choices and ch.choices[0].text:
                    order.append(p)

        ts = [threading.Thread(target=run, args=(p,)) for p in ("A", "B")]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        assert order.count("A") == order.count("B") == 30
        first_done = min(max(i for i, p in enumerate(order) if p == q) for q in "AB")
        assert {"A", "B"} <= set(order[:first_done])


class FakeBatchEngine(FakeEngine):
    """The same 'model' through the batched protocol; records the batch sizes the scheduler used."""

    def __init__(self, delay=0.0):
        super().__init__(delay)
        self.batch_sizes = []

    def start(self, ids, params):
        st = {"ids": ids, "i": 0, "limit": 3 if "EOS" in "".join(map(chr, ids)) else self.n_ctx - len(ids)}
        return st, self._next(st)

    def _next(self, st):
        if st["i"] >= st["limit"]:
            return -1
        t = ord("a") + (sum(st["ids"]) + st["i"]) % 26
        st["i"] += 1
        return t

    def step_batch(self, states):
        self.batch_sizes.append(len(states))
        if self.delay:
            time.sleep(self.delay)
        return [self._next(st) for st in states]

    def text(self, st, tok):
        return chr(tok)

    def is_eos(self, tok):
        return tok == -1

    def flush(self, st):
        return ""


def test_continuous_batching_same_output_as_alone():
    eng = FakeBatchEngine(delay=0.005)
    with BackgroundServer(create_app(eng, max_active=8)) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", timeout=20, max_retries=0, http_client=HTTP)
        prompts = [f"p{i}" for i in range(8)] + ["EOS"]
        out = {}

        def run(p):
            s = c.completions.create(model="fake", prompt=p, max_tokens=20, stream=True)
            out[p] = "".join(ch.choices[0].text for ch in s if ch.choices)

        ts = [threading.Thread(target=run, args=(p,)) for p in prompts]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        assert {p: out.get(p) for p in prompts} == {p: expected(p, 3 if p == "EOS" else 20) for p in prompts}
        assert max(eng.batch_sizes) > 1
        assert srv.server.started and HTTP.get(srv.url + "/health").json()["active"] == 0


def test_engine_failure_is_500_and_worker_survives():
    """An engine that raises (here: text() for one prompt) fails that request with an OpenAI error; the
    worker thread keeps serving the next one."""
    class Flaky(FakeBatchEngine):
        def text(self, st, tok):
            if "boom" in "".join(map(chr, st["ids"])):
                raise RuntimeError("detokenizer exploded")
            return chr(tok)

    with BackgroundServer(create_app(Flaky())) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", timeout=20, max_retries=0, http_client=HTTP)
        with pytest.raises(openai.InternalServerError) as ei:
            c.completions.create(model="fake", prompt="boom", max_tokens=3)
        assert "detokenizer exploded" in ei.value.message
        with pytest.raises(openai.APIError, match="detokenizer exploded"):  # in-band SSE error after headers
            list(c.completions.create(model="fake", prompt="boom", max_tokens=3, stream=True))
        assert c.completions.create(model="fake", prompt="ok", max_tokens=3).choices[0].text == expected("ok", 3)
