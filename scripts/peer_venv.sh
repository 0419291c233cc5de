#!/usr/bin/env bash
# Build the llama.cpp peer (llama-cpp-python, compiled from source, ~6-9 min on 2 cores) ONCE into a
# cached venv, so lowbit's own environment stays light. `lowbit bench --vs-llamacpp` and
# `lowbit perplexity --check-llamacpp` run the peer through this venv's python in a subprocess.
# Usage: scripts/peer_venv.sh            (venv at $LOWBIT_PEER_VENV or /work/cache/peer-venv)
set -euo pipefail
VENV="${LOWBIT_PEER_VENV:-/work/cache/peer-venv}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp, numpy" 2>/dev/null; then
    echo "peer venv ready: $VENV ($("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)'))"
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q numpy
# Native CPU build (AVX2/FMA/F16C here); llama.cpp repacks Q4_0/IQ4_NL to interleaved 8x8 at load.
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" MAKEFLAGS="-j$(nproc)" \
    nice -n 10 "$VENV/bin/pip" install --no-cache-dir "llama-cpp-python==$VERSION"
"$VENV/bin/python" -c "import llama_cpp; print('peer venv ready:', '$VENV', llama_cpp.__version__)"
