"""lowbit.tokenizer against llama.cpp's own tokenizer test vectors, the shipped stories260K vocab, and (when a
local copy exists) SmolLM2-135M-Instruct's GGUF."""
import gzip
import json
import os
import random
from functools import lru_cache
from pathlib import Path

import pytest

from lowbit.tokenizer import Tokenizer
from lowbit.tokenizer_chat import ChatTemplateError

DATA = Path(__file__).parent / "data" / "tokenizer"
STORIES = Path(__file__).resolve().parents[1] / "src" / "lowbit" / "data" / "stories260K.gguf"
VOCABS = ["llama-spm", "gpt-2", "starcoder", "llama-bpe"]
SEP = "\n__ggml_vocab_test__\n"


@lru_cache(maxsize=None)
def vocab_tok(name: str) -> Tokenizer:
    with gzip.open(DATA / f"{name}.json.gz", "rt", encoding="utf-8") as f:
        return Tokenizer.from_metadata(json.load(f))


def vector_cases(name: str, folder: Path = DATA):
    """(text, ids) pairs exactly as llama.cpp's tests/test-tokenizer-0.cpp reads NAME.inp / NAME.out."""
    raw = (folder / f"{name}.inp").read_bytes().decode("utf-8")
    inp = raw.split(SEP)
    if raw.endswith(SEP):  # the C++ reader stops at the last separator
        inp.pop()
    out = (folder / f"{name}.out").read_text(encoding="utf-8").split("\n")
    if out[-1] == "":  # std::getline: a final newline ends the last line, it does not start another
        out.pop()
    assert len(inp) == len(out) and len(inp) > 30
    return [(s, [int(x) for x in o.split()]) for s, o in zip(inp, out)]


@pytest.mark.parametrize("name", VOCABS)
def test_llama_cpp_vectors(name):
    tok = vocab_tok(name)
    cases = vector_cases(name)
    got = [tok.encode(s, add_bos=False) for s, _ in cases]
    failed = [(s, ids, g) for (s, ids), g in zip(cases, got) if g != ids]
    assert not failed, f"{len(failed)}/{len(cases)} differ from llama.cpp, first: {failed[0]!r}"


@pytest.mark.parametrize("name", VOCABS)
def test_vectors_decode_back(name):
    tok = vocab_tok(name)
    # (for SPM this also checks that detokenizing drops only the one space the encoder prefixed)
    for s, ids in vector_cases(name):
        assert tok.decode(ids) == s, repr(s)


@pytest.fixture(scope="module")
def stories():
    import gguf
    return Tokenizer.from_gguf(gguf.GGUFReader(str(STORIES)))


def test_stories_metadata(stories):
    assert stories.vocab_size == 512
    assert (stories.bos_id, stories.eos_id, stories.add_bos) == (1, 2, True)
    assert stories.eos_id in stories.eot_ids
    assert stories.chat_template is None
    with pytest.raises(ValueError, match="no chat template"):
        stories.apply_chat_template([{"role": "user", "content": "hi"}])


TEXTS = ["Once upon a time, there was a little girl named Lily.", " two  spaces", "  ", "", "tab\tand\nnewline\n\n",
         "héllo wörld — ünïcödé", "emoji 🦙🦙 and CJK 日本語", "digits 1234567890 3.14", "\x00\x01 control",
         "Ça va? Да. नमस्ते"]


@pytest.mark.parametrize("text", TEXTS)
def test_stories_round_trip(stories, text):
    ids = stories.encode(text)
    assert ids[0] == stories.bos_id
    assert all(0 <= i < 512 for i in ids)
    assert stories.decode(ids) == text
    assert stories.encode(text, add_bos=False) == ids[1:]


def test_spm_prefix_and_byte_fallback(stories):
    a = stories.encode("hello", add_bos=False)
    assert stories.token_text(a[0]).startswith("\u2581")  # add_space_prefix
    ids = stories.encode("🦙", add_bos=False)  # not in a 512 vocab: 4 UTF-8 byte tokens after the prefix
    assert [stories.token_text(i) for i in ids[-4:]] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]


def test_special_tokens_parsed_only_on_request(stories):
    assert stories.encode("<s>", add_bos=False, parse_special=True) == [1]
    assert 1 not in stories.encode("<s>", add_bos=False)
    assert stories.decode([1, *stories.encode("hi", add_bos=False), 2]) == "hi"
    assert stories.decode([1, 2], skip_special=False) == "<s></s>"


