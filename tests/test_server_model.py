"""The real server on the embedded stories260K model: uvicorn on a free loopback port, the `openai` client,
answers checked against lowbit's own generate() and against each request served alone."""
import concurrent.futures as cf
import json

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from lowbit.api import load  # noqa: E402
from lowbit.server import create_app  # noqa: E402
from lowbit.server.lowbit_engine import LowbitEngine  # noqa: E402
from lowbit.server.runner import BackgroundServer  # noqa: E402

KEY = "sk-lowbit-test"
CTX = 256
HTTP = httpx.Client(timeout=60)
PROMPTS = ["Once upon a time", "The little dog", "One day, a girl named Sue", "Tom and his friend",
           "The sun was shining and", "In a small town there was", "Mom said", "The big red ball",
           "Lily wanted to", "The cat sat", "There was a boy", "A bird flew", "Ben had a toy",
           "It was a rainy day", "The old man", "She saw a"]


@pytest.fixture(scope="module")
def server():
    engine = LowbitEngine.load(None, n_ctx=CTX, model_id="stories260K")
    app = create_app(engine, api_key=KEY, max_queue=32, max_active=16)
    with BackgroundServer(app) as srv:
        yield srv, engine, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0].url + "/v1", api_key=KEY, timeout=60, max_retries=0, http_client=HTTP)


@pytest.fixture(scope="module")
def reference():
    """lowbit's own greedy generation, on a separately loaded copy of the model."""
    llm = load(None, n_ctx=CTX)
    return lambda prompt, n: llm.generate(prompt, max_tokens=n, temperature=0)


def test_completion_matches_runtime_generate(client, server, reference):
    r = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=40, temperature=0)
    assert r.choices[0].text == reference("Once upon a time", 40)
    assert len(r.choices[0].text) > 20
    assert r.usage.prompt_tokens == len(server[1].encode("Once upon a time"))
    assert 0 < r.usage.completion_tokens <= 40
    assert r.choices[0].finish_reason in ("length", "stop")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_equals_nonstream(client):
    kw = dict(model="stories260K", prompt="The little dog", max_tokens=30, temperature=0)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_stream_and_nonstream(client):
    msgs = [{"role": "user", "content": "Once upon a time"}]
    r = client.chat.completions.create(model="stories260K", messages=msgs, max_tokens=24, temperature=0)
    text = r.choices[0].message.content
    assert text and r.usage.completion_tokens > 0
    s = client.chat.completions.create(model="stories260K", messages=msgs, max_tokens=24, temperature=0,
                                       stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in s if c.choices) == text


def test_sampling_params_and_seed(client):
    kw = dict(model="stories260K", prompt="Once upon a time", max_tokens=24, temperature=1.0, top_p=0.9,
              seed=1234, presence_penalty=0.5, frequency_penalty=0.5)
    a = client.completions.create(**kw).choices[0].text
    b = client.completions.create(**kw).choices[0].text
    assert a == b  # same seed, same text
    full = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=40,
                                     temperature=0).choices[0].text
    stop = full[10:14]
    r = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=40, temperature=0,
                                  stop=[stop])
    assert r.choices[0].text == full[: full.index(stop)] and r.choices[0].finish_reason == "stop"


def test_16_concurrent_streams_match_alone(client, server):
    alone = {p: client.completions.create(model="stories260K", prompt=p, max_tokens=32,
                                          temperature=0).choices[0].text for p in PROMPTS}

    def stream(p):
        s = client.completions.create(model="stories260K", prompt=p, max_tokens=32, temperature=0, stream=True)
        return p, "".join(c.choices[0].text for c in s if c.choices)

    with cf.ThreadPoolExecutor(len(PROMPTS)) as ex:
        together = dict(ex.map(stream, PROMPTS, timeout=120))
    assert together == alone
    sched = server[2].state.server.sched
    assert sched.batched and sched.stats["errors"] == 0


