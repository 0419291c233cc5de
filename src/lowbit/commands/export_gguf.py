"""`lowbit export-gguf MODEL -o OUT.gguf --type q4_0|iq4_nl|q8_0|f16|f32 [--force]`: a GGUF llama.cpp can load
(io/export_gguf.py). MODEL: a GGUF, a codebook GGUF or a .lowbit file made from a GGUF."""
import time

from ..io.export_gguf import TYPES


def add_arguments(p):
    p.add_argument("model", nargs="?", default=None, help="model to export (default: the embedded model)")
    p.add_argument("-o", "--output", required=True, help="output .gguf path")
    p.add_argument("--type", default="q4_0", choices=TYPES, help="weight matrix type (default q4_0)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def main(args):
    from ..io.export_gguf import export_gguf
    t = time.perf_counter()
    info = export_gguf(args.model, args.output, args.type, force=args.force)
    what = ", ".join(f"{n} {k}" for k, n in sorted(info["tensors"].items()))
    print(f"wrote {info['path']}: {info['bytes'] / 2**20:.1f} MiB, {args.type} ({what}) "
          f"in {time.perf_counter() - t:.1f}s")
    return 0
