"""Llama forward pass: RMSNorm, normal (adjacent-pair) RoPE, GQA attention over a KV cache, SwiGLU, optional tied
output. Weights follow GGUF conventions (Q/K rows in GGUF's rope order; HF checkpoints are permuted at load).
Prefill runs up to n_batch prompt rows per linear call (GEMM kernels); decode runs one row (GEMV). All activation
buffers are allocated once per model; decode only makes numpy views of them."""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from .kv_cache import KVCache
from .weights import EmbeddingRows, build_linear, load_vector


_core = ops._core
_FUSED = hasattr(_core, "attn_decode")        # a C core built before llama_ops.c: numpy decode
# prefill attention in C on the pool where a SIMD row kernel exists (AVX2); elsewhere numpy's BLAS matmuls, which
# beat a scalar loop (LOWBIT_DISABLE_ISA=avx2 also selects numpy)
_ATTN_C = hasattr(_core, "attn_prefill_simd") and _core.attn_prefill_simd()
DEFAULT_MAX_CTX = 4096     # default cache length cap (pages are only touched as the cache fills)


class _Layer:
    __slots__ = ("attn_norm", "ffn_norm", "wqkv", "wo", "wgu", "wdown")


class LlamaModel:
    def __init__(self, src, fmt: str = "q4_0", n_ctx: int | None = None, n_batch: int = 64, pure: bool = False):
        cfg = src.config
        cfg.validate(getattr(src, "path", ""))
        self.config, self.format = cfg, fmt
        self.log = []                 # (tensor, source type, shape, runtime format, what happened)
        names = set(src.names())
        self._require(names, ["token_embd.weight", "output_norm.weight"], src)
        self.embed = EmbeddingRows(src, "token_embd.weight", self.log)
        self.layers = []
        for i in range(cfg.n_layer):
            p = f"blk.{i}."
            need = [p + s for s in ("attn_norm.weight", "ffn_norm.weight", "attn_q.weight", "attn_k.weight",
                                    "attn_v.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight",
                                    "ffn_down.weight")]
            self._require(names, need, src)
            L = _Layer()
            L.attn_norm = load_vector(src, p + "attn_norm.weight", self.log)
            L.ffn_norm = load_vector(src, p + "ffn_norm.weight", self.log)
            L.wqkv = build_linear(src, [p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"], fmt, self.log)
            L.wo = build_linear(src, [p + "attn_output.weight"], fmt, self.log)
            L.wgu = build_linear(src, [p + "ffn_gate.weight", p + "ffn_up.weight"], fmt, self.log)
            L.wdown = build_linear(src, [p + "ffn_down.weight"], fmt, self.log, not pure)
            self.layers.append(L)
        self.output_norm = load_vector(src, "output_norm.weight", self.log)
        out_name = "token_embd.weight" if cfg.tied_embeddings else "output.weight"
        self.output = build_linear(src, [out_name], fmt, self.log, not pure)
        if cfg.tied_embeddings:
            self.log[-1] = ("output (tied: token_embd.weight)",) + self.log[-1][1:]
        self._check_shapes(src)
        self.n_ctx = min(cfg.n_ctx_train, DEFAULT_MAX_CTX) if n_ctx is None else int(n_ctx)
        if self.n_ctx < 1:
            raise ValueError(f"n_ctx must be positive, got {n_ctx}")
        self.n_batch = max(1, int(n_batch))
        self.cache = KVCache(cfg.n_layer, cfg.n_head_kv, self.n_ctx, cfg.head_dim)
        self._rope_table()
        self._alloc()
        if fmt not in ("f32", "f16"):
            _single_thread_blas()



    @staticmethod
    def _require(names, need, src):
        from ..io import ModelFileError
        missing = [n for n in need if n not in names]
        if missing:
            raise ModelFileError(f"{getattr(src, 'path', '')}: missing tensor(s) {', '.join(missing)}")

    def _check_shapes(self, src):
        from ..io import ModelFileError
        c, hd = self.config, self.config.head_dim
        want = {"wqkv": ((c.n_head + 2 * c.n_head_kv) * hd, c.n_embd), "wo": (c.n_embd, c.n_head * hd),
                "wgu": (2 * c.n_ff, c.n_embd), "wdown": (c.n_embd, c.n_ff)}
        for i, L in enumerate(self.layers):
            if L.attn_norm.shape != (c.n_embd,) or L.ffn_norm.shape != (c.n_embd,):
                raise ModelFileError(f"{getattr(src, 'path', '')}: layer {i} norm weights have shapes "
                                     f"{L.attn_norm.shape}, {L.ffn_norm.shape}; the config implies ({c.n_embd},)")
            for k, (N, K) in want.items():
                w = getattr(L, k)
                if (w.N, w.K) != (N, K):
                    raise ModelFileError(f"{getattr(src, 'path', '')}: layer {i} {k} has shape [{w.N}, {w.K}], "
                                         f"the config implies [{N}, {K}]")
        if ((self.output.N, self.output.K) != (c.vocab_size, c.n_embd) or self.embed.dim != c.n_embd or
                self.embed.n_rows != c.vocab_size or self.output_norm.shape != (c.n_embd,)):
            raise ModelFileError(f"{getattr(src, 'path', '')}: output/embedding shapes do not match the config")

    # -- setup -------------------------------------------------------------------------------------------------
    def _rope_table(self):
        c = self.config
        ang = np.arange(self.n_ctx, dtype=np.float64)[:, None] * c.rope_inv_freq()[None, :]
        self.rot = np.exp(1j * ang).astype(np.complex64)          # [n_ctx, hd/2]: (x0 + i x1) * e^{i theta}

    def _alloc(self):
        c, B = self.config, self.n_batch
        hd = c.head_dim
        self.nq, self.nkv = c.n_head * hd, c.n_head_kv * hd
        f32 = np.float32
        self.x = np.zeros((B, c.n_embd), f32)
        self.h = np.zeros((B, c.n_embd), f32)
        self.qkv = np.zeros((B, self.nq + 2 * self.nkv), f32)
        self.attn = np.zeros((B, self.nq), f32)
        self.o = np.zeros((B, c.n_embd), f32)
        self.gu = np.zeros((B, 2 * c.n_ff), f32)
        self.ff = np.zeros((B, c.n_ff), f32)
        self.logits = np.zeros((1, c.vocab_size), f32)
        self.scores = np.zeros((c.n_head_kv, c.n_head // c.n_head_kv, self.n_ctx), f32)
        self.ssum = np.zeros((c.n_head_kv, c.n_head // c.n_head_kv, 1), f32)
        self.rowsq = np.zeros((B, 1), f32)
        G = c.n_head // c.n_head_kv
        # decode (M = 1) views, made once
        self.d = dict(x=self.x[:1], h=self.h[:1], qkv=self.qkv[:1], attn=self.attn[:1], o=self.o[:1],
                      gu=self.gu[:1], ff=self.ff[:1], rowsq=self.rowsq[:1],
                      qk=self.qkv[0, : self.nq + self.nkv].view(np.complex64).reshape(c.n_head + c.n_head_kv, hd // 2),
                      q=self.qkv[0, : self.nq].reshape(c.n_head_kv, G, hd),
                      k=self.qkv[0, self.nq: self.nq + self.nkv].reshape(c.n_head_kv, hd),
                      v=self.qkv[0, self.nq + self.nkv:].reshape(c.n_head_kv, hd),
                      attn3=self.attn[0].reshape(c.n_head_kv, G, hd),
                      g=self.gu[:1, : c.n_ff], u=self.gu[:1, c.n_ff:])
        self.scale = np.float32(1.0 / np.sqrt(hd))
        self.qk_scale = np.ones((c.n_head + c.n_head_kv, 1), np.complex64)
        self.qk_scale[: c.n_head] = self.scale
        self.rot_pos = np.zeros((c.n_head + c.n_head_kv, hd // 2), np.complex64)
        self.smax = np.zeros_like(self.ssum)
        self.kT = [self.cache.k[i].transpose(0, 2, 1) for i in range(c.n_layer)]   # [Hkv, hd, n_ctx] views

    @property
    def weight_bytes(self) -> int:
        ws = [self.output] + [w for L in self.layers for w in (L.wqkv, L.wo, L.wgu, L.wdown)]
        return int(sum(w.nbytes for w in ws) + sum(L.attn_norm.nbytes + L.ffn_norm.nbytes for L in self.layers))

    # -- forward -----------------------------------------------------------------------------------------------
    def _rmsnorm(self, x, w, out, rowsq):
        np.einsum("ij,ij->i", x, x, out=rowsq[:, 0])
        rowsq *= np.float32(1.0 / x.shape[1])
        rowsq += np.float32(self.config.rms_eps)
        np.sqrt(rowsq, out=rowsq)
        np.divide(x, rowsq, out=out)
        out *= w
        return out

    def prefill(self, tokens, all_logits=False, logits_from=0):
        """Run tokens through the model at positions cache.pos...; return logits of the last token (or of all
        tokens from index logits_from on, [n - logits_from, vocab], when all_logits: perplexity scores only the
        second half of a chunk, and the output matrix is a fifth of SmolLM2's weights)."""
        tokens = list(tokens)
        if not tokens:
            raise ValueError("no tokens to evaluate")
        if self.cache.pos + len(tokens) > self.n_ctx:
            raise ContextFullError(self.cache.pos, len(tokens), self.n_ctx)
        outs = []
        for s in range(0, len(tokens), self.n_batch):
            chunk = tokens[s: s + self.n_batch]
            skip = max(0, logits_from - s) if all_logits else 0
            if len(chunk) == 1:
                lg = self.decode(chunk[0])[skip:]
            else:
                lg = self._batch(chunk, all_logits, skip)
            if all_logits or s + self.n_batch >= len(tokens):
                outs.append(lg.copy())
        return np.concatenate(outs, 0) if all_logits else outs[-1][-1]

    def _batch(self, toks, all_logits, skip=0):
        c, M = self.config, len(toks)
        hd, Hkv = c.head_dim, c.n_head_kv
        p0 = self.cache.pos
        T = p0 + M
        x, h, qkv, attn, o, gu, ff, rowsq = (a[:M] for a in (self.x, self.h, self.qkv, self.attn, self.o, self.gu,
                                                              self.ff, self.rowsq))
        self.embed.lookup(toks, x)
        for li, L in enumerate(self.layers):
            self._rmsnorm(x, L.attn_norm, h, rowsq)
            L.wqkv(h, qkv)
            if _ATTN_C:
                _core.attn_prefill(c.n_head, Hkv, hd, p0, M, self.n_ctx, qkv, self.rot, self.cache.k[li],
                                   self.cache.v[li], attn, self.scale, True)
            else:
                self._attend_numpy(li, qkv, attn, p0, M)
            L.wo(attn, o)
            x += o
            self._rmsnorm(x, L.ffn_norm, h, rowsq)
            self._mlp(L, h, gu, ff, o)
            x += o
        self.cache.pos = T
        if all_logits:   # rows skip.. only
            out = np.empty((max(M - skip, 0), c.vocab_size), np.float32)
            if len(out):
                self._rmsnorm(x[skip:], self.output_norm, h[skip:], rowsq[skip:])
                self.output(h[skip:], out)
            return out
        hl = h[:1]
        self._rmsnorm(x[M - 1: M], self.output_norm, hl, rowsq[:1])
        return self.output(hl, self.logits)

    def _attend_numpy(self, li, qkv, attn, p0, M):
        """RoPE, KV write and causal attention of M rows in numpy (the reference for the C prefill path)."""
        c = self.config
        hd, Hkv = c.head_dim, c.n_head_kv
        G = c.n_head // Hkv
        T = p0 + M
        rot = self.rot[p0:T, None, :]
        mask = np.triu(np.full((M, T), -np.inf, np.float32), k=p0 + 1)      # key j > query position -> masked
        qk = qkv[:, : self.nq + self.nkv].view(np.complex64).reshape(M, c.n_head + Hkv, hd // 2)
        qk *= rot
        kc, vc = self.cache.k[li], self.cache.v[li]
        kc[:, p0:T] = qkv[:, self.nq: self.nq + self.nkv].reshape(M, Hkv, hd).transpose(1, 0, 2)
        vc[:, p0:T] = qkv[:, self.nq + self.nkv:].reshape(M, Hkv, hd).transpose(1, 0, 2)
        # contiguous [Hkv, G*M, hd] stacks so np.matmul takes its BLAS path (strided 4-D operands do not)
        q = np.ascontiguousarray(qkv[:, : self.nq].reshape(M, Hkv, G, hd).transpose(1, 2, 0, 3))
        s = np.matmul(q.reshape(Hkv, G * M, hd), kc[:, :T].transpose(0, 2, 1))   # [Hkv, G*M, T]
        s *= self.scale
        s4 = s.reshape(Hkv, G, M, T)
        s4 += mask
        s -= s.max(-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(-1, keepdims=True)
        a = np.matmul(s, vc[:, :T]).reshape(Hkv, G, M, hd)
        attn[:] = a.transpose(2, 0, 1, 3).reshape(M, self.nq)

    def _mlp(self, L, h, gu, ff, out):
        L.wgu(h, gu)
        self.silu_mul(gu, ff)
        L.wdown(ff, out)

    def silu_mul(self, gu, ff):
        """ff[M, n_ff] = silu(gate) * up of gu [M, 2 n_ff], row by row: C on the pool (AVX2 exp where usable;
        each row's result does not depend on M), numpy on a core built without it."""
        if _FUSED:
            _core.silu_mul(gu, ff, gu.shape[0])
            return ff
        n = self.config.n_ff
        g, u = gu[:, :n], gu[:, n:]
        np.negative(g, out=ff)
        np.exp(ff, out=ff)
        ff += 1.0
        np.divide(g, ff, out=ff)          # silu(g) = g / (1 + e^-g)
        ff *= u
        return ff

    def decode(self, token):
        """One token at position cache.pos (GEMV path); returns logits [1, vocab] (a reused buffer). Ten calls
        per layer: four linears and three fused C ops (add+RMSNorm, RoPE+KV write+attention, SiLU*up); the
        Python calls, not their arithmetic, are the per-token cost outside the kernels."""
        if not _FUSED:
            return self.decode_numpy(token)
        pos = self.cache.pos
        if pos >= self.n_ctx:
            raise ContextFullError(pos, 1, self.n_ctx)
        c, d = self.config, self.d
        x, h2, qkv, attn, o, gu, ff = d["x"][0], d["h"], d["qkv"], d["attn"], d["o"], d["gu"], d["ff"]
        self.embed.lookup((token,), d["x"])
        H, Hkv, hd, n_ctx, eps = c.n_head, c.n_head_kv, c.head_dim, self.n_ctx, c.rms_eps
        rot, scores, ks, vs = self.rot[pos], self.scores, self.cache.k, self.cache.v
        norm, attend, silu = _core.add_rmsnorm, _core.attn_decode, _core.silu_mul
        residual = None
        for li, L in enumerate(self.layers):
            norm(x, residual, L.attn_norm, eps, h2)
            L.wqkv(h2, qkv)
            attend(H, Hkv, hd, pos, n_ctx, qkv, rot, ks[li], vs[li], scores, attn)
            L.wo(attn, o)
            norm(x, o, L.ffn_norm, eps, h2)
            L.wgu(h2, gu)
            silu(gu, ff)
            L.wdown(ff, o)
            residual = o
        norm(x, residual, self.output_norm, eps, h2)
        self.cache.pos = pos + 1
        return self.output(h2, self.logits)

    def decode_numpy(self, token):
        """decode() in numpy calls only (the reference the fused path is tested against)."""
        pos = self.cache.pos
        if pos >= self.n_ctx:
            raise ContextFullError(pos, 1, self.n_ctx)
        d, T = self.d, pos + 1
        x, h, qkv, attn, o = d["x"][0], d["h"][0], d["qkv"], d["attn"], d["o"]
        x2, h2 = d["x"], d["h"]
        qk, q, k, v, attn3 = d["qk"], d["q"], d["k"], d["v"], d["attn3"]
        gu, ff, g, u = d["gu"], d["ff"], d["g"], d["u"]
        self.embed.lookup((token,), x2)
        rot = np.multiply(self.rot[pos], self.qk_scale, out=self.rot_pos)   # RoPE, with 1/sqrt(hd) folded into q
        sc = self.scores[:, :, :T]
        smax, ssum = self.smax, self.ssum
        mx, add, mul, exp, matmul = np.maximum.reduce, np.add.reduce, np.multiply, np.exp, np.matmul
        inv_n, eps, sqrt = 1.0 / self.config.n_embd, self.config.rms_eps, math.sqrt
        kT, vs = self.kT, self.cache.v
        for li, L in enumerate(self.layers):
            mul(x, L.attn_norm, out=h)
            h *= 1.0 / sqrt(float(x.dot(x)) * inv_n + eps)
            L.wqkv(h2, qkv)
            qk *= rot
            kt, vc = kT[li], vs[li]
            kt[:, :, pos] = k
            vc[:, pos] = v
            matmul(q, kt[:, :, :T], out=sc)                                         # [Hkv, G, T]
            mx(sc, axis=-1, keepdims=True, out=smax)
            sc -= smax
            exp(sc, out=sc)
            add(sc, axis=-1, keepdims=True, out=ssum)
            sc /= ssum
            matmul(sc, vc[:, :T], out=attn3)
            L.wo(attn, o)
            x += o[0]
            mul(x, L.ffn_norm, out=h)
            h *= 1.0 / sqrt(float(x.dot(x)) * inv_n + eps)
            L.wgu(h2, gu)
            np.negative(g, out=ff)
            exp(ff, out=ff)
            ff += 1.0
            np.divide(g, ff, out=ff)                                               # silu(g) = g / (1 + e^-g)
            ff *= u
            L.wdown(ff, o)
            x += o[0]
        self.cache.pos = T
        mul(x, self.output_norm, out=h)
        h *= 1.0 / sqrt(float(x.dot(x)) * inv_n + eps)
        return self.output(h2, self.logits)

    def reset(self):
        self.cache.reset()


def _single_thread_blas():
    """With block formats numpy's BLAS only does the small attention matmuls; its worker threads spin after each
    call and steal the cores from our kernel pool (measured: SmolLM2 257-token prefill 29 s -> 9 s on a busy
    2-core box). Our kernels own the cores, so BLAS gets one thread (LOWBIT_BLAS_THREADS overrides)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    import os
    threadpool_limits(int(os.environ.get("LOWBIT_BLAS_THREADS", "1")), user_api="blas")


class ContextFullError(ValueError):
    def __init__(self, pos, n, n_ctx, msg=None):
        super().__init__(msg or f"context full: {pos} tokens in the cache + {n} new > n_ctx={n_ctx} "
                                f"(shorten the prompt or load with a larger n_ctx)")
        self.pos, self.n, self.n_ctx = pos, n, n_ctx
