"""Chat templates: the Jinja2 dialect HF transformers uses (sandboxed, trim_blocks/lstrip_blocks, raise_exception,
strftime_now, tojson without ASCII escaping), so templates shipped in GGUF/tokenizer_config.json render as upstream."""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

# jinja2 is imported on first use: it adds ~5 MiB of RSS to every process that loads a model but never chats


class ChatTemplateError(ValueError):
    """Raised by a template's raise_exception(...) or when it fails to render."""


def _raise_exception(message):
    raise ChatTemplateError(f"chat template: {message}")


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(source: str):
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template does not parse: {e}") from e


def render_chat(template: str, messages: list[dict], *, add_generation_prompt: bool = True, bos_token: str = "",
                eos_token: str = "", **extra) -> str:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise TypeError("messages must be a list of dicts like {'role': 'user', 'content': '...'}")
    import jinja2
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=bos_token, eos_token=eos_token, **extra)
    except ChatTemplateError:
        raise
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"chat template failed to render: {e}") from e
