"""Write small random Llama GGUFs for tests (any tensor types, optional tokenizer, any architecture name)."""
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize as gg_quantize

from lowbit.formats import get_format

DIMS = dict(n_embd=256, n_head=4, n_head_kv=2, n_ff=512, n_layer=2, vocab=64, ctx=128)


def _kquant_bytes(rng, t: T, N: int, K: int) -> np.ndarray:
    """Random but valid K-quant blocks: random codes/scales, sane fp16 super-block scales."""
    bs, ts = gguf.GGML_QUANT_SIZES[t]
    b = rng.integers(0, 256, size=(N, K // bs, ts), dtype=np.uint8)
    d = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
    if t == T.Q4_K:                      # d, dmin first
        b[..., 0:2] = d
        b[..., 2:4] = d
    elif t == T.Q6_K:                    # d last
        b[..., ts - 2: ts] = d
    return b.reshape(N, -1)


def encode(rng, w: np.ndarray, t: T):
    """float [N, K] -> (data for GGUFWriter.add_tensor, raw_dtype)."""
    N, K = w.shape
    if t == T.F32:
        return w.astype(np.float32), None
    if t == T.F16:
        return w.astype(np.float16), None
    if t in (T.Q4_0, T.Q8_0, T.IQ4_NL):
        return get_format(t.name.lower()).quantize(w.reshape(-1, 32)).reshape(N, -1), t
    if t in (T.Q4_K, T.Q6_K):
        return _kquant_bytes(rng, t, N, K), t
    return gg_quantize(w, t), t           # BF16, Q4_1, Q5_0, ...


def write(path, types=None, arch="llama", tokenizer=True, tied=True, seed=0, extra_tensor=None, rope_scaling=None,
          **dims):
    """types: {suffix of a tensor name (e.g. 'attn_q.weight') or 'default': GGMLQuantizationType};
    rope_scaling: (type string or None, factor) written as {arch}.rope.scaling.*."""
    d = dict(DIMS, **dims)
    rng = np.random.default_rng(seed)
    types = types or {}
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(d["n_layer"])
    w.add_context_length(d["ctx"])
    w.add_embedding_length(d["n_embd"])
    w.add_feed_forward_length(d["n_ff"])
    w.add_head_count(d["n_head"])
    w.add_head_count_kv(d["n_head_kv"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    if rope_scaling is not None:
        if rope_scaling[0] is not None:
            w.add_string(f"{arch}.rope.scaling.type", rope_scaling[0])
        w.add_float32(f"{arch}.rope.scaling.factor", rope_scaling[1])
    if tokenizer:
        toks = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(d["vocab"] - 3)]
        w.add_tokenizer_model("llama")
        w.add_token_list(toks)
        w.add_token_scores([0.0] * len(toks))
        w.add_token_types([2, 3, 3] + [6] * (len(toks) - 3))
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
    E, F, hd = d["n_embd"], d["n_ff"], d.get("key_length") or d["n_embd"] // d["n_head"]
    if d.get("key_length"):
        w.add_key_length(hd)
        w.add_value_length(d.get("value_length", hd))

    def add(name, shape, scale=0.05):
        suffix = name.split(".", 2)[-1] if name.startswith("blk.") else name
        t = types.get(suffix, types.get("default", T.F32)) if len(shape) == 2 else T.F32
        if len(shape) == 1:
            arr = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            w.add_tensor(name, arr)
            return
        data, raw = encode(rng, (scale * rng.standard_normal(shape)).astype(np.float32), t)
        w.add_tensor(name, data, raw_dtype=raw) if raw is not None else w.add_tensor(name, data)

    add("token_embd.weight", (d["vocab"], E), 1.0)
    for i in range(d["n_layer"]):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", (E,))
        add(p + "attn_q.weight", (d["n_head"] * hd, E))
        add(p + "attn_k.weight", (d["n_head_kv"] * hd, E))
        add(p + "attn_v.weight", (d["n_head_kv"] * hd, E))
        add(p + "attn_output.weight", (E, d["n_head"] * hd))
        add(p + "ffn_norm.weight", (E,))
        add(p + "ffn_gate.weight", (F, E))
        add(p + "ffn_up.weight", (F, E))
        add(p + "ffn_down.weight", (E, F))
    add("output_norm.weight", (E,))
    if not tied:
        add("output.weight", (d["vocab"], E))
    if extra_tensor is not None:
        w.add_tensor(*extra_tensor)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
