"""Build a HF `tokenizers.Tokenizer` from GGUF-style vocabulary metadata (tokenizer.ggml.*).

Two vocabulary kinds, mirroring llama.cpp's llama-vocab.cpp:
  * "llama" (SentencePiece BPE): tokens + scores + token_type. llama.cpp greedily merges the adjacent pair whose
    concatenation is a vocab token of highest score; a HF BPE whose merge ranks follow that score is the same
    algorithm. Unknown characters fall back to <0xNN> byte tokens.
  * "gpt2" (byte-level BPE): tokens + merges, with the pre-tokenizer regexes chosen from tokenizer.ggml.pre.
"""
from __future__ import annotations

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

# llama.cpp token types (llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
           r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# llama.cpp's DEEPSEEK_LLM / DEEPSEEK_CODER / FALCON regex lists, verbatim
_DEEPSEEK_LLM = [
    '[\r\n]',
    '\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+',
    '\\s?[!-/:-~！-／：-～‘-‟\u3000-。]+',
    '\\s+$',
    '[一-龥ࠀ-一가-\ud7ff]+',
    '\\p{N}+',
]
_DEEPSEEK_CODER = [
    '[\r\n]',
    '\\s?\\p{L}+',
    '\\s?\\p{P}+',
    '[一-龥ࠀ-一가-\ud7ff]+',
    '\\p{N}',
]
_FALCON = [
    '[\\p{P}\\$\\+<=>\\^~\\|`]+',
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
    '[0-9][0-9][0-9]',
]

# tokenizer.ggml.pre -> (regexes applied in sequence as llama.cpp does, ignore_merges). Copied from llama.cpp's
# llm_tokenizer_bpe (llama-vocab.cpp); only pre-tokenizers whose regexes we carry are accepted.
_BPE_PRE: dict[str, tuple[list[str], bool]] = {
    "default": ([_GPT2], False),
    "gpt-2": ([_GPT2], False), "mpt": ([_GPT2], False), "olmo": ([_GPT2], False), "jais": ([_GPT2], False),
    "llama-bpe": ([_LLAMA3], True), "llama3": ([_LLAMA3], True), "dbrx": ([_LLAMA3], False),
    "smaug-bpe": ([_LLAMA3], False),
    "starcoder": ([r"\p{N}", _GPT2], False), "refact": ([r"\p{N}", _GPT2], False),
    "command-r": ([r"\p{N}", _GPT2], False), "smollm": ([r"\p{N}", _GPT2], False),
    "codeshell": ([r"\p{N}", _GPT2], False), "exaone": ([r"\p{N}", _GPT2], False),
    "falcon": (_FALCON, False), "deepseek-coder": (_DEEPSEEK_CODER, False),
    "deepseek-llm": (_DEEPSEEK_LLM, False),
    "qwen35": ([_QWEN35], False),
    "qwen2": ([_QWEN2], False), "stablelm2": ([_QWEN2], False), "deepseek-r1-qwen": ([_QWEN2], False),
}


def _add_token_kinds(hf: HFTokenizer, tokens: list[str], types: list[int] | None) -> None:
    """CONTROL/UNKNOWN tokens are parsed from text only with parse_special (llama.cpp's rule), USER_DEFINED always
    (HF: special tokens are skipped by encode_special_tokens=True, plain added tokens never are)."""
    if types is None:
        return
    pairs = list(zip(tokens, types))
    ctrl = (CONTROL, UNKNOWN)
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in pairs if ty in ctrl])
    hf.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in pairs if ty == USER_DEFINED])


def _vocab_map(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # llama.cpp's text->token map also keeps the first id of a duplicated text
    return vocab


def build_spm(tokens: list[str], scores: list[float], types: list[int] | None, unk_id: int | None,
              add_space_prefix: bool) -> HFTokenizer:
    vocab = _vocab_map(tokens)
    # merges: every split of a token into two vocab pieces, ranked by the merged token's score (high first),
    # ties by token id, which is what llama.cpp's score-ordered bigram queue does.
    cands = []
    for text, i in vocab.items():
        if len(text) < 2 or (types is not None and types[i] == BYTE):
            continue
        for k in range(1, len(text)):
            a, b = text[:k], text[k:]
            if a in vocab and b in vocab:
                cands.append((-scores[i], i, vocab[a], a, b))
    cands.sort()
    merges = [(a, b) for _, _, _, a, b in cands]
    unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, byte_fallback=True, fuse_unk=True))
    norms = [normalizers.Replace(" ", "\u2581")]
    if add_space_prefix:
        norms.insert(0, normalizers.Prepend("\u2581"))
    tok.normalizer = normalizers.Sequence(norms)
    dec = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        dec.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(dec)
    _add_token_kinds(tok, tokens, types)
    return tok


def build_bpe(tokens: list[str], merges: list[str], types: list[int] | None, pre: str | None) -> HFTokenizer:
    key = pre or "default"
    if key not in _BPE_PRE:
        raise ValueError(f"unsupported tokenizer.ggml.pre {key!r} for a gpt2 (BPE) vocabulary; "
                         f"known: {sorted(_BPE_PRE)}")
    regexes, ignore_merges = _BPE_PRE[key]
    pairs = []
    for m in merges:
        a, sep, b = m.partition(" ")
        if not sep:
            raise ValueError(f"malformed tokenizer.ggml.merges entry {m!r} (expected 'left right')")
        pairs.append((a, b))
    tok = HFTokenizer(models.BPE(vocab=_vocab_map(tokens), merges=pairs, ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    _add_token_kinds(tok, tokens, types)
    return tok