@pytest.mark.parametrize("name", ["llama-spm", "gpt-2", "llama-bpe"])
def test_stream_decoder_matches_decode(name):
    tok = vocab_tok(name)
    rng = random.Random(0)
    text = "".join(s for s, _ in vector_cases(name)) * 3
    ids = tok.encode(text, add_bos=False)
    for _ in range(3):  # also byte soup: ids cut mid UTF-8 sequence
        ids += [rng.randrange(tok.vocab_size) for _ in range(50)]
    usable = [i for i in ids if tok.token_text(i) and not tok.token_text(i).startswith("<|pruned")]
    sd = tok.stream_decoder(after_prompt=False)
    pieces = [sd.push(i) for i in usable]
    assert "".join(pieces) + sd.flush() == tok.decode(usable)
    assert not any("\ufffd" in p for p in pieces[:len(tok.encode(text, add_bos=False))])


def test_stream_decoder_holds_split_utf8(stories):
    ids = stories.encode("a🦙b", add_bos=False)
    sd = stories.stream_decoder(after_prompt=False)
    out = [sd.push(i) for i in ids]
    assert "".join(out) + sd.flush() == "a🦙b"
    assert "🦙" in out and all("\ufffd" not in o for o in out)


@pytest.mark.parametrize("name", ["stories", "llama-spm", "gpt-2"])
def test_stream_after_prompt_keeps_word_space(name, stories):
    """Generated text continues a prompt: pieces must read as llama.cpp's token_to_piece (no space dropped)."""
    tok = stories if name == "stories" else vocab_tok(name)
    prompt, gen = "Once upon a", " time, there was a cat.\n"
    ids = tok.encode(prompt + gen, add_bos=False)
    n = len(tok.encode(prompt, add_bos=False))
    assert ids[:n] == tok.encode(prompt, add_bos=False)
    sd = tok.stream_decoder()
    out = "".join(sd.push(i) for i in ids[n:]) + sd.flush()
    assert out == gen
    assert tok.decode(ids[:n]) + out == prompt + gen


def test_add_bos_defaults_follow_llama_cpp():
    # none of these GGUFs sets tokenizer.ggml.add_bos_token except llama-spm (true)
    assert "tokenizer.ggml.add_bos_token" not in json.load(gzip.open(DATA / "llama-bpe.json.gz", "rt"))
    assert vocab_tok("llama-bpe").add_bos and vocab_tok("llama-bpe").encode("hi")[0] == 128000
    assert not vocab_tok("gpt-2").add_bos and not vocab_tok("starcoder").add_bos
    assert vocab_tok("llama-spm").add_bos and vocab_tok("llama-spm").encode("hi")[0] == 1


def test_bad_input_errors(stories):
    with pytest.raises(ValueError, match="out of range"):
        stories.decode([0, 512])
    with pytest.raises(TypeError):
        stories.encode(b"bytes")
    with pytest.raises(ValueError, match="tokenizer.ggml.model"):
        Tokenizer.from_metadata({})
    with pytest.raises(ValueError, match="tokenizer.ggml.tokens"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "llama"})
    with pytest.raises(ValueError, match="scores"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "b"]})
    with pytest.raises(ValueError, match="merges"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"]})
    with pytest.raises(ValueError, match="unsupported tokenizer.ggml.pre"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"],
                                 "tokenizer.ggml.merges": ["a b"], "tokenizer.ggml.pre": "nope"})
    with pytest.raises(ValueError, match="unsupported tokenizer.ggml.model"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]})


CHATML = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_chat_template_features(stories):
    stories.chat_template = CHATML
    try:
        s = stories.apply_chat_template([{"role": "user", "content": "hi"}])
        assert s == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        assert not stories.apply_chat_template([{"role": "user", "content": "hi"}],
                                               add_generation_prompt=False).endswith("assistant\n")
        stories.chat_template = "{{ bos_token }}{% if messages|length > 1 %}{{ raise_exception('one only') }}" \
                                "{% endif %}{{ messages[0] | tojson }}{{ strftime_now('%Y')|length }}"
        assert stories.apply_chat_template([{"role": "user", "content": "é"}]) == \
            '<s>{"role": "user", "content": "é"}4'
        with pytest.raises(ChatTemplateError, match="one only"):
            stories.apply_chat_template([{"role": "user", "content": "a"}] * 2)
        stories.chat_template = "{{ ''.__class__.__mro__ }}"  # sandbox refuses dunder access
        with pytest.raises(ChatTemplateError):
            stories.apply_chat_template([])
    finally:
        stories.chat_template = None


def smollm2_gguf() -> Path:
    """A local SmolLM2-135M-Instruct GGUF: $LOWBIT_SMOLLM2_GGUF or ~/.cache/lowbit/models/ (tests never download)."""
    env = os.environ.get("LOWBIT_SMOLLM2_GGUF")
    if env and Path(env).is_file():
        return Path(env)
    cache = Path.home() / ".cache" / "lowbit" / "models"
    found = sorted(p for p in cache.rglob("*.gguf") if "smollm2" in str(p).lower()) if cache.is_dir() else []
    if not found:
        pytest.skip("SmolLM2 GGUF not found: set LOWBIT_SMOLLM2_GGUF or run `lowbit pull` into ~/.cache/lowbit/models")
    return found[0]


