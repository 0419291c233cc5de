"""`lowbit info [MODEL]`: what this CPU has, which kernel each format uses, and the thread count; with MODEL, what
each tensor became, weight bytes, the RSS loading added (vs the interpreter + libraries before it) and load time."""
from ..ops import KERNELS, runtime_info


def add_arguments(p):
    p.add_argument("model", nargs="?", help="a model to describe (per-tensor formats, memory)")
    p.add_argument("--kernels", action="store_true", help="list every kernel in the kernel list")
    p.add_argument("--format", default=None, help="runtime format to load MODEL in (default q4_0)")
    p.add_argument("--pure", action="store_true", help="every matrix in --format (no q8_0 for sensitive ones)")


def main(args):
    info = runtime_info()
    print(f"arch:            {info['arch']}")
    print(f"cpu features:    {', '.join(info['features']) or '(baseline only)'}")
    if info["disabled"]:
        print(f"disabled:        {info['disabled']} (LOWBIT_DISABLE_ISA) -> usable: {', '.join(info['usable']) or 'none'}")
    if info["sve_bits"]:
        print(f"sve vector bits: {info['sve_bits']}")
    print(f"threads:         {info['threads']} (physical cores: {info['physical_cores']})")
    print("kernels chosen:")
    for fmt, name in info["kernels"].items():
        print(f"  {fmt:8s} {name or 'none'}")
    if args.kernels:
        print("kernel list (csrc/kernels.inc):")
        for k in KERNELS:
            state = "selected" if k["name"] in info["kernels"].values() else ("usable" if k["usable"] else
                                                                              ("masked" if k["runnable"] else "absent"))
            print(f"  {k['name']:24s} {k['format']:7s} R={k['R']} B={k['B']} isa={'+'.join(k['isa']) or '-':8s} {state}")
    if args.model:
        from .. import describe_model  # provided by the runtime
        describe_model(args.model, format=args.format, pure=args.pure)
    return 0
