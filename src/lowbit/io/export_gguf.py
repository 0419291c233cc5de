"""Write a model lowbit can load (GGUF, .lowbit, codebook GGUF) as a plain GGUF llama.cpp loads: Q4_0, IQ4_NL,
Q8_0 or F16 weight matrices, F32 norms, the tokenizer's GGUF keys. Tensors already in the target type are
copied as they are; others are dequantized and re-quantized with lowbit's reference quantizers (the same
bits as ggml's). Packed .lowbit weights are de-interleaved back to ggml's block order."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import ModelFileError
from .atomic import atomic_path

TYPES = ("q4_0", "iq4_nl", "q8_0", "f16", "f32")


def _source_tensors(src):
    """(name, type name, [N, K] or [K] shape, raw) for every tensor, in GGUF naming and rope order."""
    from ..formats.repack import deinterleave
    if hasattr(src, "prepacked_linear"):          # native: linears are fused and packed
        for name in src._t:
            if name.startswith(("packed:", "tables:", "tokenizer:")):
                continue
            tname, shape = src.info(name)
            yield name, tname, shape, src.raw(name)
        for key, e in src._lin.items():
            if key == "token_embd.weight":             # tied output: the embedding already went out
                continue
            data, K = src.raw(e["data"]), e["K"]
            if e["kind"] == "float":
                w = data.view(np.float16 if src._t[e["data"]][2] == "f16" else np.float32).reshape(e["N"], K)
                tname, rows_of = ("F16" if w.dtype == np.float16 else "F32"), w
            else:
                fmt = e["format"]
                rows_of = deinterleave(data, fmt, e["N"], K, e["R"], e["B"]).reshape(e["N"], -1)
                tname = fmt.upper()
                if fmt in ("cb4", "cb2"):
                    from ..formats.cb import dequantize_blocks
                    tables = src.raw(e["aux"]).view(np.int8).reshape(-1, 16)
                    rows_of = dequantize_blocks(rows_of, tables, fmt).reshape(e["N"], K)
                    tname = "F32"
            r0 = 0
            for n, rows in e["parts"]:
                yield n, tname, (rows, K), rows_of[r0:r0 + rows]
                r0 += rows
        return
    for name in src.names():
        tname, shape = src.info(name)
        if tname in ("CB4", "CB2"):
            from ..formats.cb import dequantize_blocks
            yield name, "F32", shape, dequantize_blocks(src.raw(name), src.tables(name), tname.lower()).reshape(shape)
        else:
            yield name, tname, shape, src.raw(name)


def _encode(name, tname, shape, raw, target):
    """-> (array for GGUFWriter.add_tensor, raw ggml type or None, what happened)."""
    from gguf import GGMLQuantizationType as T

    from ..formats import get_format
    from .source import dequantize
    if len(shape) == 1 or shape[-1] % 32 or (target != "f16" and name.endswith("norm.weight")):
        w = raw if tname == "F32" and raw.dtype == np.float32 else dequantize(raw, tname, shape)
        return np.ascontiguousarray(w, np.float32).reshape(shape), None, "f32"
    N, K = shape
    if tname == target.upper():
        return np.ascontiguousarray(np.asarray(raw).view(np.uint8)).reshape(N, -1), T[tname], "copied"
    w = raw if tname == "F32" and raw.dtype == np.float32 else dequantize(raw, tname, shape)
    w = np.ascontiguousarray(w, np.float32).reshape(N, K)
    if target in ("f16", "f32"):     # f32: e.g. a dequantized model as input for llama.cpp's quantizer
        return w.astype(np.float16 if target == "f16" else np.float32), None, f"{tname} -> {target}"
    blocks = get_format(target).quantize(w.reshape(-1, 32)).reshape(N, -1)
    return blocks, T[target.upper()], f"{tname} -> {target}"


def export_gguf(model, out, type_="q4_0", force=False, log=print) -> dict:
    import gguf

    from ..api import _open_source
    from ..registry import resolve
    from .native import tokenizer_record
    if type_ not in TYPES:
        raise ValueError(f"unknown GGUF type {type_!r}; choose one of {', '.join(TYPES)}")
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    p = resolve(model)
    tok = tokenizer_record(p)
    if tok.get("kind") != "gguf_meta":
        raise ModelFileError(f"{p}: the tokenizer is a Hugging Face tokenizer.json; export from a GGUF (or a "
                             f".lowbit made from one), which carries llama.cpp's vocabulary keys")
    src = _open_source(p)
    c = src.config
    try:
        with atomic_path(out, force) as tmp:
            w = gguf.GGUFWriter(tmp, "llama")
            w.add_name(c.name or p.stem)
            w.add_block_count(c.n_layer)
            w.add_context_length(c.n_ctx_train)
            w.add_embedding_length(c.n_embd)
            w.add_feed_forward_length(c.n_ff)
            w.add_head_count(c.n_head)
            w.add_head_count_kv(c.n_head_kv)
            w.add_rope_dimension_count(c.head_dim)
            if c.key_length:
                w.add_key_length(c.key_length)
                w.add_value_length(c.key_length)
            w.add_layer_norm_rms_eps(c.rms_eps)
            w.add_rope_freq_base(c.rope_base)
            if c.rope_scale != 1.0:
                w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
                w.add_rope_scaling_factor(c.rope_scale)
            w.add_vocab_size(c.vocab_size)
            w.add_file_type({"q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "iq4_nl": gguf.LlamaFileType.MOSTLY_IQ4_NL,
                             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16,
                             "f32": gguf.LlamaFileType.ALL_F32}[type_])
            _add_tokenizer(w, tok["meta"])
            counts = {}
            if c.rope_freq_factors is not None:     # sources keep them in the config, llama.cpp in this tensor
                w.add_tensor("rope_freqs.weight", np.asarray(c.rope_freq_factors, np.float32))
                counts["f32"] = 1
            for name, tname, shape, raw in _source_tensors(src):
                if name == "output.weight" and c.tied_embeddings:
                    continue
                arr, raw_type, what = _encode(name, tname, shape, raw, type_)
                counts[what] = counts.get(what, 0) + 1
                if raw_type is None:
                    w.add_tensor(name, arr)
                else:
                    w.add_tensor(name, arr, raw_dtype=raw_type)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
    finally:
        src.close()
    return {"path": str(out), "bytes": out.stat().st_size, "tensors": counts}


def _add_tokenizer(w, meta):
    """tokenizer.* keys with the value types llama.cpp expects."""
    from gguf import GGUFValueType as V
    types = {"tokenizer.ggml.scores": V.FLOAT32, "tokenizer.ggml.token_type": V.INT32}
    for k, v in meta.items():
        if k == "tokenizer.ggml.model":
            w.add_tokenizer_model(v)
        elif k == "tokenizer.ggml.tokens":
            w.add_token_list(v)
        elif k == "tokenizer.ggml.merges":
            w.add_token_merges(v)
        elif k in types:
            w.add_array(k, v) if types[k] is None else w.add_key_value(k, list(v), V.ARRAY, types[k])
        elif k == "tokenizer.chat_template":
            w.add_chat_template(v)
        elif isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            w.add_array(k, v)