def _post(srv, body, key=KEY, path="/v1/completions"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTP.post(srv.url + path, content=data, headers={"Authorization": f"Bearer {key}",
                                                            "Content-Type": "application/json"})


@pytest.mark.parametrize("case", ["malformed", "unknown_model", "negative_max_tokens", "oversized_prompt",
                                  "wrong_key", "bad_token_id"])
def test_bad_requests_4xx_and_still_serving(server, client, case):
    srv = server[0]
    body = {"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 8}
    key = KEY
    if case == "malformed":
        body = b'{"model": "stories260K", "prompt": '
    elif case == "unknown_model":
        body["model"] = "gpt-4"
    elif case == "negative_max_tokens":
        body["max_tokens"] = -1
    elif case == "oversized_prompt":
        body["prompt"] = "Once upon a time there was a dog. " * 200
    elif case == "bad_token_id":
        body["prompt"] = [1, 2, 10**6]
    else:
        key = "sk-wrong"
    r = _post(srv, body, key=key)
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    expect = {"malformed": (400, "JSON"), "unknown_model": (404, "gpt-4"), "negative_max_tokens": (400, "max_tokens"),
              "oversized_prompt": (400, "context length"), "wrong_key": (401, "API key"),
              "bad_token_id": (400, "vocabulary")}[case]
    assert r.status_code == expect[0] and expect[1] in err["message"]
    ok = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=4, temperature=0)
    assert ok.usage.completion_tokens > 0


def _check_batched_equals_lone(e):
    import numpy as np
    from lowbit.server.engine import SamplingParams
    from lowbit.server.lowbit_engine import decode_batch
    m = e.model
    prompts = [e.encode(p) for p in PROMPTS[:5]]
    seqs = [e.start(ids, SamplingParams(max_tokens=8, temperature=0))[0] for ids in prompts]
    lone = []
    for s in seqs:  # lone step on a copy of each cache, same pending token
        kv = type(s.cache)(m.config.n_layer, m.config.n_head_kv, 64, m.config.head_dim)
        kv.k[:], kv.v[:], kv.pos = s.cache.k, s.cache.v, s.cache.pos
        lone.append(decode_batch(m, [kv], [s.last])[0].copy())
    batched = decode_batch(m, [s.cache for s in seqs], [s.last for s in seqs])
    for i in range(len(seqs)):
        np.testing.assert_array_equal(batched[i], lone[i])


@pytest.mark.parametrize("fmt", ["q4_0", "q8_0", "f32"])
def test_batched_decode_is_bit_identical_to_lone_decode(fmt):
    """The continuous-batching step (M rows through GEMM) must give each sequence exactly the logits it gets
    alone (M = 1, GEMV), or greedy answers would depend on who else is being served."""
    _check_batched_equals_lone(LowbitEngine.load(None, format=fmt, n_ctx=64))


def test_batched_decode_bit_identical_with_split_cb_weights(tmp_path):
    """The same for cb4 at C=16, whose q/k/v and gate/up run as parts (SplitLinear): batched in one GEMM call."""
    from lowbit.cli import main
    from lowbit.registry import embedded_model
    from lowbit.model.weights import SplitLinear
    path = tmp_path / "c16.gguf"
    assert main(["quantize", str(embedded_model()), "--format", "cb4", "--codebooks", "16", "-o", str(path)]) == 0
    e = LowbitEngine.load(path, n_ctx=64)
    assert isinstance(e.model.layers[0].wqkv, SplitLinear) and e.model.layers[0].wqkv._one is not None
    _check_batched_equals_lone(e)


DECODE_RTOL = 1e-4  # same math, different op order: float32 rounding only


def test_server_decode_step_agrees_with_runtime_decode():
    """The server's own step (per-sequence caches swapped into the shared model) against LlamaModel.decode, in
    f32 (no activation quantization, so only rounding differs): catches the runtime changing how it reaches
    its cache."""
    import numpy as np
    from lowbit.server.engine import SamplingParams
    from lowbit.server.lowbit_engine import decode_batch
    e = LowbitEngine.load(None, format="f32", n_ctx=64)
    m = e.model
    a, _ = e.start(e.encode("Once upon a time"), SamplingParams(max_tokens=8, temperature=0))
    b, _ = e.start(e.encode("The little dog"), SamplingParams(max_tokens=8, temperature=0))  # a's cache idle
    for _ in range(3):
        ref_kv = type(a.cache)(m.config.n_layer, m.config.n_head_kv, 64, m.config.head_dim)
        ref_kv.k[:], ref_kv.v[:], ref_kv.pos = a.cache.k, a.cache.v, a.cache.pos
        ours = decode_batch(m, [a.cache], [a.last])[0].copy()
        e._on(type("S", (), {"cache": ref_kv, "kT": [ref_kv.k[i].transpose(0, 2, 1)
                                                      for i in range(m.config.n_layer)]})())
        theirs = m.decode(a.last).reshape(-1).copy()
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=DECODE_RTOL * scale)
        a.sample(ours)


