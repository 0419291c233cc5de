"""`python -m lowbit.quantize.quality MODEL.gguf`: weight-space and output-space error of q4_0, iq4_nl, q8_0 and
cb4/cb2 at several codebook counts on a model's own block matrices, with exact bits per weight. The reference
is the file's tensors dequantized to float32 (for a Q4_1 file these are re-quantization errors).
  weight rel MSE  = Σ (w - ŵ)² / Σ w²                        over all selected tensors
  output rel err  = Σ |y - y_ref|² / Σ |y_ref|²,  y = lowbit.linear(x, packed ŵ) (Q8_0 activations, the real
                    kernels), y_ref = x @ wᵀ in float64, x ~ N(0, 1) [16, K] per tensor
Prints a markdown table (docs/codebooks.md)."""
import argparse
import time

import numpy as np

import lowbit
from lowbit.formats import get_format

CONFIGS = [("q8_0", 0), ("q4_0", 0), ("iq4_nl", 0), ("cb4", 1), ("cb4", 4), ("cb4", 8), ("cb4", 16),
           ("cb2", 1), ("cb2", 4), ("cb2", 16)]


def load_tensors(path, layers):
    from lowbit.io.gguf import open_reader
    from lowbit.io.source import dequantize
    r = open_reader(path)
    out = []
    for t in r.tensors:
        shape = [int(s) for s in reversed(t.shape)]
        if len(shape) != 2 or shape[1] % 32 or not t.name.startswith("blk."):
            continue
        if layers is not None and int(t.name.split(".")[1]) not in layers:
            continue
        out.append((t.name, dequantize(np.asarray(t.data), t.tensor_type.name, shape).astype(np.float32)))
    return out


def evaluate(tensors, fmt, C, rng_seed=0, **kw):
    from lowbit.quantize import quantize_tensor
    num = den = onum = oden = 0.0
    bits = n = 0
    t0 = time.perf_counter()
    rng = np.random.default_rng(rng_seed)
    for name, w in tensors:
        N, K = w.shape
        if fmt in ("cb4", "cb2"):
            ct = quantize_tensor(w, fmt, C, **kw)
            wq, pw = ct.dequantize(), ct.pack()
            bits += (ct.blocks.nbytes + ct.tables.nbytes) * 8
        else:
            f = get_format(fmt)
            blocks = f.quantize(w.reshape(-1, 32))
            wq = f.dequantize(blocks).reshape(N, K)
            pw = lowbit.PackedWeight.from_blocks(blocks.reshape(N, -1), fmt, N, K)
            bits += blocks.nbytes * 8
        n += w.size
        num += float(((wq.astype(np.float64) - w) ** 2).sum())
        den += float((w.astype(np.float64) ** 2).sum())
        x = rng.standard_normal((16, K)).astype(np.float32)
        y = lowbit.linear(x, pw).astype(np.float64)
        yr = x.astype(np.float64) @ w.T.astype(np.float64)
        onum += float(((y - yr) ** 2).sum())
        oden += float((yr ** 2).sum())
    return {"bpw": bits / n, "wmse": num / den, "oerr": onum / oden, "seconds": time.perf_counter() - t0}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--layers", help="comma-separated layer indices (default: all)")
    p.add_argument("--configs", help="e.g. q4_0,cb4:4,cb2:16 (default: all)")
    p.add_argument("--restarts", type=int, default=None, help="cb k-means seedings per tensor (default: learn.RESTARTS)")
    args = p.parse_args(argv)
    layers = None if not args.layers else {int(s) for s in args.layers.split(",")}
    configs = CONFIGS
    if args.configs:
        configs = [(c.split(":")[0], int(c.split(":")[1]) if ":" in c else 0) for c in args.configs.split(",")]
    tensors = load_tensors(args.model, layers)
    nw = sum(w.size for _, w in tensors)
    print(f"{args.model}: {len(tensors)} matrices, {nw / 1e6:.2f} M weights"
          + (f" (layers {sorted(layers)})" if layers else ""))
    print("| format | C | bits/weight | weight rel MSE | output rel err | quantize s |")
    print("|---|---:|---:|---:|---:|---:|")
    for fmt, C in configs:
        r = evaluate(tensors, fmt, C, **({"restarts": args.restarts} if C else {}))
        print(f"| {fmt} | {C or '-'} | {r['bpw']:.4f} | {r['wmse']:.5f} | {r['oerr']:.5f} | {r['seconds']:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
