"""`lowbit convert MODEL -o OUT.lowbit [--format F] [--force]`: write a native file, pre-packed for the kernels
this CPU selects (io/native.py, docs/native-format.md). cb4/cb2 need a codebook GGUF from `lowbit quantize`."""
import time
from pathlib import Path

FORMATS = ("q4_0", "iq4_nl", "cb4", "cb2", "q8_0")


def add_arguments(p):
    p.add_argument("model", nargs="?", default=None,
                   help="GGUF, HF safetensors directory, known name, or .lowbit (default: the embedded model)")
    p.add_argument("-o", "--output", required=True, help="output .lowbit path")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="weight format (default q4_0; cb4/cb2: the format of a `lowbit quantize` codebook GGUF)")
    p.add_argument("--pure", action="store_true", help="no 8-bit ffn_down/output when re-quantizing to 4 bits")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def main(args):
    import lowbit
    from ..io.native import write_native
    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    fmt = args.format or "q4_0"
    t = time.perf_counter()
    llm = lowbit.load(args.model, format=None if fmt in ("cb4", "cb2") else fmt, pure=args.pure)
    if fmt in ("cb4", "cb2"):
        got = {getattr(getattr(L, a), "pw", None) and getattr(L, a).pw.fmt
               for L in llm.model.layers for a in ("wqkv", "wo", "wgu", "wdown")}
        if fmt not in got:
            raise ValueError(f"{args.model or 'the embedded model'} has no {fmt} weights: make a codebook GGUF "
                             f"first with `lowbit quantize MODEL --format {fmt} -o X.gguf`, then convert X.gguf")
        llm.format = fmt
    t_load = time.perf_counter() - t
    info = write_native(llm, out, force=args.force)
    print(f"wrote {info['path']}: {info['bytes'] / 2**20:.1f} MiB, {info['linears']} packed weights, {fmt} "
          f"(loaded in {t_load:.1f}s, written in {time.perf_counter() - t - t_load:.1f}s)")
    return 0
