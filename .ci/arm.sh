#!/usr/bin/env bash
# Arm (aarch64) kernels on an x86_64 Debian 12 host: cross gcc + qemu-user + an emulated arm64 CPython
# (recipe: docs/arm.md). Self-contained: installs its apt packages, caches an arm64 rootfs, cross-builds the
# extension in a copy of the tree (the host's x86 .so in src/lowbit is left alone), then, for each CPU class
# the dispatcher knows, asserts which kernel family getauxval selected and runs the kernel tests under qemu.
#   bash .ci/arm.sh            # all CPUs
#   ARM_CPUS="max" bash .ci/arm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${LOWBIT_ARM_ROOTFS:-/tmp/lowbit-arm64-rootfs}   # arm64 Debian userland, cached between runs
SRC=${LOWBIT_ARM_SRC:-/tmp/lowbit-arm-src}            # copy of the tree the aarch64 .so is built into
BUILD=${LOWBIT_ARM_BUILD:-/tmp/lowbit-arm-build}      # object files (incremental between runs)
export DEBIAN_FRONTEND=noninteractive
unset PYTHONDONTWRITEBYTECODE   # the copy in $SRC may cache .pyc: each emulated import costs seconds
t0=$(date +%s)
step() { echo "arm: [$(( $(date +%s) - t0 )) s] $*"; }

