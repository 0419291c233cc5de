"""The server's prompt cache: the longest cached prefix is copied, the rest prefilled, with the same bits as a
prefill from scratch; LRU under a byte budget; entries that another covers are dropped; usage reports the
cached tokens; --prompt-cache 0 turns it off."""
import numpy as np
import pytest

from lowbit.api import load
from lowbit.model.kv_cache import KVCache
from lowbit.server.engine import SamplingParams
from lowbit.server.lowbit_engine import LowbitEngine
from lowbit.server.prompt_cache import PromptCache

GREEDY = SamplingParams(max_tokens=16, temperature=0.0)
SYSTEM = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
          "friends. One day, she saw a big red ball under a tree.")


def _cache(n_ctx=64, fill=None, pos=0):
    c = KVCache(2, 2, n_ctx, 8)
    if fill is not None:
        c.k[...] = fill
        c.v[...] = -fill
    c.pos = pos
    return c


def test_fill_copies_the_longest_prefix():
    pc = PromptCache(1 << 20, token_bytes=256, min_tokens=4)
    pc.put(list(range(20)), _cache(fill=1.0, pos=20))
    pc.put(list(range(10)) + [99] * 10, _cache(fill=2.0, pos=20))
    new = _cache()
    assert pc.fill(list(range(15)) + [7, 7], new) == 15            # the first entry matches 15 tokens
    assert new.pos == 15 and (new.k[:, :, :15] == 1.0).all() and (new.v[:, :, :15] == -1.0).all()
    assert (new.k[:, :, 15:] == 0).all()                            # nothing past the prefix
    new = _cache()
    assert pc.fill(list(range(20)), new) == 19                      # the last prompt token is always run
    new = _cache()
    assert pc.fill(list(range(10)) + [99, 99, 5], new) == 12 and (new.k[:, :, :12] == 2.0).all()
    assert pc.fill([5, 6, 7, 8, 9], _cache()) == 0                  # no common prefix
    assert pc.fill([0, 1, 2, 50], _cache()) == 0                    # 3 < min_tokens
    assert (pc.hits, pc.reused_tokens) == (3, 46)


def test_put_drops_covered_entries_and_evicts_lru():
    pc = PromptCache(budget_bytes=100 * 256, token_bytes=256, min_tokens=4)
    pc.put(list(range(30)), _cache(pos=30))
    pc.put(list(range(40)), _cache(pos=40))                         # extends the first: it replaces it
    assert len(pc) == 1 and pc.nbytes == 40 * 256
    pc.put(list(range(35)), _cache(pos=35))                         # covered by the entry held: not added
    assert len(pc) == 1
    pc.put([7] * 50, _cache(pos=50))
    assert len(pc) == 2 and pc.nbytes == 90 * 256
    assert pc.fill(list(range(40)) + [1], _cache()) == 40           # touches the range(40) entry
    pc.put([8] * 30, _cache(pos=30))                                # over budget: the least recently used goes
    assert len(pc) == 2 and pc.fill([7] * 20, _cache()) == 0 and pc.fill(list(range(12)), _cache()) == 11
    pc.put([9] * 200, _cache(n_ctx=256, pos=200))                   # larger than the whole budget: not kept
    assert len(pc) == 2
    pc.put([1, 2], _cache(pos=2))                                   # shorter than min_tokens
    assert len(pc) == 2


def test_zero_budget_keeps_nothing():
    pc = PromptCache(0, token_bytes=256)
    pc.put(list(range(40)), _cache(pos=40))
    assert len(pc) == 0 and pc.fill(list(range(40)), _cache()) == 0


@pytest.fixture(scope="module")
def llm():
    return load(None, n_ctx=256)


def _run(eng, ids, n=16):
    """start + greedy steps, as the scheduler drives it; returns (sequence, tokens)."""
    s, tok = eng.start(ids, GREEDY)
    toks = [tok]
    for _ in range(n - 1):
        toks.append(eng.step_batch([s])[0])
    return s, toks


