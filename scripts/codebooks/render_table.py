"""Markdown quality table from the JSON that scripts/codebooks/quality_table.sh appends to (one row per run; a
label run twice keeps its last run). python scripts/codebooks/render_table.py D/stories_0.json [MORE.json ...]"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bpw import blk_bpw  # noqa: E402

NAMES = {"f32": "F32 (reference)", "Q4_K_M": "llama.cpp Q4_K_M", "Q2_K": "llama.cpp Q2_K",
         "mix:gu": "cb2 + cb4 (cb2 on ffn_gate/up)", "mix:up": "cb2 + cb4 (cb2 on ffn_up)",
         "mix:qkv": "cb2 + cb4 (cb2 on attn_q/k/v)",
         "mix:qkv4": "cb2 C=4 + cb4 (cb2 on attn_q/k/v)"}


def row(r):
    label = r["model"]
    cal = label.endswith(":calib")          # importance-weighted (calibration text) variant of a row
    base = label[: -len(":calib")] if cal else label
    narrow = base.endswith(":narrow")       # `lowbit quantize --narrow-tables` variant
    base = base[: -len(":narrow")] if narrow else base
    fmt, _, C = base.partition(":")
    name = NAMES.get(base, fmt) + (" + importance (botchan.txt)" if cal else "") + (", narrow tables" if narrow else "")
    b = r.get("bpw") or blk_bpw(r["path"])
    types = ", ".join(f"{n} {t}" for t, n in b["types"].items())
    k = r.get("kld")
    kld = f"{k['kld_mean']:.4f} ± {k['kld_stderr']:.4f}" if k else "0"
    top = f"{100 * k['same_top']:.1f}%" if k else "100%"
    # mix: cb4 C / cb2 C (quality_table.sh records cb2_C; runs before it had cb2 C=4, the default then)
    C = C if fmt in ("cb4", "cb2") else (f"16 / {r.get('cb2_C', 4)}" if fmt == "mix" else "-")
    return (f"| {name} | {C} | {types} | {b['bpw']:.3f} | {r['ppl']:.2f} ± {r['ppl_err']:.2f} | {kld} | {top} "
            f"| {r['n_chunks']} | {r.get('perplexity_s', '')} |")


def main(paths):
    runs = {}
    for p in paths:
        for r in json.load(open(p))["perplexity"]:
            runs[(r["model"], r["n_chunks"])] = r        # the last run of a label and chunk count wins
    if not any(k[0] == "f32" for k in runs):          # the reference PPL printed by the first KLD row
        r = next((r for r in runs.values() if r.get("ref_ppl")), None)
        if r:
            runs = {("f32", r["n_chunks"]): dict(model="f32", path=r["path"], ppl=r["ref_ppl"][0],
                                                 ppl_err=r["ref_ppl"][1], n_chunks=r["n_chunks"], kld=None,
                                                 bpw={"bpw": 32.0, "types": {"F32": "all"}}), **runs}
    order = ["f32", "q8_0", "q4_0", "iq4_nl", "Q4_K_M", "Q2_K"]

    def rank(k):   # reference, baselines, then cb4 by C, cb2 by C, mixtures; calibrated variants after their row
        label = k[0]
        base, cal = (label[:-6], 1) if label.endswith(":calib") else (label, 0)
        fmt, _, C = base.partition(":")
        if base in order:
            return (order.index(base), 0, cal, k[1])
        group = {"cb4": 1, "cb2": 2}.get(fmt, 3)
        return (len(order) + group, int(C) if C.isdigit() else 0, cal, k[1])
    runs = dict(sorted(runs.items(), key=lambda kv: rank(kv[0])))
    print("| format | C | blk matrix types | bpw | PPL | mean KLD | same top-1 | chunks | s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in runs.values():
        print(row(r))


if __name__ == "__main__":
    main(sys.argv[1:])
