"""Perplexity and KL divergence, computed the way llama.cpp's `llama-perplexity` does.

llama.cpp (tools/perplexity): tokenize the whole text once (BOS prepended when the vocab adds one), cut it into
n_chunk = len(tokens) // ctx chunks of ctx tokens, replace the first token of every chunk by BOS (when the vocab
adds one), evaluate each chunk from an empty cache, and score only the second half: logits at positions
first = ctx/2 .. ctx-2 predict tokens first+1 .. ctx-1 (ctx-1-first tokens per chunk). PPL = exp(mean NLL);
its +/- is ppl * stderr(NLL). KLD (llama.cpp --kl-divergence) is KL(P_ref || Q) on the same positions, with
"same top" the share of positions whose argmax agrees.

Everything here takes a `logits_fn(tokens) -> float32 [len(tokens), vocab]`, so lowbit and llama.cpp are scored
by the same code. Sums are in float64 and in a fixed order, so repeated runs give identical numbers."""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

LogitsFn = Callable[[Sequence[int]], np.ndarray]


ROWS = 16     # rows per pass: 16 x 49152 float64 = 6 MB stays in cache across the passes (2.4-3.3x faster)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities of each row (row blocks: the same numbers as one whole-array pass)."""
    logits = np.asarray(logits)
    out = np.empty(logits.shape, np.float64)
    for a in range(0, len(logits), ROWS):
        x = out[a: a + ROWS]
        x[...] = logits[a: a + ROWS]
        x -= x.max(-1, keepdims=True)
        x -= np.log(np.exp(x).sum(-1, keepdims=True))
    return out


def make_chunks(tokens: Sequence[int], ctx: int, n_chunks: Optional[int] = None, bos: Optional[int] = None):
    """llama.cpp's chunking: n = len // ctx chunks (capped by n_chunks), first token of each replaced by bos."""
    if ctx < 4 or ctx % 2:
        raise ValueError(f"--ctx must be an even number >= 4, got {ctx}")
    if len(tokens) < 2 * ctx:
        raise ValueError(f"the text has {len(tokens)} tokens; at least 2*ctx = {2 * ctx} are needed "
                         f"(as in llama.cpp): use a longer text or a smaller --ctx")
    n = len(tokens) // ctx
    if n_chunks is not None:
        if n_chunks < 1:
            raise ValueError(f"--chunks must be >= 1, got {n_chunks}")
        n = min(n, n_chunks)
    chunks = []
    for i in range(n):
        c = list(tokens[i * ctx:(i + 1) * ctx])
        if bos is not None:
            c[0] = bos
        chunks.append(c)
    return chunks


@dataclass
class KLDStats:
    kld: list = field(default_factory=list)       # per scored position
    same_top: int = 0
    n: int = 0

    def add(self, ref_logp: np.ndarray, logp: np.ndarray):
        for a in range(0, len(logp), ROWS):       # row blocks that stay in cache (same numbers as one pass)
            lp = logp[a: a + ROWS].astype(np.float32).astype(np.float64)   # the reference is stored in float32
            rl = np.asarray(ref_logp[a: a + ROWS], dtype=np.float64)
            self.kld.extend((np.exp(rl) * (rl - lp)).sum(-1).tolist())
            self.same_top += int((rl.argmax(-1) == lp.argmax(-1)).sum())
        self.n += len(logp)

    def summary(self) -> dict:
        k = np.asarray(self.kld, dtype=np.float64)
        return {"kld_mean": float(k.mean()), "kld_stderr": float(k.std(ddof=1) / math.sqrt(len(k))) if len(k) > 1
                else 0.0, "kld_median": float(np.median(k)), "kld_p99": float(np.percentile(k, 99)),
                "kld_max": float(k.max()), "same_top": self.same_top / self.n, "kld_positions": self.n}


@dataclass
class Result:
    ppl: float
    ppl_err: float
    nll_mean: float
    n_scored: int
    n_chunks: int
    ctx: int
    n_tokens: int
    chunk_ppl: list
    kld: Optional[dict] = None

    def as_dict(self):
        d = dict(self.__dict__)
        return d


