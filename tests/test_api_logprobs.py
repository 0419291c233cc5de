"""LLM.logprobs / LLM.loglikelihood: the runtime's own log-softmax per token, lm-eval's loglikelihood contract
(sum over the continuation, greedy flag), chunked scoring past 256 rows, and the cache left consistent."""
import numpy as np
import pytest

import lowbit
from lowbit.logprobs import CHUNK

CTX = "Once upon a time, there was a little girl named Lily."


@pytest.fixture(scope="module")
def llm():
    return lowbit.load(n_ctx=512)


def _ref_logprobs(ids):
    lg = np.asarray(lowbit.load(n_ctx=512).model.prefill(ids, all_logits=True), np.float64)
    lsm = lg - lg.max(-1, keepdims=True)
    lsm -= np.log(np.exp(lsm).sum(-1, keepdims=True))
    return lsm


def test_logprobs_match_the_runtime(llm):
    ids = llm.tokenizer.encode(CTX + " She saw a purple car.")
    out = llm.logprobs(prompt_ids=ids, top=3)
    ref = _ref_logprobs(ids)
    assert [o["id"] for o in out] == ids and out[0]["logprob"] is None
    np.testing.assert_allclose([o["logprob"] for o in out[1:]], ref[np.arange(len(ids) - 1), ids[1:]],
                               atol=1e-9, rtol=0)
    for i, o in enumerate(out[1:]):
        assert [t for t, _ in o["top"]] == list(np.argsort(-ref[i], kind="stable")[:3])
    assert "".join(o["text"] for o in out) == llm.tokenizer.decode(ids, skip_special=False)
    assert out == llm.logprobs(CTX + " She saw a purple car.", top=3)      # text in, same tokens


def test_scoring_past_one_chunk(llm):
    ids = (llm.tokenizer.encode(CTX) * 40)[: CHUNK + 30]
    out = llm.logprobs(prompt_ids=ids)
    np.testing.assert_allclose([o["logprob"] for o in out[1:]],
                               _ref_logprobs(ids)[np.arange(len(ids) - 1), ids[1:]], atol=1e-9, rtol=0)


def test_loglikelihood(llm):
    greedy = llm.generate(CTX, max_tokens=6, temperature=0)
    ll, is_greedy = llm.loglikelihood(CTX, greedy)
    whole = llm.tokenizer.encode(CTX + greedy)
    n = len(llm.tokenizer.encode(CTX))
    lp = llm.logprobs(prompt_ids=whole)
    assert ll == pytest.approx(sum(o["logprob"] for o in lp[n:]), abs=1e-9) and ll < 0
    assert is_greedy
    ll2, g2 = llm.loglikelihood(CTX, " The purple taxes sang")
    assert not g2 and ll2 < ll
    with pytest.raises(ValueError, match="empty continuation"):
        llm.loglikelihood(CTX, "")


def test_generate_after_scoring_is_unchanged(llm):
    want = lowbit.load(n_ctx=512).generate("The little dog", max_tokens=12, temperature=0)
    llm.logprobs("The little dog ran to the park and")          # leaves those tokens in the cache
    assert llm.generate("The little dog", max_tokens=12, temperature=0) == want


def test_bad_scoring_input(llm):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.logprobs(prompt_ids=[1, 10**6])
    with pytest.raises(ValueError, match="too long"):
        llm.logprobs(prompt_ids=[1] * 600)
    with pytest.raises(ValueError, match="give a prompt"):
        llm.logprobs()
