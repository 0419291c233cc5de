"""`lowbit chat`: a conversation rendered with the model's own chat template (interactive, or one message per
line from piped stdin). The KV cache keeps the shared prefix between turns."""
import sys

from ._gen_args import (add_model_arguments, add_sampling_arguments, load_model, note_finish, print_stats,
                        sampling_kwargs)


def add_arguments(p):
    add_model_arguments(p)
    add_sampling_arguments(p, max_tokens=512)
    p.add_argument("-s", "--system", default=None, help="system message")


def main(args):
    llm = load_model(args)
    if not llm.tokenizer.chat_template:
        raise ValueError(f"{llm.path} has no chat template; use `lowbit run` for plain completion")
    interactive = sys.stdin.isatty()
    messages = [{"role": "system", "content": args.system}] if args.system else []
    if interactive:
        print(f"chatting with {llm.path.name} (Ctrl-D to quit)", file=sys.stderr)
    while True:
        if interactive:
            try:
                line = input("> ")
            except EOFError:
                print(file=sys.stderr)
                return 0
        else:
            line = sys.stdin.readline()
            if not line:
                return 0
        line = line.strip()
        if not line:
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        for piece in llm.chat(messages, **sampling_kwargs(args)):
            reply.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply).strip()})
        note_finish(llm)
        if args.stats:
            print_stats(llm)