class Checkpoint:
    """A long scoring run's progress on disk (replaced atomically every `every` chunks), so a run that is killed
    resumes where it stopped with the same numbers. `key` names the run (model, text, settings): progress of
    another run in the same file is refused, not mixed in."""

    def __init__(self, path, key: str, every: int = 8):
        self.path, self.key, self.every = Path(path), key, every

    def load(self) -> Optional[dict]:
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                state = {k: z[k] for k in z.files}
        except Exception as e:
            raise ValueError(f"{self.path}: not a readable checkpoint ({e}); delete it to start over") from None
        if str(state.get("key")) != self.key:
            raise ValueError(f"{self.path} holds the progress of another run (other model, text or settings); "
                             f"delete it or choose another --checkpoint file")
        return state

    def save(self, **state):
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, key=np.str_(self.key), **state)
        os.replace(tmp, self.path)

    def remove(self):
        self.path.unlink(missing_ok=True)


def score(logits_fn: LogitsFn, chunks, ref=None, progress: bool = True, desc: str = "perplexity",
          keep_logp: Optional[Callable[[int, np.ndarray], None]] = None,
          checkpoint: Optional[Checkpoint] = None) -> Result:
    """Run every chunk, score its second half. ref: callable(i) -> reference log-probs [scored, vocab] of chunk
    i (for KLD). keep_logp(i, logp): receives this model's log-probs of chunk i (to build a reference cache).
    checkpoint: resume from / save progress to it (not with keep_logp: a reference cache is written whole)."""
    if checkpoint is not None and keep_logp is not None:
        raise ValueError("a checkpointed run cannot also build a reference cache")
    ctx = len(chunks[0])
    first = ctx // 2
    nll_all, chunk_ppl = [], []
    kld = KLDStats() if ref is not None else None
    start = 0
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        start = int(state["next"])
        nll_all, chunk_ppl = list(state["nll"]), [float(v) for v in state["chunk_ppl"]]
        if kld is not None:
            kld.kld, kld.same_top, kld.n = state["kld"].tolist(), int(state["same_top"]), int(state["n"])
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(chunks), initial=start, desc=desc, unit="chunk")
    for i in range(start, len(chunks)):
        c = chunks[i]
        logits = np.asarray(logits_fn(c))
        # a logits function may return every position [ctx, vocab] or only the scored half on [ctx - first, vocab]
        if logits.ndim != 2 or logits.shape[0] not in (ctx, ctx - first):
            raise RuntimeError(f"logits for a {ctx}-token chunk have shape {logits.shape}, expected "
                               f"[{ctx}, vocab] or [{ctx - first}, vocab]")
        skip = first if logits.shape[0] == ctx else 0
        logp = log_softmax(logits[skip: skip + ctx - 1 - first])        # [ctx-1-first, vocab]
        target = np.asarray(c[first + 1: ctx])
        nll = -logp[np.arange(len(target)), target]
        nll_all.append(nll)
        chunk_ppl.append(float(np.exp(nll.mean())))
        if ref is not None:
            kld.add(ref(i), logp)
        if keep_logp is not None:
            keep_logp(i, logp)
        if bar is not None:
            run = np.concatenate(nll_all)
            bar.set_postfix(ppl=f"{math.exp(run.mean()):.4f}")
            bar.update(1)
        if checkpoint is not None and (i + 1) % checkpoint.every == 0 and i + 1 < len(chunks):
            checkpoint.save(next=i + 1, nll=np.stack(nll_all), chunk_ppl=np.asarray(chunk_ppl),
                            kld=np.asarray(kld.kld if kld else []), same_top=kld.same_top if kld else 0,
                            n=kld.n if kld else 0)
    if bar is not None:
        bar.close()
    nll = np.concatenate(nll_all)
    ppl, err = ppl_and_err(nll)
    return Result(ppl, err, float(nll.mean()), len(nll), len(chunks), ctx, sum(len(c) for c in chunks), chunk_ppl,
                  kld.summary() if kld is not None else None)


