"""Shared test helpers. Real data from ../shared/data is read only through shared_data(), which skips clearly
when the folder is absent (it is not shipped to users)."""
import os
from pathlib import Path

import pytest

_SHARED = Path(os.environ.get("LOWBIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_data(relpath: str) -> Path:
    p = _SHARED / relpath
    if not p.exists():
        pytest.skip(f"shared data {relpath} not available at {_SHARED} (set LOWBIT_SHARED_DATA)")
    return p
