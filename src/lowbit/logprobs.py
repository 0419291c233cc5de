"""Log-probabilities of tokens under the model: the server's logprobs/echo and LLM.logprobs / LLM.loglikelihood.
Values are the model's own distribution (log-softmax of the logits in float64, no temperature or sampling
transforms). Prompts are scored in row chunks so the [rows, vocab] logits stay bounded."""
from __future__ import annotations

import numpy as np

CHUNK = 256        # prompt rows per all-logits prefill


def token_logprobs(logits: np.ndarray, tokens, k: int) -> list[tuple]:
    """Rows of logits [n, vocab] -> per row (token, its log-probability, [(id, logprob)] of the k most likely,
    most likely first, ties by id)."""
    z = np.asarray(logits, np.float64).reshape(len(tokens), -1)
    k = min(k, z.shape[1])                       # a vocabulary smaller than the request: all of it
    mx = z.max(-1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(z - mx).sum(-1))
    out = []
    for i, t in enumerate(tokens):
        top = []
        if k > 0:
            ids = np.argpartition(-z[i], k - 1)[:k]
            ids = ids[np.lexsort((ids, -z[i, ids]))]
            top = [(int(j), float(z[i, j] - lse[i])) for j in ids]
        out.append((int(t), float(z[i, t] - lse[i]), top))
    return out


def prefill_logprobs(model, ids: list[int], k: int = 0) -> tuple[list[tuple], np.ndarray]:
    """Run ids through the model from its cache's current position, in CHUNK-row pieces with every row's
    logits. Returns (entries of ids[1:], each given the ones before it; the last row's logits, for sampling)."""
    entries = []
    for a in range(0, len(ids), CHUNK):
        chunk = ids[a: a + CHUNK]
        lg = model.prefill(chunk, all_logits=True)
        nxt = ids[a + 1: a + 1 + len(chunk)]
        entries += token_logprobs(lg[: len(nxt)], nxt, k)
    return entries, lg[-1]
