"""Fuzz targets, one per loader: bytes in, and the loader either succeeds or raises ModelFileError (a
ValueError naming the problem). Anything else (IndexError, struct.error, MemoryError, a crash, a hang) is a
finding. Used by fuzz/run_atheris.py (coverage-guided, local) and tests/test_fuzz_smoke.py (short, in CI).

Each target writes the input to a file under a RAM directory because the loaders map files."""
from __future__ import annotations

import atexit
import copy
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from lowbit.io import ModelFileError

HERE = Path(__file__).resolve().parent
_DIR = Path(tempfile.mkdtemp(prefix="lowbit-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
atexit.register(shutil.rmtree, _DIR, True)
ST_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
             "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1,
             "intermediate_size": 96, "vocab_size": 32, "rms_norm_eps": 1e-5, "max_position_embeddings": 64}


def _write(name: str, data: bytes) -> Path:
    p = _DIR / name
    with open(p, "wb") as f:
        f.write(data)
    return p


def _touch_source(src):
    """What a model build does with a source, minus the slow parts: every tensor's info and bytes."""
    for n in src.names():
        tname, shape = src.info(n)
        raw = src.raw(n) if not hasattr(src, "prepacked_linear") or n in src._t else None
        if raw is not None:
            np.asarray(raw).reshape(-1)[:64].sum()


def gguf_target(data: bytes) -> None:
    from lowbit.io.gguf import GGUFSource
    p = _write("f.gguf", data)
    try:
        src = GGUFSource(p)
        src.config.validate(str(p))
        _touch_source(src)
    except ModelFileError:
        return


def safetensors_target(data: bytes) -> None:
    from lowbit.io.safetensors import SafetensorsSource
    d = _DIR / "st"
    if not d.is_dir():
        d.mkdir()
        (d / "config.json").write_text(json.dumps(ST_CONFIG))
    _write("st/model.safetensors", data)
    try:
        src = SafetensorsSource(d)
        _touch_source(src)
    except ModelFileError:
        return


def native_target(data: bytes) -> None:
    from lowbit.io.native import NativeSource
    from lowbit.model.llama import LlamaModel
    p = _write("f.lowbit", data)
    try:
        src = NativeSource(p)
        _touch_source(src)
        LlamaModel(src, src.format, n_ctx=8)       # every stored weight through prepacked_linear + shape checks
        src.tokenizer()
    except ModelFileError:
        return


TARGETS = {"gguf": gguf_target, "safetensors": safetensors_target, "native": native_target}


def seeds(kind: str) -> list:
    """Small valid files of each kind (built on the fly; the corpus dirs get the fuzzers' finds)."""
    out = []
    sys.path.insert(0, str(HERE.parent / "tests"))
    import tiny_llama
    from gguf import GGMLQuantizationType as T
    tiny = dict(n_embd=64, n_head=4, n_head_kv=2, n_ff=96, n_layer=1, vocab=32, ctx=64)
    if kind in ("gguf", "gguf_header", "gguf_model", "native"):
        for t in (T.Q4_0, T.Q8_0, T.F16):
            p = tiny_llama.write(_DIR / f"seed_{t.name}.gguf", types={"default": t}, **tiny)
            if kind in ("gguf", "gguf_header", "gguf_model"):
                out.append(p.read_bytes())
            else:
                import lowbit
                from lowbit.io.native import write_native
                q = _DIR / f"seed_{t.name}.lowbit"
                write_native(lowbit.load(p, format="q8_0" if t == T.Q8_0 else "q4_0"), q, force=True)
                out.append(q.read_bytes())
    if kind == "safetensors":
        from safetensors.numpy import save
        rng = np.random.default_rng(0)
        E, F = 64, 96
        t = {"model.embed_tokens.weight": (32, E), "model.norm.weight": (E,),
             "model.layers.0.input_layernorm.weight": (E,), "model.layers.0.post_attention_layernorm.weight": (E,),
             "model.layers.0.self_attn.q_proj.weight": (E, E), "model.layers.0.self_attn.k_proj.weight": (32, E),
             "model.layers.0.self_attn.v_proj.weight": (32, E), "model.layers.0.self_attn.o_proj.weight": (E, E),
             "model.layers.0.mlp.gate_proj.weight": (F, E), "model.layers.0.mlp.up_proj.weight": (F, E),
             "model.layers.0.mlp.down_proj.weight": (E, F)}
        out.append(save({k: rng.standard_normal(s).astype(np.float16) for k, s in t.items()}))
        out.append(save({"model.norm.weight": np.ones(4, np.float32), "x": np.zeros((2, 3), np.float32)}))
    return out


def _paths(obj, prefix=()):
    """Every (path, value) leaf and container in a JSON tree."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


_HOSTILE = [0, -1, 1, 2, 3, 7, 8, 31, 32, 33, 63, 64, 65, 255, 256, 1 << 31, (1 << 31) - 1, 1 << 32, 1 << 40,
            1 << 62, (1 << 64) - 1, 1 << 70, 0.5, -1e300, 1e300, float("nan"), "", "x", "q4_0", "cb4", "cb2", "u8",
            "f32", "i8", "q4_0_4x4__scalar", "q4_0_8x8__avx2", None, True, False, [], {}, [1], [0, 0], [1 << 40]]
_NATIVE_BASE = {}


def native_header_target(data: bytes) -> None:
    """Structure-aware: rewrite up to 4 values of a valid native file's JSON header (chosen by the input bytes)
    with hostile numbers/strings/types, keep the tensor data, and load the result."""
    from lowbit.io import native
    if not _NATIVE_BASE:
        s = seeds("native")[0]
        h, doff, dsize = native.read_header(s, len(s))
        _NATIVE_BASE.update(h=h, tail=s[doff:doff + dsize])
    h = json.loads(json.dumps(_NATIVE_BASE["h"]))
    for i in range(0, min(len(data), 12), 3):
        leaves = list(_paths(h))
        path, _ = leaves[(data[i] | data[i + 1] << 8 if i + 1 < len(data) else data[i]) % len(leaves)]
        if not path:
            continue
        val = copy.deepcopy(_HOSTILE[data[i + 2] % len(_HOSTILE)]) if i + 2 < len(data) else None
        parent = h
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = val
    hj = json.dumps(h).encode()
    doff = -(-(native._PRE.size + len(hj)) // 64) * 64
    tail = _NATIVE_BASE["tail"]
    blob = native._PRE.pack(native.MAGIC, 1, 0, len(hj), doff, len(tail)) + hj + b"\0" * (doff - 40 - len(hj)) + tail
    native_target(blob)


TARGETS["native_header"] = native_header_target


def gguf_header_target(data: bytes) -> None:
    """The GGUF header walk alone, in memory (no file): the fast path for many inputs."""
    from lowbit.io.gguf_check import check_gguf
    try:
        check_gguf(data, len(data))
    except ModelFileError:
        return


TARGETS["gguf_header"] = gguf_header_target


def gguf_model_target(data: bytes) -> None:
    """The whole lowbit.load on a GGUF: tokenizer, config, every weight packed, shapes checked."""
    import lowbit
    p = _write("m.gguf", data)
    try:
        lowbit.load(p, n_ctx=8)
    except ModelFileError:
        return


TARGETS["gguf_model"] = gguf_model_target
