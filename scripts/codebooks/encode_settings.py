"""docs/codebooks.md "Learning": weight / output error of encode settings (final-pass shortlist, learning rounds,
learning-pass shortlist) with lowbit.quantize.quality's measure, on chosen layers of a model.
usage: python scripts/codebooks/encode_settings.py MODEL.gguf FMT:C LEARN_SHORT:SHORTLIST:ROUNDS[,...] [LAYERS]
  e.g. python scripts/codebooks/encode_settings.py SMOL.gguf cb4:16 0:2:4,4:2:16 0,12,29"""
import sys

from lowbit.quantize import learn
from lowbit.quantize.quality import evaluate, load_tensors

model, fc, cfgs = sys.argv[1:4]
layers = {int(v) for v in (sys.argv[4] if len(sys.argv) > 4 else "0,12,29").split(",")}
fmt, C = fc.split(":")
tensors = load_tensors(model, layers)
print(f"{model}: {len(tensors)} matrices (layers {sorted(layers)}), {sum(w.size for _, w in tensors) / 1e6:.2f} M weights")
print("| format | C | learning-pass shortlist | final shortlist | rounds | weight rel MSE | output rel err | s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for cfg in cfgs.split(","):
    ls, sl, rd = (int(v) for v in cfg.split(":"))
    learn.LEARN_SHORT = ls
    r = evaluate(tensors, fmt, int(C), shortlist=sl, rounds=rd)
    print(f"| {fmt} | {C} | {ls or 'all'} | {sl or 'all'} | {rd} | {r['wmse']:.5f} | {r['oerr']:.5f} | {r['seconds']:.1f} |",
          flush=True)
