"""`lowbit make-synthetic --shape S -o OUT.gguf [--type T]`: a random-weight GGUF with real model shapes."""
import time

from .. import synthetic


def add_arguments(p):
    p.add_argument("--shape", required=True, choices=list(synthetic.SHAPES), help="model shape to copy")
    p.add_argument("-o", "--output", required=True, help="output .gguf path")
    p.add_argument("--type", default="q4_0", choices=list(synthetic.TYPES),
                   help="type of every weight matrix (norms stay F32); default q4_0")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same file)")


def main(args):
    s = synthetic.SHAPES[args.shape]
    t = time.perf_counter()
    path = synthetic.write(args.output, args.shape, args.type, seed=args.seed, progress=True)
    print(f"wrote {path} ({s.n_params() / 1e6:.0f}M params, {args.type}, synthetic random weights) "
          f"in {time.perf_counter() - t:.1f}s")
    return 0