def test_engine_reuse_is_bit_identical(llm):
    cached, fresh = LowbitEngine(llm), LowbitEngine(load(None, n_ctx=256), prompt_cache_mb=0)
    a = cached.encode(SYSTEM + " She wanted to play with it.")
    b = cached.encode(SYSTEM + " Her mom said no.")
    common = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert common >= 30
    s, _ = _run(cached, a)
    cached.release(s)
    assert len(cached.prompt_cache) == 1
    s1, t1 = _run(cached, b)
    s2, t2 = _run(fresh, b)
    assert s1.reused == common and s2.reused == 0
    assert t1 == t2
    n = s1.cache.pos
    assert n == s2.cache.pos == len(b) + 15
    assert np.array_equal(s1.cache.k[:, :, :n], s2.cache.k[:, :, :n])    # every K/V, prefix and rest
    assert np.array_equal(s1.cache.v[:, :, :n], s2.cache.v[:, :, :n])


def test_engine_reuses_an_earlier_answer(llm):
    """A chat continuation: prompt = earlier prompt + its answer + more; the answer's K/V came from decode."""
    eng = LowbitEngine(llm)
    p = eng.encode(SYSTEM)
    s, toks = _run(eng, p, 12)
    eng.release(s)
    nxt = p + toks[:11] + eng.encode(" Then")[1:]
    s2, _ = eng.start(nxt, GREEDY)
    assert s2.reused == len(p) + 11                                 # the prompt and the 11 tokens that ran


def test_generate_path_releases_on_close(llm):
    eng = LowbitEngine(llm)
    gen = eng.generate(eng.encode(SYSTEM), GREEDY)
    for _ in range(5):
        next(gen)
    gen.close()                                                     # what the scheduler does at max_tokens
    assert len(eng.prompt_cache) == 1


def test_server_usage_reports_cached_tokens(llm):
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")
    from lowbit.server import create_app
    from lowbit.server.runner import BackgroundServer
    outs = {}
    for mb in (256, 0):
        eng = LowbitEngine(llm, model_id="s", prompt_cache_mb=mb)
        with BackgroundServer(create_app(eng)) as srv, httpx.Client(timeout=60) as http:
            cl = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, http_client=http)
            r = [cl.completions.create(model="s", prompt=SYSTEM + q, max_tokens=12, temperature=0)
                 for q in (" She", " Her mom")]
        outs[mb] = [x.choices[0].text for x in r], [x.usage.prompt_tokens_details.cached_tokens for x in r]
    assert outs[256][0] == outs[0][0]                               # the same answers
    assert outs[0][1] == [0, 0] and outs[256][1][0] == 0 and outs[256][1][1] >= 30


def test_live_sequences_share_their_prefix(llm):
    """A request that starts while another with the same system prompt still runs copies from it."""
    eng, fresh = LowbitEngine(llm), LowbitEngine(load(None, n_ctx=256), prompt_cache_mb=0)
    a = eng.encode(SYSTEM + " She wanted to play with it.")
    b = eng.encode(SYSTEM + " Her mom said no.")
    s1, tok1 = eng.start(a, GREEDY)
    eng.step_batch([s1])                                           # s1 is running: nothing is in the cache yet
    assert len(eng.prompt_cache) == 0 and len(eng.live) == 1
    s2, _ = eng.start(b, GREEDY)
    assert s2.reused >= 30
    f2, _ = fresh.start(b, GREEDY)
    n = s2.cache.pos
    assert np.array_equal(s2.cache.k[:, :, :n], f2.cache.k[:, :, :n])
    assert np.array_equal(s2.cache.v[:, :, :n], f2.cache.v[:, :, :n])
    eng.release(s1)
    eng.release(s2)
    assert len(eng.live) == 0 and len(eng.prompt_cache) == 2
