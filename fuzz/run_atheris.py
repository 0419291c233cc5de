"""Coverage-guided fuzzing of one loader with atheris (libFuzzer for Python; `pip install atheris`).

    python fuzz/run_atheris.py gguf|safetensors|native [CORPUS_DIR] -- [libFuzzer flags, e.g. -runs=100000]

Seeds small valid files into CORPUS_DIR (default /tmp/lowbit-corpus/KIND) the first time. Any exception other
than ModelFileError, or a crash/timeout/OOM, stops the run with a reproducer file (libFuzzer's crash-*)."""
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["lowbit.io", "lowbit.model.config", "gguf.gguf_reader"]):
    import lowbit.io.gguf, lowbit.io.safetensors, lowbit.io.native, lowbit.io.gguf_check  # noqa: E401,F401

sys.path.insert(0, str(Path(__file__).resolve().parent))
import targets  # noqa: E402


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    kind = argv[0]
    corpus = Path(argv[1] if len(argv) > 1 else f"/tmp/lowbit-corpus/{kind}")
    if not corpus.is_dir() or not any(corpus.iterdir()):
        corpus.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(targets.seeds(kind)):
            (corpus / f"seed{i}").write_bytes(s)
    target = targets.TARGETS[kind]

    def one(data: bytes):
        target(data)

    if not any(a.startswith("-artifact_prefix=") for a in extra):    # crash files out of the source tree
        Path("/tmp/lowbit-fuzz-artifacts").mkdir(exist_ok=True)
        extra.append("-artifact_prefix=/tmp/lowbit-fuzz-artifacts/")
    atheris.Setup([sys.argv[0], str(corpus)] + extra, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
