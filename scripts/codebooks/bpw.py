"""Exact bits per weight of a GGUF's quantized blk.* matrices (what the quality table's bpw column counts):
storage bytes of every 2-D blk.* tensor whose K is a multiple of 32 (the ones `lowbit quantize` quantizes;
+ its .cb_tables for cb4/cb2) * 8 / its weights, and the per-type tensor counts (llama.cpp's k-quant mixtures
mix Q4_K/Q6_K/Q5_0/... per tensor). Matrices with other K (stories260K's ffn_down, K=172) are listed apart.
  python scripts/codebooks/bpw.py FILE.gguf [--json]"""
import json
import sys
from collections import Counter

import gguf


def blk_bpw(path):
    r = gguf.GGUFReader(path)
    t_by = {t.name: t for t in r.tensors}
    cb = {f.name.split(".", 2)[2].rsplit(".", 1)[0]: str(f.contents()) for f in r.fields.values()
          if f.name.startswith("lowbit.cb.blk.") and f.name.endswith(".format")}
    bits = weights = 0
    types, other = Counter(), Counter()
    for t in r.tensors:
        if not t.name.startswith("blk.") or t.name.endswith(".cb_tables") or len(t.shape) != 2:
            continue
        if t.name not in cb and int(t.shape[0]) % 32:     # shape[0] is K (GGUF dims fastest-first)
            other[t.tensor_type.name] += 1
            continue
        if t.name in cb:                      # I8 [N, K/32 * block bytes]; K from the block count
            fmt = cb[t.name]
            N, row_bytes = int(t.shape[1]), int(t.shape[0])
            n_w = N * row_bytes // (18 if fmt == "cb4" else 10) * 32 if _v2(r) else N * row_bytes // (19 if fmt == "cb4" else 11) * 32
            nbytes = int(t.n_bytes) + int(t_by[t.name + ".cb_tables"].n_bytes)
            types[fmt.upper()] += 1
        else:
            n_w, nbytes = int(t.n_elements), int(t.n_bytes)
            types[t.tensor_type.name] += 1
        bits += nbytes * 8
        weights += n_w
    v = r.fields.get("lowbit.cb.version")
    return {"bpw": bits / weights, "cb_version": int(v.contents()) if v is not None else None, "weights": weights, "types": dict(sorted(types.items())),
            "other": dict(sorted(other.items()))}


def _v2(r):
    f = r.fields.get("lowbit.cb.version")
    return f is not None and int(f.contents()) >= 2


if __name__ == "__main__":
    res = blk_bpw(sys.argv[1])
    print(json.dumps(res) if "--json" in sys.argv else
          f"{res['bpw']:.4f} bpw over {res['weights']} weights; " + ", ".join(f"{n} {k}" for k, n in res["types"].items())
          + (f"; not counted (K % 32 != 0): " + ", ".join(f"{n} {k}" for k, n in res["other"].items()) if res["other"] else ""))
