"""Re-create the files in this folder from llama.cpp's vocab GGUFs (see README.md for the source).

usage: python extract.py /path/to/llama.cpp/models NAME [NAME...] [--prune NAME...]
  (NAME like llama-spm, gpt-2; --prune shrinks the listed byte-level BPE vocabs, see prune_bpe)
"""
import gzip
import json
import shutil
import sys
from pathlib import Path

import gguf

from lowbit.tokenizer import _field_value

KEEP = ("tokenizer.ggml.", "tokenizer.chat_template")

here = Path(__file__).resolve().parent


def extract(src: Path, name: str) -> None:
    g = src / f"ggml-vocab-{name}.gguf"
    r = gguf.GGUFReader(str(g))
    meta = {k: _field_value(f) for k, f in r.fields.items() if k.startswith(KEEP)}
    with gzip.open(here / f"{name}.json.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        json.dump(meta, f, ensure_ascii=False, separators=(",", ":"))
    for ext in ("inp", "out"):
        shutil.copy(f"{g}.{ext}", here / f"{name}.{ext}")
    print(name, (here / f"{name}.json.gz").stat().st_size)


def prune_bpe(name: str) -> None:
    """Shrink a byte-level BPE vocab to what its .inp texts can reach, keeping every id: a merge whose result is
    not a substring of the (byte-level mapped) test text can never fire on it, so dropping it (and such tokens)
    leaves those texts' tokenization unchanged. Dropped ids become unused placeholders."""
    from tokenizers.pre_tokenizers import ByteLevel

    path = here / f"{name}.json.gz"
    meta = json.load(gzip.open(path, "rt", encoding="utf-8"))
    text = (here / f"{name}.inp").read_text(encoding="utf-8")
    mapped = "".join(p for p, _ in ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text))
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    keep = [ty != 1 or len(t) == 1 or t in mapped for t, ty in zip(tokens, types)]
    meta["tokenizer.ggml.tokens"] = [t if k else f"<|pruned_{i}|>" for i, (t, k) in enumerate(zip(tokens, keep))]
    meta["tokenizer.ggml.token_type"] = [ty if k else 5 for ty, k in zip(types, keep)]
    meta["tokenizer.ggml.merges"] = [m for m in meta["tokenizer.ggml.merges"] if m.replace(" ", "", 1) in mapped]
    meta["pruned_for_tests"] = True
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as f:
        json.dump(meta, f, ensure_ascii=False, separators=(",", ":"))
    print(name, "pruned", path.stat().st_size)


if __name__ == "__main__":
    args = sys.argv[2:]
    cut = args.index("--prune") if "--prune" in args else len(args)
    for n in args[:cut]:
        extract(Path(sys.argv[1]), n)
    for n in args[cut + 1:]:
        prune_bpe(n)