def ppl_and_err(nll: np.ndarray) -> tuple[float, float]:
    """PPL = exp(mean NLL) and its +/- (ppl * stderr of the NLL), as llama.cpp prints them."""
    ppl = math.exp(float(nll.mean()))
    return ppl, (ppl * float(nll.std(ddof=1)) / math.sqrt(len(nll)) if len(nll) > 1 else 0.0)


# ---------------------------------------------------------------- reference log-probs, cached on disk

def file_sha256(path, _memo={}) -> str:
    path = os.fspath(path)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for b in iter(lambda: f.read(1 << 24), b""):
                h.update(b)
        _memo[key] = h.hexdigest()
    return _memo[key]


def tokens_sha256(tokens) -> str:
    return hashlib.sha256(np.asarray(tokens, dtype=np.int64).tobytes()).hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("LOWBIT_CACHE", Path.home() / ".cache" / "lowbit")) / "kld"


class RefCache:
    """Reference log-probs [chunks, scored, vocab] float32 in an .npy, keyed by model hash + ref format +
    token hash + ctx + chunks. Float32 (not llama.cpp's uint16) so a model vs itself gives exactly 0."""

    def __init__(self, model_path, fmt: str, tokens: Sequence[int], ctx: int, n_chunks: int, vocab: int):
        tok_hash = tokens_sha256(tokens)
        key = hashlib.sha256(f"{file_sha256(model_path)}|{fmt}|{tok_hash}|{ctx}|{n_chunks}".encode()).hexdigest()
        self.path = cache_dir() / f"{key[:32]}.npy"
        self.meta = {"model": os.fspath(model_path), "format": fmt, "ctx": ctx, "chunks": n_chunks,
                     "tokens_sha256": tok_hash, "vocab": vocab}
        self.shape = (n_chunks, ctx - 1 - ctx // 2, vocab)

    @property
    def ready(self) -> bool:
        meta = self.path.with_suffix(".json")
        return self.path.exists() and meta.exists() and json.loads(meta.read_text()).get("complete") is True

    def writer(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        arr = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=self.shape)

        def keep(i, logp):
            arr[i] = logp.astype(np.float32)
        return arr, keep

    def finish(self, arr):
        arr.flush()
        self.path.with_suffix(".json").write_text(json.dumps(dict(self.meta, complete=True), indent=1))

    def reader(self):
        arr = np.load(self.path, mmap_mode="r")
        if arr.shape != self.shape:
            raise RuntimeError(f"KLD cache {self.path} has shape {arr.shape}, expected {self.shape}; delete it")
        return lambda i: np.asarray(arr[i], dtype=np.float64)

    def target_nll(self, chunks) -> np.ndarray:
        """The reference's NLL of every scored token, read from the cache (a few reads per chunk, not the whole
        file): its PPL without running the reference again (float32-stored log-probs: ~1e-7 relative)."""
        arr = np.load(self.path, mmap_mode="r")
        ctx = len(chunks[0])
        first = ctx // 2
        rows = np.arange(ctx - 1 - first)
        return np.concatenate([-np.asarray(arr[i][rows, np.asarray(c[first + 1: ctx])], dtype=np.float64)
                               for i, c in enumerate(chunks)])


# ---------------------------------------------------------------- lowbit models as logits functions

def lowbit_logits_fn(llm) -> LogitsFn:
    """Full-sequence logits of one chunk from an empty cache (an LLM from lowbit.load, or its .model)."""
    model = getattr(llm, "model", llm)

    def fn(tokens):   # only the scored half's logits (score() accepts [ctx - ctx//2, vocab])
        model.reset()
        return model.prefill(tokens, all_logits=True, logits_from=len(tokens) // 2)
    return fn


def bos_for(llm) -> Optional[int]:
    """The BOS id if this tokenizer prepends one (llama.cpp's llama_vocab_get_add_bos), else None."""
    tok = llm.tokenizer
    add = getattr(tok, "add_bos", None)
    bos = getattr(tok, "bos_id", None)
    if add is None or bos is None:   # fall back to what encode() does by default
        ids = tok.encode("a")
        ids_nobos = tok.encode("a", add_bos=False)
        return ids[0] if len(ids) == len(ids_nobos) + 1 else None
    return int(bos) if add else None
