#!/usr/bin/env bash
# The C core's tests under AddressSanitizer + UndefinedBehaviorSanitizer. Builds a copy of the tree in
# $LOWBIT_ASAN_DIR (default /tmp/lowbit-asan) so the normal src/lowbit/_core*.so is never touched, then runs the
# kernel tests against that build with the sanitizer runtimes preloaded into the (uninstrumented) interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
DST=${LOWBIT_ASAN_DIR:-/tmp/lowbit-asan}
start=$(date +%s)
rm -rf "$DST"
mkdir -p "$DST"
cp -r csrc setup.py pyproject.toml tests "$DST"/
[ -f README.md ] && cp README.md "$DST"/
mkdir -p "$DST/src"
cp -r src/lowbit "$DST/src/"
find "$DST/src" -name '_core*.so' -delete
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# the copy's setup.py builds at -O1 with the sanitizers (its -O3 would come last on the command line)
sed -i "s/BASE_FLAGS = \[\"-O3\"/BASE_FLAGS = [\"-O1\", \"-g\", $(printf '"%s", ' $SAN | sed 's/, $//')/" "$DST/setup.py"
grep -q -- "-fsanitize=address" "$DST/setup.py" || { echo "sanitize: could not patch setup.py flags"; exit 1; }
cd "$DST"
LDFLAGS="$SAN" python setup.py -q build_ext --inplace >/dev/null
cd "$DST/tests"
ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
export PYTHONPATH="$DST/src${PYTHONPATH:+:$PYTHONPATH}"
export LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# the instrumented copy must be the one imported (not an installed or editable lowbit)
python -c "import lowbit, sys; f = lowbit._core.__file__; sys.exit(0 if f.startswith('$DST') else 'sanitize: imported ' + f)"
python -m pytest -q -p no:cacheprovider -m "not slow" \
    test_kernels.py test_linear.py test_linear_parts.py test_attn_prefill.py test_silu_mul.py test_bad_input.py \
    test_repack.py "$@"
echo "sanitize: ASan+UBSan kernel tests passed in $(( $(date +%s) - start )) s"
