"""Text <-> token ids for Llama-family models, matching llama.cpp's tokenization, built on HF `tokenizers`.

Sources: a GGUF's tokenizer.ggml.* metadata (`Tokenizer.from_gguf`), the same data as a plain dict
(`Tokenizer.from_metadata`, used by tests), or a HF model folder (`Tokenizer.from_hf_dir`).
"""
from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from tokenizers import normalizers

from .tokenizer_build import CONTROL, USER_DEFINED, build_bpe, build_spm
from .tokenizer_chat import render_chat

_P = "tokenizer.ggml."
# Long texts are cut after a newline that precedes a non-space character: every pre-tokenizer regex we carry ends
# a piece there, so the cut cannot change the result, and the chunks then encode in parallel (encode_batch_fast).
_CUT = re.compile(r"(?<=\n)(?=\S)")
_CHUNK = 1 << 14
# texts that end a turn in common chat formats; llama.cpp adds such control tokens to its end-of-generation set
_EOT_TEXTS = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
              "<|end_of_text|>", "</s>", "<EOT>", "<|END_OF_TURN_TOKEN|>", "<|return|>", "<|call|>"}


def _field_value(field) -> Any:
    """Decode one GGUFReader field quickly (its per-element `parts` make .contents() slow on 100k-entry arrays)."""
    import numpy as np
    from gguf import GGUFValueType

    t = field.types
    if hasattr(field.parts, "values"):     # lowbit.io.gguf's lazy array parts: decoded in one pass
        return field.parts.values()
    if t[0] == GGUFValueType.ARRAY:
        if len(t) > 1 and t[1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        if not field.data:
            return []
        return np.concatenate([field.parts[i] for i in field.data]).tolist()
    if t[0] == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    return field.parts[field.data[0]].tolist()[0]


def _spm_tail(hf: HFTokenizer, prefix: bool) -> HFTokenizer:
    t = HFTokenizer.from_str(hf.to_str())
    if prefix:
        t.normalizer = normalizers.Replace(" ", "\u2581")
    return t


class Tokenizer:
    def __init__(self, hf: HFTokenizer, *, bos_id: int | None, eos_id: int | None, add_bos: bool,
                 chat_template: str | None = None, eot_ids: set[int] | None = None,
                 vocab_size: int | None = None, hf_tail: HFTokenizer | None = None):
        self._hf = hf
        # tokenizer for chunks after the first when long texts are cut (None = never cut): the same vocab, minus
        # SentencePiece's space prefix, which only the start of the text gets. May be a factory, called on the
        # first long text (a second vocabulary copy costs MiBs of RSS that short prompts never need).
        self._tail = hf_tail
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = bool(add_bos)
        self.chat_template = chat_template
        self.vocab_size = int(vocab_size if vocab_size is not None else hf.get_vocab_size(with_added_tokens=True))
        self.eot_ids = set(eot_ids or ())
        if eos_id is not None:
            self.eot_ids.add(eos_id)

    @property
    def _hf_tail(self) -> HFTokenizer | None:
        if self._tail is not None and not isinstance(self._tail, HFTokenizer):
            self._tail = self._tail()
        return self._tail

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, reader) -> "Tokenizer":
        meta = {k: _field_value(f) for k, f in reader.fields.items() if k.startswith("tokenizer.")}
        return cls.from_metadata(meta)

    @classmethod
    def from_metadata(cls, meta: dict) -> "Tokenizer":
        """`meta` maps GGUF keys (tokenizer.ggml.model, .tokens, .scores, ...) to plain Python values."""
        model = meta.get(_P + "model")
        if model is None:
            raise ValueError("GGUF has no tokenizer metadata: missing 'tokenizer.ggml.model'")
        tokens = meta.get(_P + "tokens")
        if not tokens:
            raise ValueError("GGUF tokenizer metadata is missing 'tokenizer.ggml.tokens'")
        types = meta.get(_P + "token_type")
        if types is not None and len(types) != len(tokens):
            raise ValueError(f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
        n = len(tokens)

        def tid(name):
            v = meta.get(_P + name)
            return int(v) if v is not None and 0 <= int(v) < n else None  # llama.cpp writes -1/0xFFFFFFFF for none

        if model == "llama":
            scores = meta.get(_P + "scores")
            if scores is None or len(scores) != n:
                raise ValueError("llama (SentencePiece) vocabulary needs 'tokenizer.ggml.scores' with one score "
                                 "per token")
            prefix = bool(meta.get(_P + "add_space_prefix", True))
            hf = build_spm(tokens, scores, types, tid("unknown_token_id"), prefix)
            tail = None
            # cutting is safe if no merge can join across the newline and no text token re-triggers the prefix
            if not any(len(t) > 1 and "\n" in t for t in tokens) and (types is None or USER_DEFINED not in types):
                tail = partial(_spm_tail, hf, prefix)
            default_bos, default_eos, default_add_bos = 1, 2, True
        elif model == "gpt2":
            merges = meta.get(_P + "merges")
            if merges is None:
                raise ValueError("gpt2 (BPE) vocabulary needs 'tokenizer.ggml.merges'")
            hf = build_bpe(tokens, merges, types, meta.get(_P + "pre"))
            tail = hf
            # llama.cpp's defaults when the GGUF has no add_bos_token: on for Llama-3-style pre-tokenizers only
            default_bos, default_eos, default_add_bos = 11, 11, meta.get(_P + "pre") in ("llama-bpe", "llama3")
        else:
            raise ValueError(f"unsupported tokenizer.ggml.model {model!r} (supported: 'llama', 'gpt2')")

        bos = tid("bos_token_id")
        eos = tid("eos_token_id")
        if _P + "bos_token_id" not in meta:
            bos = default_bos if default_bos < n else None
        if _P + "eos_token_id" not in meta:
            eos = default_eos if default_eos < n else None
        add_bos = meta.get(_P + "add_bos_token", default_add_bos)
        eot = {i for i in (tid("eot_token_id"), tid("eom_token_id")) if i is not None}
        eot |= {i for i, t in enumerate(tokens) if t in _EOT_TEXTS and (types is None or types[i] == CONTROL)}
        return cls(hf, bos_id=bos, eos_id=eos, add_bos=bool(add_bos) and bos is not None,
                   chat_template=meta.get("tokenizer.chat_template"), eot_ids=eot, vocab_size=n,
                   hf_tail=tail)

    @classmethod
    def from_hf_dir(cls, path) -> "Tokenizer":
        path = Path(path)
        tj = path / "tokenizer.json"
        if not tj.is_file():
            raise ValueError(f"{path}: no tokenizer.json (only 'fast' HF tokenizers are supported)")
        hf = HFTokenizer.from_file(str(tj))
        cfg_path = path / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}

        def tok_id(key):
            v = cfg.get(key)
            if isinstance(v, dict):
                v = v.get("content")
            return hf.token_to_id(v) if isinstance(v, str) else None

        bos, eos = tok_id("bos_token"), tok_id("eos_token")
        if "add_bos_token" in cfg:
            add_bos = bool(cfg["add_bos_token"])
        else:  # the tokenizer.json post-processor decides (e.g. Llama-3's TemplateProcessing adds BOS)
            ids = hf.encode("a", add_special_tokens=True).ids
            add_bos = bos is not None and bool(ids) and ids[0] == bos
        template = cfg.get("chat_template")
        if isinstance(template, list):  # newer configs: [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default") or next(iter(named.values()), None)
        if template is None and (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text(encoding="utf-8")
        eot = set()
        gen_path = path / "generation_config.json"
        if gen_path.is_file():
            g = json.loads(gen_path.read_text(encoding="utf-8")).get("eos_token_id")
            eot |= set(g if isinstance(g, list) else [g] if isinstance(g, int) else [])
        for t in _EOT_TEXTS:
            i = hf.token_to_id(t)
            if i is not None:
                eot.add(i)
        # a tokenizer.json may carry padding/truncation settings that would pad or silently cut prompts
        hf.no_padding()
        hf.no_truncation()
        return cls(hf, bos_id=bos, eos_id=eos, add_bos=add_bos and bos is not None, chat_template=template,
                   eot_ids=eot)

    # ---- text <-> ids -------------------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode() needs str, got {type(text).__name__}")
        self._hf.encode_special_tokens = not parse_special
        if self._tail is not None and not parse_special and len(text) > 2 * _CHUNK:
            ids = self._encode_long(text)
        else:
            ids = self._hf.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        return ids

    def _encode_long(self, text: str) -> list[int]:
        chunks, start = [], 0
        for m in _CUT.finditer(text):
            if m.start() - start >= _CHUNK:
                chunks.append(text[start:m.start()])
                start = m.start()
        chunks.append(text[start:])
        if len(chunks) == 1:
            return self._hf.encode(text, add_special_tokens=False).ids
        self._hf_tail.encode_special_tokens = True
        ids = self._hf.encode(chunks[0], add_special_tokens=False).ids
        for enc in self._hf_tail.encode_batch_fast(chunks[1:], add_special_tokens=False):
            ids.extend(enc.ids)
        return ids

    def _check_ids(self, ids) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} out of range for a vocabulary of {self.vocab_size}")
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self._hf.decode(self._check_ids(ids), skip_special_tokens=skip_special)

    def token_text(self, token_id: int) -> str:
        return self._hf.id_to_token(self._check_ids([token_id])[0])

    def stream_decoder(self, skip_special: bool = True, after_prompt: bool = True) -> "StreamDecoder":
        return StreamDecoder(self, skip_special, after_prompt)

    def _space_anchor(self) -> tuple[int, str] | None:
        """(id, text) of a plain one-letter token if this decoder strips a leading space (SentencePiece), else None."""
        if not hasattr(self, "_anchor_cache"):
            self._anchor_cache = None
            sp = self._hf.token_to_id("\u2581")
            if sp is not None and self._hf.decode([sp, sp]) == " ":
                for ch in "abcdefghijklmnopqrstuvwxyz":
                    i = self._hf.token_to_id(ch)
                    if i is not None and self._hf.decode([i, sp]) == ch + " ":
                        self._anchor_cache = (i, ch)
                        break
        return self._anchor_cache

    # ---- chat ---------------------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        if not self.chat_template:
            raise ValueError("this model has no chat template (tokenizer.chat_template / tokenizer_config.json "
                             "'chat_template'); format the prompt yourself")

        def text_of(i):
            return self._hf.id_to_token(i) if i is not None else ""

        return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           bos_token=text_of(self.bos_id), eos_token=text_of(self.eos_id), **extra)


