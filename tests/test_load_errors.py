"""Bad input gets one clear error naming the problem (never a numpy traceback from deep inside, never a crash)."""
import numpy as np
import pytest

import lowbit
import tiny_llama
from lowbit.io import ModelFileError
from lowbit.model.llama import ContextFullError
from lowbit.registry import embedded_model


@pytest.fixture(scope="module")
def stories():
    return lowbit.load(format="f32", n_ctx=64)


def test_truncated_gguf(tmp_path):
    data = embedded_model().read_bytes()
    for n in (len(data) // 2, 1000):
        p = tmp_path / f"cut{n}.gguf"
        p.write_bytes(data[:n])
        with pytest.raises(ModelFileError, match="truncated"):
            lowbit.load(p)


def test_not_a_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"hello world, not a model")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        lowbit.load(p)


def test_unknown_architecture(tmp_path):
    p = tiny_llama.write(tmp_path / "mamba.gguf", arch="mamba")
    with pytest.raises(ModelFileError, match="unsupported architecture 'mamba'"):
        lowbit.load(p)


def test_unsupported_tensor_type(tmp_path):
    p = tiny_llama.write(tmp_path / "i32.gguf", extra_tensor=("blk.0.odd.weight", np.zeros((4, 32), np.int32)))
    with pytest.raises(ModelFileError, match="blk.0.odd.weight has unsupported type I32"):
        lowbit.load(p)


def test_missing_tokenizer(tmp_path):
    p = tiny_llama.write(tmp_path / "notok.gguf", tokenizer=False)
    with pytest.raises(ModelFileError, match="missing tokenizer"):
        lowbit.load(p)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        lowbit.load(tmp_path / "nope.gguf")
    with pytest.raises(ValueError, match="unknown runtime format 'q3'"):
        lowbit.load(format="q3")


def test_empty_prompt(stories):
    with pytest.raises(ValueError, match="empty prompt"):
        stories.generate("")


def test_prompt_longer_than_context(stories):
    with pytest.raises(ContextFullError, match="prompt too long: .* the context holds 64"):
        stories.generate("Once upon a time " * 40)
    # the model stays usable afterwards
    assert stories.generate("Once upon a time", max_tokens=5, temperature=0)


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    from lowbit.cli import main
    p = tmp_path / "cut.gguf"
    p.write_bytes(embedded_model().read_bytes()[:5000])
    assert main(["run", "-m", str(p), "hi"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated" in err[0] and "Traceback" not in err[0]
