"""`lowbit bench kernels [...]` (micro-kernels vs this machine's ceilings, lowbit.bench.kernels) or
`lowbit bench MODEL [...]` (end-to-end pp/tg, lowbit.bench.e2e). Each target owns its options: the first word
picks the target and the rest of the command line is parsed by that target's own parser."""
import argparse
import importlib

# first word -> module; anything else is a model file for the end-to-end benchmark
TARGETS = {"kernels": "lowbit.bench.kernels"}
E2E = "lowbit.bench.e2e"


def add_arguments(p):
    p.add_argument("target", help="`kernels` for the GEMV/GEMM micro-benchmarks, or a model file for pp/tg "
                                  "(`lowbit bench kernels -h` / `lowbit bench MODEL -h` for their options)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def main(args):
    if args.target in TARGETS:
        mod, argv, prog = importlib.import_module(TARGETS[args.target]), args.rest, f"lowbit bench {args.target}"
    else:
        mod, argv, prog = importlib.import_module(E2E), [args.target] + args.rest, "lowbit bench"
    sub = argparse.ArgumentParser(prog=prog, description=(mod.__doc__ or "").split("\n\n")[0])
    mod.add_arguments(sub)
    return mod.main(sub.parse_args(argv))