class StreamDecoder:
    """Incremental decode: push(id) returns only text that can no longer change (no half UTF-8 sequence), so the
    concatenation of all pushes + flush() equals the decode of all ids.

    after_prompt=True (default): the ids continue earlier text, so a SentencePiece word-start token ("\u2581time")
    yields " time" as llama.cpp's token_to_piece does; False: the text starts here and, like decode(), drops the
    one space SentencePiece prefixed."""

    def __init__(self, tok: Tokenizer, skip_special: bool = True, after_prompt: bool = True):
        self._tok = tok
        self._skip = skip_special
        # decoding behind a fixed one-letter token keeps the SPM decoder's strip-one-leading-space off our text
        self._anchor = tok._space_anchor() if after_prompt else None
        self._ids: list[int] = []
        self._emitted = ""  # text of self._ids already returned

    def _decode(self, ids):
        if self._anchor is None:
            return self._tok.decode(ids, skip_special=self._skip)
        aid, atext = self._anchor
        return self._tok.decode([aid, *ids], skip_special=self._skip)[len(atext):]

    def push(self, token_id: int) -> str:
        self._ids.append(self._tok._check_ids([token_id])[0])
        text = self._decode(self._ids)
        # hold back an incomplete UTF-8 tail (decoded as U+FFFD) until the next bytes arrive
        if text.endswith("\ufffd") or not text.startswith(self._emitted):
            return ""
        out, self._emitted = text[len(self._emitted):], text
        if len(self._ids) > 64:  # keep re-decoding cheap: restart the window after a safe point
            # (a fresh window decodes its head the same way every time, so deltas stay exact)
            self._ids = self._ids[-8:]
            self._emitted = self._decode(self._ids)
        return out

    def flush(self) -> str:
        text = self._decode(self._ids)
        out = text[len(self._emitted):] if text.startswith(self._emitted) else ""
        self._ids, self._emitted = [], ""
        return out
