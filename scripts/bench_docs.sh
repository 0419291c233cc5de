#!/usr/bin/env bash
# Regenerate the numbers in docs/benchmarks.md on this machine. Needs the llama.cpp peer (scripts/peer_venv.sh).
# Quiet machine please: the protocol alternates lowbit and llama.cpp, but contention still moves both.
# Usage: scripts/bench_docs.sh [OUT_DIR] ; env REPS (3), PP (512), TG (128), THREADS (1,2), MODELS (/work/cache/models)
set -euo pipefail
OUT="${1:-docs/bench-results}"
REPS="${REPS:-3}"; PP="${PP:-512}"; TG="${TG:-128}"; THREADS="${THREADS:-1,2}"
M="${MODELS:-/work/cache/models}"
mkdir -p "$OUT" "$M"
syn() {  # shape type -> path (made once)
    local f="$M/syn-$1-$2.gguf"
    [ -f "$f" ] || lowbit make-synthetic --shape "$1" --type "$2" -o "$f" >&2
    echo "$f"
}
Q4=$(syn 1b-16l q4_0); IQ4=$(syn 1b-16l iq4_nl); F16=$(syn 1b-16l f16); SMOL=$(syn smollm2-135m q4_0)
Q4KM="$M/syn-1b-16l-q4_k_m.gguf"
[ -f "$Q4KM" ] || python -c "from lowbit.bench.peer import quantize; quantize('$F16', '$Q4KM', 'Q4_K_M')"
J="$OUT/results.json"; rm -f "$J"
common=(-p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" --json "$J")
lowbit bench "$Q4"   "${common[@]}" --vs-llamacpp --label 1b-16l  --markdown "$OUT/1b-q4_0.md"
lowbit bench "$IQ4"  "${common[@]}" --vs-llamacpp --label 1b-16l  --markdown "$OUT/1b-iq4_nl.md"
lowbit bench "$Q4KM" "${common[@]}" --llamacpp-only --label 1b-16l --markdown "$OUT/1b-q4_k_m.md"
lowbit bench "$SMOL" "${common[@]}" --vs-llamacpp --label smollm2-135m --markdown "$OUT/smollm2-q4_0.md"
# quality on a real (tiny) model: stories260K, WikiText-2, formats vs its F32 weights; + llama.cpp cross-check
S=src/lowbit/data/stories260K.gguf; W=../shared/data/wikitext-2-raw/wiki.test.raw
for f in q8_0 q4_0 iq4_nl; do
    lowbit perplexity "$S" --text "$W" --ctx 128 --chunks 64 --format "$f" --kld-ref "$S" --ref-format f32 \
        --json "$J" --label stories260K --no-progress
done
lowbit perplexity "$S" --text "$W" --ctx 128 --chunks 64 --format f32 --check-llamacpp --json "$J" --no-progress
lowbit report --json "$J" -o "$OUT/pareto-tg.png"
