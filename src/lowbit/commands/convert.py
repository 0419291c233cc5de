"""`lowbit convert MODEL -o OUT.lowbit [--format F] [--force]`: write a native file, pre-packed for the kernels
this CPU selects (io/native.py, docs/native-format.md). cb4/cb2: a codebook GGUF from `lowbit quantize` is used
as it is; any other model is quantized first (codebooks learned with quantize's default settings)."""
import os
import time
from pathlib import Path

FORMATS = ("q4_0", "iq4_nl", "cb4", "cb2", "q8_0")


def add_arguments(p):
    p.add_argument("model", nargs="?", default=None,
                   help="GGUF, HF safetensors directory, known name, or .lowbit (default: the embedded model)")
    p.add_argument("-o", "--output", required=True, help="output .lowbit path")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="weight format (default q4_0; cb4/cb2 learn codebooks unless MODEL already has them)")
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
    tmp = None
    try:
        if fmt in ("cb4", "cb2") and fmt not in _packed_formats(llm):
            tmp = _quantize(args.model, fmt, out)     # learn codebooks first (`lowbit quantize`, default settings)
            llm = lowbit.load(tmp)
        if fmt in ("cb4", "cb2"):
            if fmt not in _packed_formats(llm):
                raise ValueError(f"{args.model or 'the embedded model'} has no {fmt} weights")
            llm.format = fmt
        t_load = time.perf_counter() - t
        info = write_native(llm, out, force=args.force)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    print(f"wrote {info['path']}: {info['bytes'] / 2**20:.1f} MiB, {info['linears']} packed weights, {fmt} "
          f"(loaded in {t_load:.1f}s, written in {time.perf_counter() - t - t_load:.1f}s)")
    return 0


def _packed_formats(llm):
    return {L_w.pw.fmt for L in llm.model.layers for L_w in (L.wqkv, L.wo, L.wgu, L.wdown) if hasattr(L_w, "pw")}


def _quantize(model, fmt, out):
    """A codebook GGUF of `model` next to OUT (removed after conversion)."""
    import argparse
    import tempfile

    from ..registry import resolve
    from . import quantize
    src = resolve(model)
    fd, tmp = tempfile.mkstemp(prefix="." + out.name + ".", suffix=f".{fmt}.gguf", dir=str(out.parent))
    os.close(fd)
    os.unlink(tmp)                      # quantize refuses to overwrite
    p = argparse.ArgumentParser()
    quantize.add_arguments(p)
    print(f"{src} has no {fmt} weights: learning codebooks with `lowbit quantize --format {fmt}` first")
    quantize.main(p.parse_args([str(src), "--format", fmt, "-o", tmp]))
    return Path(tmp)
