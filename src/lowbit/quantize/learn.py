"""Codebook learning for one weight tensor (paper §3.2, reconstructed from Arm's patent abstract):
scale the groups, cluster groups by the shape of their value distribution, 1-D k-means per cluster for int8
centroids, per-group codebook choice with a least-squares scale refit, a few alternating rounds.

Learning runs on a random sample of groups (the tables are C x E numbers; 4096 groups pin them down as well
as 16384, docs/codebooks.md); the final encoding of all groups runs chunked on a thread pool."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..formats import check_float_matrix
from ..formats.cb import BLOCK_BYTES, ENTRIES, MAX_TABLES, TABLE_RANGE, dequantize_blocks, make_blocks
from .encode import Tables, encode

CHUNK = 8192            # groups per thread-pool task (fits L2 with the temporaries)
HIST_BINS = 1024        # resolution of the 1-D k-means (value histogram over [-128, 128))
LEARN_SHORT = 4         # learning rounds fit the 4 best codebooks per group after the no-refit pass: as good as
                        # fitting all 16 (docs/codebooks.md "Learning"), 2.5x cheaper
SPLIT = 1024            # sample groups per pool task while learning
RESTARTS = {"cb4": 1, "cb2": 1}   # k-means seedings per tensor (C > 1), the lowest sample error kept. 4 cut cb4
                        # C=16 weight MSE 5.5% but not its KLD (SmolLM2 0.0511 vs 0.0494), for 2x the time: opt-in
                        # (--restarts; docs/codebooks.md "Restarts")


@dataclass
class CodebookTensor:
    """A tensor quantized to cb4/cb2: plain blocks [N, K/32 * block_bytes] and its int8 tables [C, 16]."""
    fmt: str
    N: int
    K: int
    tables: np.ndarray
    blocks: np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def C(self) -> int:
        return len(self.tables)

    @property
    def bpw(self) -> float:
        """Exact stored bits per weight: indices + 16-bit scale words (id in the low 4 bits) + the [C, 16] int8
        tables."""
        return (self.blocks.nbytes + self.tables.nbytes) * 8 / (self.N * self.K)

    def dequantize(self) -> np.ndarray:
        return dequantize_blocks(self.blocks, self.tables, self.fmt).reshape(self.N, self.K)

    def pack(self, kernel: Optional[str] = None):
        from ..ops import PackedWeight
        return PackedWeight.from_blocks(self.blocks, self.fmt, self.N, self.K, kernel, aux=self.tables)


def _signed_absmax(x):
    return np.take_along_axis(x, np.abs(x).argmax(-1)[:, None], -1)[:, 0]


def _kmeans(D, C, rng, iters=15):
    """Plain k-means (k-means++ seeding) on descriptor rows D [S, 32]; returns the labels."""
    S = len(D)
    cent = [D[rng.integers(S)]]
    d2 = ((D - cent[0]) ** 2).sum(1)
    for _ in range(1, C):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        cent.append(D[rng.choice(S, p=p)])
        d2 = np.minimum(d2, ((D - cent[-1]) ** 2).sum(1))
    cent = np.array(cent, np.float32)
    for _ in range(iters):
        lab = _nearest(D, cent)
        order = np.argsort(lab, kind="stable")                  # centroid means: one segmented sum
        cnt = np.bincount(lab, minlength=C)
        nz = np.nonzero(cnt)[0]
        starts = np.concatenate([[0], np.cumsum(cnt)[:-1]])[nz]
        cent[nz] = np.add.reduceat(D[order], starts, axis=0) / cnt[nz, None]
    return _nearest(D, cent)


def _nearest(D, cent):
    # einsum, not BLAS: at [4096, 32] x [32, 16] BLAS threads only add sync cost (seconds on a busy machine)
    dist = (D * D).sum(1)[:, None] - 2 * np.einsum("ij,kj->ik", D, cent) + (cent * cent).sum(1)[None]
    return dist.argmin(1)


def _kmeans_1d(u, wt, E, iters=25):
    """Weighted 1-D Lloyd on values u in [-128, 128) through a fine histogram; quantile initialisation."""
    edges = np.linspace(-128, 128, HIST_BINS + 1, dtype=np.float64)
    b = np.clip(((np.asarray(u, np.float64) + 128) * (HIST_BINS / 256)).astype(np.intp), 0, HIST_BINS - 1)
    h = np.bincount(b, wt, HIST_BINS)                     # uniform bins: one pass, no sort (np.histogram sorts)
    hs = np.bincount(b, wt * u, HIST_BINS)
    ctr = np.where(h > 0, hs / np.maximum(h, 1e-30), (edges[:-1] + edges[1:]) / 2)
    cdf = np.cumsum(h)
    if cdf[-1] <= 0:
        return np.linspace(-127, 127, E)
    q = (np.arange(E) + 0.5) / E * cdf[-1]
    c = ctr[np.minimum(np.searchsorted(cdf, q), HIST_BINS - 1)].astype(np.float64)
    for _ in range(iters):
        c = np.sort(c)
        lab = np.searchsorted((c[1:] + c[:-1]) / 2, ctr)
        num = np.bincount(lab, h * ctr, E)
        den = np.bincount(lab, h, E)
        c = np.where(den > 0, num / np.maximum(den, 1e-30), c)
    return np.sort(c)


def _to_int8(c, fmt, table_range=None):
    """Scale a codebook so its extreme entry reaches the table range's bound (default TABLE_RANGE[fmt]: the
    int8 bound; the factor folds into the group scales)."""
    lo, hi = table_range or TABLE_RANGE[fmt]
    c = np.asarray(c, np.float64)
    f = np.inf
    if c.max() > 0:
        f = min(f, hi / c.max())
    if c.min() < 0:
        f = min(f, lo / c.min())
    if not np.isfinite(f):
        f = 1.0
    return np.clip(np.rint(c * f), lo, hi).astype(np.int8)


def _group_weights(imp, K):
    if imp is None:
        return None
    imp = np.asarray(imp, np.float32).reshape(-1)
    if imp.shape != (K,):
        raise ValueError(f"importance must have one weight per input column (K={K}), got shape {imp.shape}")
    if not np.all(np.isfinite(imp)) or imp.min() < 0:
        raise ValueError("importance weights must be finite and non-negative")
    return imp.reshape(K // 32, 32) + np.float32(1e-8 * max(float(imp.mean()), 1e-30))


def _encode_split(X, tables, Wg, pool):
    """encode() of the sample in SPLIT-group pieces on the pool (the C loop runs without the GIL; each group is
    encoded independently, so the pieces give the same result as one call)."""
    if pool is None or len(X) <= SPLIT:
        return encode(X, tables, Wg, short=LEARN_SHORT)
    parts = list(pool.map(lambda a: encode(X[a:a + SPLIT], tables, None if Wg is None else Wg[a:a + SPLIT],
                                           short=LEARN_SHORT), range(0, len(X), SPLIT)))
    return tuple(np.concatenate([p[j] for p in parts]) for j in range(4))


def learn_tables(X, fmt, C, Wg=None, rounds=3, seed=0, pool: Optional[ThreadPoolExecutor] = None,
                 table_range=None):
    """Learn int8 tables [C, E] from sample groups X [S, 32] (optional weights Wg [S, 32]); pool: encode the
    sample on it; table_range: (lo, hi) of the entries (default TABLE_RANGE[fmt]). Returns (Tables, per-round
    sample errors)."""
    E = ENTRIES[fmt]
    rng = np.random.default_rng(seed)
    mx = _signed_absmax(X)
    keep = mx != 0
    X, mx = X[keep], mx[keep]
    Wg = None if Wg is None else Wg[keep]
    if len(X) == 0:
        return Tables(np.tile(_to_int8(np.linspace(-1, 1, E), fmt, table_range), (C, 1)), fmt), []
    U = X / mx[:, None] * np.float32(127)                # canonical: the signed absmax maps to +127
    D = np.sort(U, 1)                                    # descriptor: the group's sorted normalized values
    if C > 1:
        lab = _kmeans(D, C, rng)
    else:
        lab = np.zeros(len(D), np.intp)
    wscale = (mx / np.float32(127)) ** 2                 # error in weight units = s^2 (u - c)^2
    tabs = []
    for c in range(C):
        m = lab == c
        if not m.any():
            m = np.ones(len(D), bool)
        wt = np.broadcast_to(wscale[m, None], (m.sum(), 32)) if Wg is None else Wg[m] * wscale[m, None]
        tabs.append(_to_int8(_kmeans_1d(U[m].ravel(), np.asarray(wt, np.float64).ravel(), E), fmt, table_range))
    tables = Tables(np.array(tabs), fmt)
    errs = []
    for _ in range(rounds):
        d, ids, idx, err = _encode_split(X, tables, Wg, pool)
        errs.append(float(err.sum()))
        # centroid update with scales and assignment fixed: c = sum(w d x) / sum(w d^2) per (codebook, entry)
        key = (ids.astype(np.intp)[:, None] * E + idx).ravel()
        wt = np.ones_like(X) if Wg is None else Wg
        num = np.bincount(key, (wt * d[:, None] * X).ravel().astype(np.float64), C * E)
        den = np.bincount(key, (wt * (d * d)[:, None]).ravel().astype(np.float64), C * E)
        old = tables.t.reshape(-1).astype(np.float64)
        new = np.where(den > 0, num / np.maximum(den, 1e-30), old).reshape(C, E)
        tables = Tables(np.array([_to_int8(np.sort(r), fmt, table_range) for r in new]), fmt)
    d, ids, idx, err = _encode_split(X, tables, Wg, pool)
    errs.append(float(err.sum()))
    return tables, errs


def quantize_tensor(w: np.ndarray, fmt: str = "cb4", C: int = 4, importance: Optional[np.ndarray] = None,
                    rounds: int = 16, sample: int = 4096, shortlist: Optional[int] = None, seed: int = 0,
                    threads: Optional[int] = None, progress: Optional[Callable[[int], None]] = None,
                    pool: Optional[ThreadPoolExecutor] = None, table_range=None,
                    restarts: Optional[int] = None) -> CodebookTensor:
    """Learn C codebooks for a float [N, K] tensor and encode it. importance: per-input-column weights [K]
    (mean squared activations), or None. shortlist: codebooks fully fitted per group in the final pass, the
    best after one no-refit assignment with each codebook (0 = fit all; None: 0 if C <= 4 else 2).
    table_range: (lo, hi) of the table entries, within [-127, 127] (default TABLE_RANGE[fmt];
    NARROW_RANGE[fmt] for the AVX2 kernels' narrow paths). restarts: tables learned from this many k-means seedings (seed, seed+1, ...)
    on the same sample, keeping the lowest final sample error (None: RESTARTS[fmt]; C = 1 has no seeding: one
    run).
    Defaults: docs/codebooks.md "Learning"."""
    if fmt not in ENTRIES:
        raise ValueError(f"unknown codebook format {fmt!r}; use cb4 or cb2")
    if not isinstance(C, (int, np.integer)) or not 1 <= C <= MAX_TABLES:
        raise ValueError(f"number of codebooks must be an integer in 1..{MAX_TABLES} (4-bit ids), got {C!r}")
    w = check_float_matrix(w)
    N, K = w.shape
    if not np.all(np.isfinite(w)):
        raise ValueError("weight contains NaN or Inf")
    if shortlist is None:
        shortlist = 0 if C <= 4 else 2
    if restarts is None:
        restarts = RESTARTS[fmt]
    if not isinstance(restarts, (int, np.integer)) or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
    if table_range is not None:
        lo, hi = (int(v) for v in table_range)
        if not -127 <= lo < 0 < hi <= 127:
            raise ValueError(f"table range must satisfy -127 <= lo < 0 < hi <= 127, got {table_range!r}")
        table_range = (lo, hi)
    if pool is None:
        with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as ex:
            return quantize_tensor(w, fmt, C, importance, rounds, sample, shortlist, seed, progress=progress,
                                   pool=ex, table_range=table_range, restarts=restarts)
    X = np.ascontiguousarray(w, dtype=np.float32).reshape(-1, 32)
    n, nb = len(X), K // 32
    imp = _group_weights(importance, K)
    rng = np.random.default_rng(seed)
    sel = np.sort(rng.choice(n, sample, replace=False)) if n > sample else np.arange(n)
    Xs, Ws = X[sel], None if imp is None else imp[sel % nb]
    n_runs = restarts if C > 1 else 1
    learn = lambda r: learn_tables(Xs, fmt, C, Ws, rounds, seed + r, pool, table_range)  # noqa: E731
    if n_runs == 1:
        runs = [learn(0)]
    else:
        # the seedings run side by side (their encodes share the pool; the k-means and table updates are numpy,
        # largely serial, so two at a time use both cores); each is deterministic, so the pick is too
        with ThreadPoolExecutor(max_workers=min(n_runs, threads or os.cpu_count() or 1)) as rx:
            runs = list(rx.map(learn, range(n_runs)))
    final = [r[1][-1] if r[1] else 0.0 for r in runs]                 # final sample error of each seeding
    best = int(np.argmin(final))
    tables, errs = runs[best]

    def job(a):
        b = min(a + CHUNK, n)
        wg = None if imp is None else imp[np.arange(a, b) % nb]
        d, ids, idx, err = encode(X[a:b], tables, wg, short=shortlist)
        blocks = make_blocks(d, ids, idx, fmt)              # here: packing runs on the pool too
        if progress:
            progress(b - a)
        return blocks, np.bincount(ids, minlength=C), float(err.sum(dtype=np.float64))

    parts = list(pool.map(job, range(0, n, CHUNK)))
    blocks = np.concatenate([p[0] for p in parts]).reshape(N, nb * BLOCK_BYTES[fmt])
    usage = sum(p[1] for p in parts)
    stats = {"sample_err_rounds": errs, "err": sum(p[2] for p in parts), "usage": usage.tolist(),
             "restart_errs": final, "seed": seed + best}
    return CodebookTensor(fmt, N, K, tables.stored, blocks, stats)