# ---- 1. host tools ------------------------------------------------------------------------------------------
pkgs=()
command -v aarch64-linux-gnu-gcc >/dev/null || pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v aarch64-linux-gnu-objdump >/dev/null || pkgs+=(binutils-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || pkgs+=(qemu-user)
command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
if ((${#pkgs[@]})); then
  step "apt-get install ${pkgs[*]}"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# ---- 2. arm64 rootfs: python3.11, numpy 1.24, pytest (extract only: no maintainer scripts, no binfmt) --------
# python3-yaml: gguf imports it; gguf itself (pure python, not in bookworm) goes to $SITE via the host's pip
PKGS=python3,python3-dev,python3-numpy,python3-pytest,python3-hypothesis,python3-setuptools,python3-yaml,python3-tqdm,libstdc++6
SITE=$ROOT/opt/lowbit-site
if [[ ! -x $ROOT/usr/bin/python3.11 || $(cat "$ROOT/.lowbit-pkgs" 2>/dev/null) != "$PKGS" ]]; then
  step "building rootfs $ROOT"
  rm -rf "$ROOT.tmp"
  mmdebstrap --quiet --variant=extract --arch=arm64 --include="$PKGS" bookworm "$ROOT.tmp"
  # 'extract' runs no postinst, so the BLAS alternatives numpy links against are missing
  ln -sf blas/libblas.so.3 "$ROOT.tmp/usr/lib/aarch64-linux-gnu/libblas.so.3"
  ln -sf lapack/liblapack.so.3 "$ROOT.tmp/usr/lib/aarch64-linux-gnu/liblapack.so.3"
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$ROOT.tmp/opt/lowbit-site" 'gguf>=0.10'
  # byte-compile natively (same .pyc format when the host is 3.11): ~5 s here vs ~65 s emulated, every run
  if python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python3 -m compileall -q -j 2 "$ROOT.tmp/usr/lib/python3.11" "$ROOT.tmp/usr/lib/python3/dist-packages" \
      "$ROOT.tmp/opt/lowbit-site" >/dev/null || true
  fi
  echo "$PKGS" > "$ROOT.tmp/.lowbit-pkgs"
  rm -rf "$ROOT"; mv "$ROOT.tmp" "$ROOT"
fi
APY=(qemu-aarch64 -L "$ROOT" "$ROOT/usr/bin/python3.11")

# ---- 3. cross-build the extension in a copy of the tree --------------------------------------------------
step "copying tree to $SRC"
mkdir -p "$SRC" "$BUILD"
# tar keeps mtimes, so setuptools skips an up-to-date .so; any newer C source or setup.py forces a rebuild
tar --exclude=.git --exclude='*.so' --exclude=build --exclude=__pycache__ --exclude='*.egg-info' -cf - . \
  | tar -xf - -C "$SRC"
SO=$SRC/src/lowbit/_core.cpython-311-aarch64-linux-gnu.so
# (setuptools itself only compares ext.sources with its build/lib copy: kernels.inc and headers escape it)
if [[ -f $SO && -n $(find csrc setup.py -newer "$SO" -print -quit) ]]; then rm -rf "$SO" "$SRC/build"; fi
step "cross-building lowbit._core for aarch64"
# The emulated setuptools gives the right EXT_SUFFIX and sysconfig; the compiler it spawns is the native x86
# cross gcc (qemu-user hands execve of host binaries to the kernel). -I puts the rootfs's Python headers ahead
# of any host /usr/include/python3.11.
(cd "$SRC" && CC="aarch64-linux-gnu-gcc --sysroot=$ROOT" LDSHARED="aarch64-linux-gnu-gcc --sysroot=$ROOT -shared" \
  CFLAGS="-I$ROOT/usr/include/python3.11" \
  "${APY[@]}" -W ignore setup.py -q build_ext --inplace --build-temp "$BUILD" >/dev/null)
ls "$SRC"/src/lowbit/_core.cpython-311-aarch64-linux-gnu.so >/dev/null

# ---- 4. per CPU: dispatch assertion + the tests of that CPU's kernel family ------------------------------
# cpu model : expected kernel family : scope. "full" runs all the files below; "quick" only the kernel and
# linear tests of its family, minus tests that don't depend on the kernel family (threading, ISA masking via
# a subprocess, the numpy oracle): those run on the "full" CPU. Keeps the added CI time near 5 min.
CASES=(
  "cortex-a72:neon:quick"                          # armv8.0: no dotprod -> vmull/vpadal path
  "neoverse-n1:dotprod:quick"                      # dotprod, no i8mm -> SDOT by lane
  "max:i8mm:full"                                  # dotprod+i8mm, SVE at 512 bits -> not the SVE-256 path
  "max,sve-default-vector-length=32:sve256:quick"  # SVE at 256 bits -> 8x8 SVE kernels
)
want=${ARM_CPUS:-}
TESTS=()
for f in tests/test_kernels.py tests/test_repack.py tests/test_linear.py tests/test_linear_parts.py tests/test_attn_prefill.py tests/test_silu_mul.py \
         tests/test_bad_input.py; do
  [[ -f $SRC/$f ]] && TESTS+=("$f")
done
# Tests that run `sys.executable` in a subprocess: a guest can't exec another aarch64 binary without binfmt,
# but it can exec a host script, which starts the emulated interpreter again on the same CPU model.
PYWRAP=$BUILD/python3-aarch64
printf '#!/bin/sh\nexec qemu-aarch64 -cpu "$LOWBIT_QEMU_CPU" -L "%s" "%s/usr/bin/python3.11" "$@"\n' "$ROOT" "$ROOT" > "$PYWRAP"
chmod +x "$PYWRAP"
FAMILIES="scalar neon dotprod i8mm sve256"
fail=0
for c in "${CASES[@]}"; do
  IFS=: read -r cpu fam scope <<<"$c"
  files=("${TESTS[@]}"); extra=""
  if [[ $scope == quick ]]; then
    files=(); for f in "${TESTS[@]}"; do [[ $f == *test_kernels.py || $f == *test_linear*.py || $f == *test_attn_prefill.py || $f == *test_silu_mul.py ]] \
      && files+=("$f"); done
    extra=" and not test_thread_counts and not test_disable_isa and not test_oracle_values"
  fi
  if [[ -n $want && " $want " != *" $cpu "* ]]; then continue; fi
  step "qemu -cpu $cpu: expect *__$fam"
  # one interpreter per CPU (startup under emulation costs seconds): the dispatch assertion, then pytest on
  # the tests of this CPU's kernel family (files that use the selected kernel run in full)
  # deselect tests parametrized by another family's kernels (they are not runnable or not this CPU's choice;
  # the scalar twins are still the oracle inside each test, and are themselves checked natively on x86)
  others=$(for f in $FAMILIES; do [[ $f == "$fam" ]] || { printf '%s__%s' "${sep:-}" "$f"; sep=" or "; }; done); unset sep
  if ! (cd "$SRC" && PYTHONPATH="$SRC/src:$SITE" LOWBIT_EMULATED=1 LOWBIT_EXPECT_FAMILY="$fam" LOWBIT_QEMU_CPU="$cpu" \
      LOWBIT_TEST_K="not ($others)$extra" LOWBIT_PYWRAP="$PYWRAP" \
      qemu-aarch64 -cpu "$cpu" -L "$ROOT" "$ROOT/usr/bin/python3.11" - "${files[@]}" <<'PY'
import os, sys
import pytest
import lowbit.ops as o
info = o.runtime_info()
fam = os.environ["LOWBIT_EXPECT_FAMILY"]
got = {f: o.kernel_for(f)["name"] for f in ("q4_0", "iq4_nl", "q8_0", "cb4", "cb2")}
print(f"  features={info['features']} sve_bits={info['sve_bits']} kernels={got}", flush=True)
bad = {f: n for f, n in got.items() if not n.endswith("__" + fam)}
if bad:
    sys.exit(f"arm: dispatch chose {bad}, expected the {fam} family on this CPU")
sys.executable = os.environ["LOWBIT_PYWRAP"]   # subprocess tests re-enter qemu through the host wrapper
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--tb=short", "-m", "not slow", "--durations=5",
                      "-k", os.environ["LOWBIT_TEST_K"], *sys.argv[1:]]))
PY
  ); then fail=1; fi
done
step "done (fail=$fail)"
exit $fail