@pytest.fixture(scope="module")
def smol():
    import gguf
    return Tokenizer.from_gguf(gguf.GGUFReader(str(smollm2_gguf())))


def test_smollm2_tokenizer(smol):
    assert smol.vocab_size == 49152 and not smol.add_bos
    im_end = smol.encode("<|im_end|>", parse_special=True)
    assert len(im_end) == 1 and im_end[0] in smol.eot_ids
    for text in TEXTS:
        assert smol.decode(smol.encode(text)) == text
    # starcoder-style pre-tokenizer: every digit is its own token
    digits = smol.encode("12345")
    assert len(digits) == 5


def test_smollm2_chat_template(smol):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    s = smol.apply_chat_template(msgs)
    assert s == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                 "<|im_start|>assistant\n")
    ids = smol.encode(s, parse_special=True)
    assert ids.count(smol.encode("<|im_start|>", parse_special=True)[0]) == 3
    assert smol.decode(ids, skip_special=False) == s
    default = smol.apply_chat_template([{"role": "user", "content": "hi"}])
    assert default.startswith("<|im_start|>system\n") and default.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("name", ["llama-spm", "gpt-2"])
def test_from_hf_dir_matches_gguf_metadata(tmp_path, name):
    src = vocab_tok(name)
    src._hf.save(str(tmp_path / "tokenizer.json"))
    bos, eos = src.token_text(src.bos_id), src.token_text(src.eos_id)
    cfg = {"bos_token": {"content": bos}, "eos_token": eos, "chat_template": CHATML}
    if name == "llama-spm":
        cfg["add_bos_token"] = True
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    tok = Tokenizer.from_hf_dir(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.add_bos) == (src.bos_id, src.eos_id, name == "llama-spm")
    assert tok.eos_id in tok.eot_ids and tok.vocab_size == src.vocab_size
    for s, ids in vector_cases(name):
        assert tok.encode(s, add_bos=False) == ids
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]).endswith("<|im_start|>assistant\n")


def test_from_hf_dir_bos_from_post_processor(tmp_path):
    from tokenizers import processors
    hf = vocab_tok("llama-spm")._hf
    hf.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    try:
        hf.save(str(tmp_path / "tokenizer.json"))
    finally:
        hf.post_processor = None
    (tmp_path / "tokenizer_config.json").write_text('{"bos_token": "<s>", "eos_token": "</s>"}')
    tok = Tokenizer.from_hf_dir(tmp_path)
    assert tok.add_bos and tok.encode("Hello")[:1] == [1] and tok.encode("Hello").count(1) == 1
    with pytest.raises(ValueError, match="tokenizer.json"):
        Tokenizer.from_hf_dir(tmp_path / "missing")


@pytest.mark.parametrize("name", VOCABS)
def test_long_text_cut_changes_nothing(name, stories):
    """encode() cuts long texts into chunks encoded in parallel; the ids must equal one whole-text encode."""
    tok = stories if name == "llama-spm" else vocab_tok(name)
    body = "\n".join(s for s, _ in vector_cases(name)) + "\n  \n\tx\n\n y\n"
    text = body * (4 * (1 << 14) // len(body) + 1)
    assert tok._hf_tail is not None
    whole = tok._hf.encode(text, add_special_tokens=False).ids
    assert tok.encode(text, add_bos=False) == whole
    assert tok.decode(whole) == text


EXTRA_VOCABS = ["phi-3", "qwen2", "mpt", "refact", "falcon", "deepseek-coder", "deepseek-llm", "command-r",
                "qwen35", "gpt-2", "llama-bpe", "starcoder", "llama-spm"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXTRA_VOCABS)
def test_llama_cpp_vocab_gguf(name):
    """The full vocab GGUFs (too big to commit), from $LOWBIT_LLAMA_CPP_MODELS = llama.cpp's models/ folder."""
    import gguf
    root = os.environ.get("LOWBIT_LLAMA_CPP_MODELS")
    g = Path(root or "/nonexistent") / f"ggml-vocab-{name}.gguf"
    if not g.is_file():
        pytest.skip("set LOWBIT_LLAMA_CPP_MODELS to llama.cpp's models/ folder (llama-cpp-python sdist vendor/)")
    tok = Tokenizer.from_gguf(gguf.GGUFReader(str(g)))
    cases = vector_cases(g.name, g.parent)
    failed = [s for s, ids in cases if tok.encode(s, add_bos=False) != ids]
    assert not failed, f"{len(failed)}/{len(cases)} differ, first: {failed[0]!r}"
