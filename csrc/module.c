/* The only file that includes Python.h: argument checking, buffers in and out, GIL released around work.
 * ops.py validates shapes and dtypes first; the checks here make a wrong call raise, never crash. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include "lowbit/kernel.h"
#include "ops/ops.h"
#include "common/threadpool.h"

const char *lb_isa_name(int bit);

static size_t sb_bytes(int fmt, int R) {
    switch (fmt) {
    case LB_FMT_Q8_0: return (size_t)R * 34;
    case LB_FMT_CB2: return (size_t)R * 10;
    default: return (size_t)R * 18;   /* q4_0, iq4_nl, cb4 (the id lives in the scale word) */
    }
}

static const lb_kernel *get_kernel(int idx) {
    if (idx < 0 || idx >= lb_nkernels) { PyErr_Format(PyExc_ValueError, "no kernel with index %d", idx); return NULL; }
    const lb_kernel *k = &lb_kernels[idx];
    if (k->isa & ~lb_cpu_features()) {
        PyErr_Format(PyExc_RuntimeError, "kernel %s needs CPU features this machine lacks", k->name);
        return NULL;
    }
    return k;
}

/* Get a contiguous buffer of at least `need` bytes (writable if asked); sets a clear error otherwise. */
static int get_buf(PyObject *o, Py_buffer *v, size_t need, int writable, const char *what) {
    if (PyObject_GetBuffer(o, v, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s buffer", what, writable ? " writable" : "");
        return -1;
    }
    if ((size_t)v->len < need) {
        PyErr_Format(PyExc_ValueError, "%s has %zd bytes, the layout needs %zu", what, v->len, need);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

static int check_dims(int K, int N, int M) {
    if (K <= 0 || K % LB_QK) { PyErr_Format(PyExc_ValueError, "K=%d must be a positive multiple of 32", K); return -1; }
    if (N <= 0 || M < 0) { PyErr_Format(PyExc_ValueError, "bad shape N=%d M=%d", N, M); return -1; }
    return 0;
}

static size_t weight_bytes(const lb_kernel *k, int K, int N) {
    size_t groups = (size_t)(N + k->R - 1) / k->R;
    return groups * (size_t)(K / LB_QK) * sb_bytes(k->fmt, k->R);
}

static PyObject *py_kernels(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    PyObject *list = PyList_New(0);
    int usable = lb_isa_usable(), found = lb_cpu_features();
    for (int i = 0; i < lb_nkernels; i++) {
        const lb_kernel *k = &lb_kernels[i];
        PyObject *isa = PyList_New(0);
        for (int bit = 1; bit; bit <<= 1)
            if (k->isa & bit) { PyObject *s = PyUnicode_FromString(lb_isa_name(bit)); PyList_Append(isa, s); Py_DECREF(s); }
        PyObject *d = Py_BuildValue("{s:i,s:s,s:s,s:N,s:i,s:i,s:i,s:O,s:O,s:n,s:O}", "index", i, "name", k->name,
                                    "format", lb_fmt_name(k->fmt), "isa", isa, "R", k->R, "B", k->B, "act_B",
                                    k->act_B, "runnable", (k->isa & ~found) ? Py_False : Py_True, "usable",
                                    (k->isa & ~usable) ? Py_False : Py_True, "sb_bytes",
                                    (Py_ssize_t)sb_bytes(k->fmt, k->R), "gemm_multi",
                                    k->gemm_multi ? Py_True : Py_False);
        PyList_Append(list, d);
        Py_DECREF(d);
    }
    return list;
}

static PyObject *isa_list(int mask) {
    PyObject *l = PyList_New(0);
    for (int bit = 1; bit; bit <<= 1)
        if (mask & bit) { PyObject *s = PyUnicode_FromString(lb_isa_name(bit)); PyList_Append(l, s); Py_DECREF(s); }
    return l;
}

static PyObject *py_features(PyObject *self, PyObject *args) {
    (void)self; (void)args;
#if defined(__x86_64__)
    const char *arch = "x86_64";
#elif defined(__aarch64__)
    const char *arch = "aarch64";
#else
    const char *arch = "other";
#endif
    return Py_BuildValue("{s:s,s:N,s:N,s:i}", "arch", arch, "found", isa_list(lb_cpu_features()), "usable",
                         isa_list(lb_isa_usable()), "sve_bits", lb_sve_vector_bits());
}

static PyObject *py_selected(PyObject *self, PyObject *args) {
    (void)self;
    const char *fmt;
    if (!PyArg_ParseTuple(args, "s", &fmt)) return NULL;
    for (int f = 0; f < LB_NFMT; f++)
        if (!strcmp(fmt, lb_fmt_name(f))) {
            const lb_kernel *k = lb_select(f);
            if (!k) Py_RETURN_NONE;
            return PyLong_FromLong((long)(k - lb_kernels));
        }
    return PyErr_Format(PyExc_ValueError, "unknown format %s", fmt);
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *args) {
    (void)self;
    int n;
    if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
    if (n < 1 || n > 256) return PyErr_Format(PyExc_ValueError, "thread count %d out of range 1..256", n);
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = lb_pool_set_threads(n);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_Format(PyExc_RuntimeError, "could not start %d threads", n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    return PyLong_FromLong(lb_pool_threads());
}

static PyObject *py_act_bytes(PyObject *self, PyObject *args) {
    (void)self;
    int M, K;
    if (!PyArg_ParseTuple(args, "ii", &M, &K)) return NULL;
    if (check_dims(K, 1, M)) return NULL;
    return PyLong_FromSize_t(lb_act_bytes(M, K));
}

/* pack_activations(kernel, x f32 [M,K], M, K, out) */
static PyObject *py_pack_activations(PyObject *self, PyObject *args) {
    (void)self;
    int kidx, M, K;
    PyObject *xo, *oo;
    if (!PyArg_ParseTuple(args, "iOiiO", &kidx, &xo, &M, &K, &oo)) return NULL;
    const lb_kernel *k = get_kernel(kidx);
    if (!k || check_dims(K, 1, M)) return NULL;
    Py_buffer x, o;
    if (get_buf(xo, &x, (size_t)M * K * 4, 0, "activations")) return NULL;
    if (get_buf(oo, &o, lb_act_bytes(M, K), 1, "activation scratch")) { PyBuffer_Release(&x); return NULL; }
    Py_BEGIN_ALLOW_THREADS lb_pack_activations(k, M, K, x.buf, o.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x); PyBuffer_Release(&o);
    Py_RETURN_NONE;
}

/* gemv(kernel, K, W, aux, A, bsums, out, n0, n1, N): one micro-kernel call, single thread (tests).
 * is_gemm 2: gemm_multi(..., ldo, n0, n1, N, ng), ng token groups in one call. */
static PyObject *py_microkernel(int is_gemm, PyObject *args) {
    int kidx, K, n0, n1, N, ng = 1;
    Py_ssize_t ldo = 0;
    PyObject *wo, *auxo, *ao, *bo, *oo;
    if (is_gemm == 2) {
        if (!PyArg_ParseTuple(args, "iiOOOOOniiii", &kidx, &K, &wo, &auxo, &ao, &bo, &oo, &ldo, &n0, &n1, &N, &ng)) return NULL;
    } else if (is_gemm) {
        if (!PyArg_ParseTuple(args, "iiOOOOOniii", &kidx, &K, &wo, &auxo, &ao, &bo, &oo, &ldo, &n0, &n1, &N)) return NULL;
    } else if (!PyArg_ParseTuple(args, "iiOOOOOiii", &kidx, &K, &wo, &auxo, &ao, &bo, &oo, &n0, &n1, &N)) return NULL;
    const lb_kernel *k = get_kernel(kidx);
    if (!k || check_dims(K, N, 1)) return NULL;
    if (is_gemm == 2 && !k->gemm_multi) return PyErr_Format(PyExc_ValueError, "kernel %s has no gemm_multi", k->name);
    if (ng < 1 || ng > 4096) return PyErr_Format(PyExc_ValueError, "token group count %d out of range 1..4096", ng);
    const int Np = (N + k->R - 1) / k->R * k->R;
    if (n0 < 0 || n0 % k->R || n1 <= n0 || n1 > Np)
        return PyErr_Format(PyExc_ValueError, "column range [%d,%d) must start at a multiple of %d and end <= %d",
                            n0, n1, k->R, Np);
    if (is_gemm && ldo < N) return PyErr_Format(PyExc_ValueError, "ldo %zd < N %d", ldo, N);
    const int nb = K / LB_QK, rows = is_gemm ? 4 * ng : 1;
    Py_buffer w, aux = {0}, a, bs, o;
    if (get_buf(wo, &w, weight_bytes(k, K, N), 0, "packed weights")) return NULL;
    int has_aux = auxo != Py_None;
    if (has_aux && get_buf(auxo, &aux, LB_CB_AUX_BYTES, 0, "codebook tables")) { PyBuffer_Release(&w); return NULL; }
    if ((k->fmt == LB_FMT_CB4 || k->fmt == LB_FMT_CB2) && !has_aux) {
        PyBuffer_Release(&w);
        return PyErr_Format(PyExc_ValueError, "format %s needs its codebook tables", lb_fmt_name(k->fmt));
    }
    if (get_buf(ao, &a, (size_t)nb * (is_gemm ? (size_t)ng * LB_Q8X4_BLOCK : LB_Q8_BLOCK), 0, "packed activations")) goto e1;
    if (get_buf(bo, &bs, (size_t)nb * rows * 2, 0, "block sums")) goto e2;
    if (get_buf(oo, &o, ((size_t)(rows - 1) * ldo + N) * 4, 1, "output")) goto e3;
    Py_BEGIN_ALLOW_THREADS
    if (is_gemm == 2) k->gemm_multi(K, w.buf, aux.buf, a.buf, bs.buf, o.buf, (size_t)ldo, n0, n1, N, ng);
    else if (is_gemm) k->gemm(K, w.buf, aux.buf, a.buf, bs.buf, o.buf, (size_t)ldo, n0, n1, N);
    else k->gemv(K, w.buf, aux.buf, a.buf, bs.buf, o.buf, n0, n1, N);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&o); PyBuffer_Release(&bs); PyBuffer_Release(&a);
    if (has_aux) PyBuffer_Release(&aux);
    PyBuffer_Release(&w);
    Py_RETURN_NONE;
e3: PyBuffer_Release(&bs);
e2: PyBuffer_Release(&a);
e1: if (has_aux) PyBuffer_Release(&aux);
    PyBuffer_Release(&w);
    return NULL;
}
static PyObject *py_gemv(PyObject *s, PyObject *a) { (void)s; return py_microkernel(0, a); }
static PyObject *py_gemm(PyObject *s, PyObject *a) { (void)s; return py_microkernel(1, a); }
static PyObject *py_gemm_multi(PyObject *s, PyObject *a) { (void)s; return py_microkernel(2, a); }

/* set_gemm_multi(on): 0 makes linear use the per-group gemm loop everywhere (tests compare both). */
static PyObject *py_set_gemm_multi(PyObject *self, PyObject *args) {
    (void)self;
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    lb_gemm_multi_enabled = on;
    Py_RETURN_NONE;
}

/* linear(kernel, K, N, W, aux, x, M, out): out[M,N] = x[M,K] @ W^T */
static PyObject *py_linear(PyObject *self, PyObject *args) {
    (void)self;
    int kidx, K, N, M;
    PyObject *wo, *auxo, *xo, *oo;
    if (!PyArg_ParseTuple(args, "iiiOOOiO", &kidx, &K, &N, &wo, &auxo, &xo, &M, &oo)) return NULL;
    const lb_kernel *k = get_kernel(kidx);
    if (!k || check_dims(K, N, M)) return NULL;
    if (M == 0) Py_RETURN_NONE;
    Py_buffer w, aux = {0}, x, o;
    int has_aux = auxo != Py_None;
    if ((k->fmt == LB_FMT_CB4 || k->fmt == LB_FMT_CB2) && !has_aux)
        return PyErr_Format(PyExc_ValueError, "format %s needs its codebook tables", lb_fmt_name(k->fmt));
    if (get_buf(wo, &w, weight_bytes(k, K, N), 0, "packed weights")) return NULL;
    if (has_aux && get_buf(auxo, &aux, LB_CB_AUX_BYTES, 0, "codebook tables")) { PyBuffer_Release(&w); return NULL; }
    if (get_buf(xo, &x, (size_t)M * K * 4, 0, "activations")) goto e1;
    if (get_buf(oo, &o, (size_t)M * N * 4, 1, "output")) goto e2;
    uint8_t *scratch = malloc(lb_act_bytes(M, K));
    if (!scratch) { PyErr_NoMemory(); goto e3; }
    Py_BEGIN_ALLOW_THREADS lb_linear(k, K, N, w.buf, aux.buf, M, x.buf, o.buf, scratch);
    Py_END_ALLOW_THREADS
    free(scratch);
    PyBuffer_Release(&o); PyBuffer_Release(&x);
    if (has_aux) PyBuffer_Release(&aux);
    PyBuffer_Release(&w);
    Py_RETURN_NONE;
e3: PyBuffer_Release(&o);
e2: PyBuffer_Release(&x);
e1: if (has_aux) PyBuffer_Release(&aux);
    PyBuffer_Release(&w);
    return NULL;
}

/* linear_parts(parts, K, x, M, out, ldo): parts = ((kernel, N, W, aux or None, col), ...); out[M, ldo] gets
 * x @ W_i^T in columns col_i..col_i+N_i-1. One activation quantization, one pool dispatch for all parts. */
static PyObject *py_linear_parts(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *po, *xo, *oo;
    int K, M;
    Py_ssize_t ldo;
    if (!PyArg_ParseTuple(args, "OiOiOn", &po, &K, &xo, &M, &oo, &ldo)) return NULL;
    PyObject *seq = PySequence_Fast(po, "parts must be a sequence of (kernel, N, W, aux, col) tuples");
    if (!seq) return NULL;
    const Py_ssize_t np = PySequence_Fast_GET_SIZE(seq);
    lb_lin_part parts[LB_MAX_PARTS];
    Py_buffer wb[LB_MAX_PARTS], ab[LB_MAX_PARTS], x = {0}, o = {0};
    int has_aux[LB_MAX_PARTS] = {0}, got = 0, ok = 0;
    if (np < 1 || np > LB_MAX_PARTS) {
        PyErr_Format(PyExc_ValueError, "linear_parts takes 1 to %d parts, got %zd", LB_MAX_PARTS, np);
        goto done;
    }
    if (ldo <= 0 || ldo > INT32_MAX) { PyErr_Format(PyExc_ValueError, "bad output width ldo=%zd", ldo); goto done; }
    for (Py_ssize_t i = 0; i < np; i++) {
        int kidx, N;
        Py_ssize_t col;
        PyObject *w, *aux;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "iiOOn;each part is (kernel, N, W, aux, col)",
                              &kidx, &N, &w, &aux, &col)) goto done;
        const lb_kernel *k = get_kernel(kidx);
        if (!k || check_dims(K, N, M)) goto done;
        if (i > 0 && !lb_parts_compatible(parts[0].k, k)) {
            PyErr_Format(PyExc_ValueError, "kernels %s and %s pack activations differently; run them apart",
                         parts[0].k->name, k->name);
            goto done;
        }
        if (col < 0 || col + N > ldo) {
            PyErr_Format(PyExc_ValueError, "part %zd: columns %zd..%zd outside the output width %zd", i, col,
                         col + N, ldo);
            goto done;
        }
        for (Py_ssize_t q = 0; q < i; q++)       /* overlapping parts would race on the same outputs */
            if ((size_t)col < parts[q].col + (size_t)parts[q].N && parts[q].col < (size_t)col + (size_t)N) {
                PyErr_Format(PyExc_ValueError, "parts %zd and %zd write overlapping columns", q, i);
                goto done;
            }
        has_aux[i] = aux != Py_None;
        if ((k->fmt == LB_FMT_CB4 || k->fmt == LB_FMT_CB2) && !has_aux[i]) {
            PyErr_Format(PyExc_ValueError, "format %s needs its codebook tables", lb_fmt_name(k->fmt));
            goto done;
        }
        if (get_buf(w, &wb[i], weight_bytes(k, K, N), 0, "packed weights")) goto done;
        if (has_aux[i] && get_buf(aux, &ab[i], LB_CB_AUX_BYTES, 0, "codebook tables")) {
            PyBuffer_Release(&wb[i]);
            goto done;
        }
        got = (int)i + 1;
        parts[i] = (lb_lin_part){.k = k, .N = N, .W = wb[i].buf, .aux = has_aux[i] ? ab[i].buf : NULL,
                                 .col = (size_t)col};
    }
    if (M == 0) { ok = 1; goto done; }
    if (get_buf(xo, &x, (size_t)M * K * 4, 0, "activations")) goto done;
    if (get_buf(oo, &o, (size_t)M * (size_t)ldo * 4, 1, "output")) { PyBuffer_Release(&x); x.obj = NULL; goto done; }
    uint8_t *scratch = malloc(lb_act_bytes(M, K));
    if (!scratch) PyErr_NoMemory();
    else {
        Py_BEGIN_ALLOW_THREADS lb_linear_parts((int)np, parts, K, M, x.buf, o.buf, (size_t)ldo, scratch);
        Py_END_ALLOW_THREADS
        free(scratch);
        ok = 1;
    }
    PyBuffer_Release(&o);
    PyBuffer_Release(&x);
done:
    for (int i = 0; i < got; i++) {
        PyBuffer_Release(&wb[i]);
        if (has_aux[i]) PyBuffer_Release(&ab[i]);
    }
    Py_DECREF(seq);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

typedef struct { const uint8_t *p; size_t n, chunk; double sums[256]; } rd_job;
static void rd_task(void *ctx, int t, int thread) {
    rd_job *j = ctx;
    size_t off = (size_t)t * j->chunk, n = off + j->chunk > j->n ? j->n - off : j->chunk;
    j->sums[thread] += lb_read_sum(j->p + off, n);
}

/* read_sum(buf): parallel read of the whole buffer (the caller times it for bandwidth). */
static PyObject *py_read_sum(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *bo;
    if (!PyArg_ParseTuple(args, "O", &bo)) return NULL;
    Py_buffer b;
    if (get_buf(bo, &b, 0, 0, "buffer")) return NULL;
    rd_job *j = calloc(1, sizeof *j);
    j->p = b.buf; j->n = (size_t)b.len; j->chunk = 1 << 20;
    int nt = (int)((j->n + j->chunk - 1) / j->chunk);
    Py_BEGIN_ALLOW_THREADS lb_parallel_for(nt, rd_task, j);
    Py_END_ALLOW_THREADS
    double s = 0;
    for (int i = 0; i < 256; i++) s += j->sums[i];
    free(j);
    PyBuffer_Release(&b);
    return PyFloat_FromDouble(s);
}

static PyObject *py_add_chain(PyObject *self, PyObject *args) {
    (void)self;
    long long n;
    if (!PyArg_ParseTuple(args, "L", &n)) return NULL;
    long long r;
    Py_BEGIN_ALLOW_THREADS r = lb_add_chain(n);
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(r);
}

/* ---- Llama decode pieces (ops/llama_ops.c): few calls per layer keep the per-token Python cost low ---- */
static PyObject *py_add_rmsnorm(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *ao, *wo, *oo;
    float eps;
    if (!PyArg_ParseTuple(args, "OOOfO", &xo, &ao, &wo, &eps, &oo)) return NULL;
    Py_buffer x, a = {0}, w, o;
    if (get_buf(xo, &x, 4, 1, "x")) return NULL;
    size_t n = (size_t)x.len / 4;
    int has_a = ao != Py_None;
    PyObject *ret = NULL;
    if (has_a && get_buf(ao, &a, n * 4, 0, "residual")) goto e1;
    if (get_buf(wo, &w, n * 4, 0, "norm weight")) goto e2;
    if (get_buf(oo, &o, n * 4, 1, "out")) goto e3;
    lb_add_rmsnorm((int)n, x.buf, has_a ? a.buf : NULL, w.buf, eps, o.buf);
    ret = Py_None;
    Py_INCREF(ret);
    PyBuffer_Release(&o);
e3: PyBuffer_Release(&w);
e2: if (has_a) PyBuffer_Release(&a);
e1: PyBuffer_Release(&x);
    return ret;
}

/* silu_mul(gu, out, M=1, simd=True): out [M, n] = silu(gate) * up of gu [M, 2n] ([gate | up] per row). */
static PyObject *py_silu_mul(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *go, *oo;
    int M = 1, simd = 1;
    if (!PyArg_ParseTuple(args, "OO|ip", &go, &oo, &M, &simd)) return NULL;
    if (M < 1) return PyErr_Format(PyExc_ValueError, "silu_mul needs M >= 1 rows, got %d", M);
    Py_buffer g, o;
    if (get_buf(oo, &o, 4, 1, "out")) return NULL;
    const size_t n = (size_t)o.len / 4 / (size_t)M;
    if (n < 1 || n * M * 4 != (size_t)o.len || n > INT32_MAX) {
        PyBuffer_Release(&o);
        return PyErr_Format(PyExc_ValueError, "out has %zd bytes: not %d rows of float32", o.len, M);
    }
    if (get_buf(go, &g, 2 * n * M * 4, 0, "gate|up")) { PyBuffer_Release(&o); return NULL; }
    Py_BEGIN_ALLOW_THREADS
    lb_silu_mul_rows(M, (int)n, g.buf, o.buf, simd);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&g);
    PyBuffer_Release(&o);
    Py_RETURN_NONE;
}

/* attn_prefill(H, Hkv, hd, p0, M, n_ctx, qkv, rot, kc, vc, out, scale, simd): M rows' RoPE, KV write and causal
 * attention on the pool (ops.h lb_attn_prefill); qkv [M, (H+2Hkv)*hd], rot [>= p0+M, hd/2] (cos, sin) pairs,
 * caches [Hkv, n_ctx, hd], out [M, H*hd]. */
static PyObject *py_attn_prefill(PyObject *self, PyObject *args) {
    (void)self;
    int H, Hkv, hd, p0, M, n_ctx, simd;
    float scale;
    PyObject *qo, *ro, *ko, *vo, *oo;
    if (!PyArg_ParseTuple(args, "iiiiiiOOOOOfi", &H, &Hkv, &hd, &p0, &M, &n_ctx, &qo, &ro, &ko, &vo, &oo, &scale,
                          &simd)) return NULL;
    if (H <= 0 || Hkv <= 0 || H % Hkv || hd <= 0 || hd % 2 || n_ctx <= 0 || p0 < 0 || M < 1 || M > n_ctx - p0)
        return PyErr_Format(PyExc_ValueError, "bad attention shape H=%d Hkv=%d hd=%d p0=%d M=%d n_ctx=%d",
                            H, Hkv, hd, p0, M, n_ctx);
    const size_t ldq = (size_t)(H + 2 * Hkv) * hd, ldo = (size_t)H * hd, cache = (size_t)Hkv * n_ctx * hd * 4;
    Py_buffer q, r, k, v, o;
    PyObject *ret = NULL;
    if (get_buf(qo, &q, (size_t)M * ldq * 4, 1, "qkv")) return NULL;
    if (get_buf(ro, &r, (size_t)(p0 + M) * hd * 4, 0, "rope table")) goto e1;
    if (get_buf(ko, &k, cache, 1, "k cache")) goto e2;
    if (get_buf(vo, &v, cache, 1, "v cache")) goto e3;
    if (get_buf(oo, &o, (size_t)M * ldo * 4, 1, "out")) goto e4;
    float *scratch = malloc((size_t)lb_pool_threads() * lb_attn_scratch_floats(H / Hkv, n_ctx) * sizeof(float));
    if (!scratch) { PyErr_NoMemory(); goto e5; }
    Py_BEGIN_ALLOW_THREADS
    lb_attn_prefill(H, Hkv, hd, p0, M, n_ctx, q.buf, ldq, r.buf, k.buf, v.buf, o.buf, ldo, scale, scratch, simd);
    Py_END_ALLOW_THREADS
    free(scratch);
    ret = Py_None;
    Py_INCREF(ret);
e5: PyBuffer_Release(&o);
e4: PyBuffer_Release(&v);
e3: PyBuffer_Release(&k);
e2: PyBuffer_Release(&r);
e1: PyBuffer_Release(&q);
    return ret;
}

static PyObject *py_attn_prefill_simd(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    return PyBool_FromLong(lb_attn_prefill_simd());
}

static PyObject *py_attn_decode(PyObject *self, PyObject *args) {
    (void)self;
    int H, Hkv, hd, pos, n_ctx, simd = 1;
    PyObject *qo, *ro, *ko, *vo, *so, *oo;
    if (!PyArg_ParseTuple(args, "iiiiiOOOOOO|i", &H, &Hkv, &hd, &pos, &n_ctx, &qo, &ro, &ko, &vo, &so, &oo, &simd))
        return NULL;
    if (H <= 0 || Hkv <= 0 || H % Hkv || hd <= 0 || hd % 2 || n_ctx <= 0 || pos < 0 || pos >= n_ctx)
        return PyErr_Format(PyExc_ValueError, "bad attention shape H=%d Hkv=%d hd=%d pos=%d n_ctx=%d",
                            H, Hkv, hd, pos, n_ctx);
    size_t cache = (size_t)Hkv * n_ctx * hd * 4;
    Py_buffer q, r, k, v, s, o;
    PyObject *ret = NULL;
    if (get_buf(qo, &q, (size_t)(H + 2 * Hkv) * hd * 4, 1, "qkv")) return NULL;
    if (get_buf(ro, &r, (size_t)hd * 4, 0, "rope table row")) goto e1;
    if (get_buf(ko, &k, cache, 1, "k cache")) goto e2;
    if (get_buf(vo, &v, cache, 1, "v cache")) goto e3;
    if (get_buf(so, &s, lb_attn_scratch_floats(H / Hkv, n_ctx) * 4, 1, "scores")) goto e4;
    if (get_buf(oo, &o, (size_t)H * hd * 4, 1, "out")) goto e5;
    Py_BEGIN_ALLOW_THREADS
    lb_attn_decode(H, Hkv, hd, pos, n_ctx, q.buf, r.buf, k.buf, v.buf, s.buf, o.buf, simd);
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
    PyBuffer_Release(&o);
e5: PyBuffer_Release(&s);
e4: PyBuffer_Release(&v);
e3: PyBuffer_Release(&k);
e2: PyBuffer_Release(&r);
e1: PyBuffer_Release(&q);
    return ret;
}

/* ---- codebook group encoding (ops/cb_encode.c); quantize/encode.py validates too, these checks never crash ---- */
/* A C-contiguous buffer of exactly `n` items of the struct type `t` ('f' float32, 'B' uint8). */
static int get_typed(PyObject *o, Py_buffer *v, Py_ssize_t n, char t, int writable, const char *what) {
    if (PyObject_GetBuffer(o, v, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s array", what, writable ? " writable" : "");
        return -1;
    }
    const char *f = v->format ? v->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (f[0] != t || f[1] || v->itemsize != (t == 'f' ? 4 : 1)) {
        PyErr_Format(PyExc_ValueError, "%s must be %s, got buffer format '%s'", what, t == 'f' ? "float32" : "uint8",
                     v->format ? v->format : "B");
    } else if (n >= 0 && v->len / v->itemsize != n) {
        PyErr_Format(PyExc_ValueError, "%s has %zd items, expected %zd", what, v->len / v->itemsize, n);
    } else {
        return 0;
    }
    PyBuffer_Release(v);
    return -1;
}

/* cb_encode(x [n,32] f32, w [n,32] f32 | None, lut_val [C,256] f32, lut_idx [C,256] u8, ext [C] f32, refits,
 *           short, d [n] f32, ids [n] u8, idx [n,32] u8, err [n] f32) */
static PyObject *py_cb_encode(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[10];
    int refits, shortk;
    if (!PyArg_ParseTuple(args, "OOOOOiiOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &refits, &shortk, &o[5], &o[6],
                          &o[7], &o[8])) return NULL;
    Py_buffer b[9];
    int nb = 0, has_w = o[1] != Py_None;
    PyObject *ret = NULL;
    if (get_typed(o[0], &b[0], -1, 'f', 0, "groups x")) return NULL;
    nb = 1;
    Py_ssize_t nx = b[0].len / 4, n = nx / 32;
    if (nx % 32) { PyErr_Format(PyExc_ValueError, "groups x has %zd floats, not a multiple of 32", nx); goto out; }
    if (get_typed(o[4], &b[1], -1, 'f', 0, "extreme entries ext")) goto out;
    nb = 2;
    Py_ssize_t C = b[1].len / 4;
    if (C < 1 || C > 16) { PyErr_Format(PyExc_ValueError, "need 1..16 codebooks, got %zd", C); goto out; }
    if (refits < 0 || refits > 1000 || shortk < 0) {
        PyErr_Format(PyExc_ValueError, "bad refits=%d / short=%d", refits, shortk);
        goto out;
    }
    static const char *names[7] = {"importance w", "lut_val", "lut_idx", "d out", "ids out", "idx out", "err out"};
    const char types[7] = {'f', 'f', 'B', 'f', 'B', 'B', 'f'};
    const Py_ssize_t sizes[7] = {nx, C * 256, C * 256, n, n, nx, n};
    PyObject *objs[7] = {o[1], o[2], o[3], o[5], o[6], o[7], o[8]};
    for (int i = 0; i < 7; i++) {
        if (i == 0 && !has_w) { b[nb++].obj = NULL; continue; }
        if (get_typed(objs[i], &b[nb], sizes[i], types[i], i >= 3, names[i])) goto out;
        nb++;
    }
    Py_BEGIN_ALLOW_THREADS
    lb_cb_encode(n, b[0].buf, has_w ? b[2].buf : NULL, (int)C, b[3].buf, b[4].buf, b[1].buf, refits, shortk,
                 b[5].buf, b[6].buf, b[7].buf, b[8].buf);
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
out:
    for (int i = 0; i < nb; i++)
        if (b[i].obj) PyBuffer_Release(&b[i]);
    return ret;
}

static PyMethodDef methods[] = {
    {"kernels", py_kernels, METH_NOARGS, "The kernel list (kernels.inc) with usability on this CPU."},
    {"features", py_features, METH_NOARGS, "CPU features found and usable (after LOWBIT_DISABLE_ISA)."},
    {"selected", py_selected, METH_VARARGS, "Index of the kernel chosen for a format, or None."},
    {"set_num_threads", py_set_num_threads, METH_VARARGS, "Resize the thread pool."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "Threads in the pool, the caller included."},
    {"act_bytes", py_act_bytes, METH_VARARGS, "Scratch bytes for M x K packed activations."},
    {"pack_activations", py_pack_activations, METH_VARARGS, "Quantize + pack activations (tests)."},
    {"gemv", py_gemv, METH_VARARGS, "One GEMV micro-kernel call (tests)."},
    {"gemm", py_gemm, METH_VARARGS, "One GEMM micro-kernel call (tests)."},
    {"gemm_multi", py_gemm_multi, METH_VARARGS, "One multi-token-group GEMM call (tests)."},
    {"set_gemm_multi", py_set_gemm_multi, METH_VARARGS, "Use kernels' multi-group GEMM in linear (default on)."},
    {"linear", py_linear, METH_VARARGS, "Threaded out = x @ W^T."},
    {"linear_parts", py_linear_parts, METH_VARARGS, "Threaded out[:, col_i:] = x @ W_i^T for fused parts."},
    {"read_sum", py_read_sum, METH_VARARGS, "Parallel read of a buffer (bandwidth probe)."},
    {"add_chain", py_add_chain, METH_VARARGS, "Dependent add chain (clock probe)."},
    {"add_rmsnorm", py_add_rmsnorm, METH_VARARGS, "x += residual (unless None); out = rmsnorm(x) * w."},
    {"silu_mul", py_silu_mul, METH_VARARGS, "out = silu(gu[:n]) * gu[n:], n = len(out)."},
    {"attn_decode", py_attn_decode, METH_VARARGS, "One token's RoPE, KV-cache write and GQA attention."},
    {"attn_prefill", py_attn_prefill, METH_VARARGS, "M rows' RoPE, KV-cache write and causal GQA attention."},
    {"attn_prefill_simd", py_attn_prefill_simd, METH_NOARGS, "Whether prefill attention has a SIMD kernel here."},
    {"cb_encode", py_cb_encode, METH_VARARGS, "Encode groups of 32 against int8 codebooks (quantize)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_core", "lowbit C core", -1, methods};

PyMODINIT_FUNC PyInit__core(void) { return PyModule_Create(&mod); }
