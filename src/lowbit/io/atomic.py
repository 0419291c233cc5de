"""Writing a file the user may already have: never half-written, never replaced without --force."""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(out, force: bool = False):
    """Yield a temporary path beside `out`; when the block succeeds, rename it over `out` (refusing to replace an
    existing file unless force, checked before and after the work); on any failure remove it."""
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    fd, tmp = tempfile.mkstemp(prefix="." + out.name + ".", suffix=".tmp", dir=str(out.parent))
    os.close(fd)
    try:
        yield tmp
        if out.exists() and not force:       # created meanwhile: still never overwrite without --force
            raise FileExistsError(f"{out} exists; pass --force to overwrite it")
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
