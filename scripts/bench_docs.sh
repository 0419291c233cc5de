#!/usr/bin/env bash
# Regenerate the numbers in docs/benchmarks.md on this machine. Needs the llama.cpp peer (scripts/peer_venv.sh).
# Quiet machine please: the protocol alternates lowbit and llama.cpp, but contention still moves both.
# Usage: scripts/bench_docs.sh [OUT_DIR] ; env REPS (3), PP (512), TG (128), THREADS (1,2), MODELS (/work/cache/models),
#        APPEND (unset), PARTS (default "q4_0 iq4_nl q4_k_m cb smol llama3 contention ppl": run only some parts)
set -euo pipefail
OUT="${1:-docs/bench-results}"
REPS="${REPS:-3}"; PP="${PP:-512}"; TG="${TG:-128}"; THREADS="${THREADS:-1,2}"
M="${MODELS:-/work/cache/models}"
PARTS=" ${PARTS:-q4_0 iq4_nl q4_k_m cb smol llama3 contention ppl} "
want() { [[ "$PARTS" == *" $1 "* ]]; }
mkdir -p "$OUT" "$M"
syn() {  # shape type -> path (made once)
    local f="$M/syn-$1-$2.gguf"
    [ -f "$f" ] || lowbit make-synthetic --shape "$1" --type "$2" -o "$f" >&2
    echo "$f"
}
Q4=$(syn 1b-16l q4_0); IQ4=$(syn 1b-16l iq4_nl); F16=$(syn 1b-16l f16); SYNSMOL=$(syn smollm2-135m q4_0)
J="$OUT/results.json"; [ -n "${APPEND:-}" ] || rm -f "$J"   # APPEND=1 keeps earlier rows (e.g. PARTS run one by one)
common=(-p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" --json "$J")
want q4_0   && lowbit bench "$Q4"  "${common[@]}" --vs-llamacpp --label 1b-16l --markdown "$OUT/1b-q4_0.md"
want iq4_nl && lowbit bench "$IQ4" "${common[@]}" --vs-llamacpp --label 1b-16l --markdown "$OUT/1b-iq4_nl.md"
if want q4_k_m; then   # a format only llama.cpp runs: made by llama.cpp's own quantizer from the F16 synthetic
    Q4KM="$M/syn-1b-16l-q4_k_m.gguf"
    [ -f "$Q4KM" ] || python -c "from lowbit.bench.peer import quantize; quantize('$F16', '$Q4KM', 'Q4_K_M')"
    lowbit bench "$Q4KM" "${common[@]}" --llamacpp-only --label 1b-16l --markdown "$OUT/1b-q4_k_m.md"
fi
if want cb; then       # codebook formats (lowbit only: llama.cpp cannot read them); quantize time is logged too
    for f in cb4 cb2; do
        CB="$M/syn-1b-16l-$f.gguf"
        [ -f "$CB" ] || lowbit quantize "$F16" --format "$f" --all -o "$CB" 2>&1 | tr "\r" "\n" | tail -3 | tee "$OUT/quantize-1b-$f.log"
        lowbit bench "$CB" "${common[@]}" --label 1b-16l --markdown "$OUT/1b-$f.md"
    done
fi
if want smol; then     # the real SmolLM2-135M (Q4_1 file, requantized by lowbit at load) and its synthetic twin in Q4_0
    lowbit pull smollm2-135m >/dev/null
    SMOL=$(python -c "from lowbit.registry import resolve; print(resolve('smollm2-135m'))")
    lowbit bench "$SMOL" "${common[@]}" --format q4_0 --vs-llamacpp --label smollm2-135m --markdown "$OUT/smollm2-q4_1-file.md"
    lowbit bench "$SYNSMOL" "${common[@]}" --vs-llamacpp --label smollm2-135m-syn --markdown "$OUT/smollm2-syn-q4_0.md"
fi
if want llama3; then   # Llama 3.2 1B's shapes (128k tied vocabulary, llama3 RoPE factors), the same file for both
    L32=$(syn llama3.2-1b q4_0)
    lowbit bench "$L32" "${common[@]}" --vs-llamacpp --label llama3.2-1b --markdown "$OUT/llama3.2-1b-q4_0.md"
fi
if want contention; then   # one busy-loop process beside the benchmark: how each engine copes with a shared machine
    yes > /dev/null & HOG=$!
    trap 'kill $HOG 2>/dev/null || true' EXIT
    lowbit bench "$Q4" -p 128 -n 32 -t "$THREADS" -r "$REPS" --vs-llamacpp --no-roofline --label 1b-16l+1-busy-core \
        --markdown "$OUT/1b-q4_0-contention.md"
    kill $HOG; trap - EXIT
fi
if want ppl; then      # quality on a real (tiny) model: stories260K, WikiText-2 vs its F32 weights; + llama.cpp check
    S=src/lowbit/data/stories260K.gguf; W=../shared/data/wikitext-2-raw/wiki.test.raw
    for f in q8_0 q4_0 iq4_nl; do
        lowbit perplexity "$S" --text "$W" --ctx 128 --chunks 64 --format "$f" --kld-ref "$S" --ref-format f32 \
            --json "$J" --label stories260K --no-progress
    done
    lowbit perplexity "$S" --text "$W" --ctx 128 --chunks 64 --format f32 --check-llamacpp --json "$J" --no-progress
fi
lowbit report --json "$J" -o "$OUT/pareto-tg.png"
