"""`lowbit run [PROMPT]`: continue a prompt with a model (default: the embedded stories260K), streaming."""
import sys

from ._gen_args import (add_model_arguments, add_sampling_arguments, load_model, note_finish, print_stats,
                        sampling_kwargs)


def add_arguments(p):
    p.add_argument("prompt", nargs="?", default="Once upon a time",
                   help="text to continue; '-' reads it from stdin (default: 'Once upon a time')")
    add_model_arguments(p)
    add_sampling_arguments(p)


def main(args):
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    llm = load_model(args)
    pieces = llm.stream(prompt, **sampling_kwargs(args))     # validates the prompt before anything is printed
    out = sys.stdout
    out.write(prompt)
    out.flush()
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")
    note_finish(llm)
    if args.stats:
        print_stats(llm)
    return 0