def test_client_disconnect_cancels_generation(server, client):
    """Close a stream after two chunks: the sequence leaves the batch long before its 200 tokens."""
    import time
    sched = server[2].state.server.sched
    before = sched.stats["cancelled"]
    s = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=200,
                                  temperature=0, stream=True)
    it = iter(s)
    next(it), next(it)
    s.close()
    deadline = time.monotonic() + 10
    while (sched.stats["cancelled"] == before or sched.load["active"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sched.stats["cancelled"] == before + 1 and sched.load["active"] == 0


def test_lowbit_serve_command(tmp_path):
    """The real `lowbit serve` process: binds 127.0.0.1, checks the key, stops on SIGTERM."""
    import socket
    import subprocess
    import sys
    import time
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lowbit.cli", "serve", "--port", str(port), "--api-key", KEY,
                             "--ctx", "128", "--log-level", "warning"], stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if HTTP.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "lowbit serve did not come up in 60 s"
            time.sleep(0.2)
        assert HTTP.get(url + "/v1/models").status_code == 401
        r = HTTP.get(url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "stories260K"
        listen = _listening_addresses(port)
        if listen is not None:  # Linux: the socket table says where it listens
            assert listen == {"127.0.0.1"}, listen
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode is not None


def _listening_addresses(port):
    """IPv4 addresses listening on port, from /proc/net/tcp (None where that table does not exist)."""
    import ipaddress
    from pathlib import Path
    table = Path("/proc/net/tcp")
    if not table.exists():
        return None
    out = set()
    for line in table.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":  # 0A = LISTEN
            out.add(str(ipaddress.IPv4Address(bytes.fromhex(addr)[::-1])))
    return out


def test_n_choices_equal_lone_requests_with_their_seeds(client):
    """n > 1: choice i samples with seed + i in its own sequence (batched with the others, its prefill copied
    from the first), so it equals a lone request with that seed; streamed choices carry their index."""
    kw = dict(model="stories260K", prompt="Once upon a time", max_tokens=16, temperature=0.9)
    r = client.completions.create(n=3, seed=11, **kw)
    assert [c.index for c in r.choices] == [0, 1, 2]
    lone = [client.completions.create(seed=11 + i, **kw) for i in range(3)]
    assert [c.text for c in r.choices] == [x.choices[0].text for x in lone]
    assert len({c.text for c in r.choices}) > 1                       # the seeds differ, so do the samples
    assert r.usage.prompt_tokens == lone[0].usage.prompt_tokens
    assert r.usage.completion_tokens == sum(x.usage.completion_tokens for x in lone)
    texts, usage = ["", "", ""], None
    for ch in client.completions.create(n=3, seed=11, stream=True, stream_options={"include_usage": True}, **kw):
        for c in ch.choices:
            texts[c.index] += c.text
        usage = ch.usage or usage
    assert texts == [c.text for c in r.choices] and usage.completion_tokens == r.usage.completion_tokens
    chat = client.chat.completions.create(model="stories260K", messages=[{"role": "user", "content": "Lily"}], n=2,
                                          seed=3, max_tokens=8, temperature=0.9)
    assert [c.index for c in chat.choices] == [0, 1] and all(c.message.content for c in chat.choices)
