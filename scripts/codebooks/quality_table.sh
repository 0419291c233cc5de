#!/bin/bash
# docs/codebooks.md quality table: WikiText-2 test PPL (ctx 512) + mean KLD vs the reference, for each row.
# usage: scripts/codebooks/quality_table.sh stories|smol [ROW ...]
#   env: CHUNKS (default: all for stories, 64 for smol), D (work dir, default /tmp/qt), W (text), SMOL (Q4_1 GGUF),
#        J (results JSON, default $D/<model>_<chunks>.json), THREADS (per row, default: physical cores),
#        LANES=N: run the rows in N background lanes of THREADS=1 each (after one row has built the reference
#          cache), lane i appending to ${J%.json}_lane<i>.json; on 2 cores two 1-thread lanes did 1.36x the rows
#          per hour of one 2-thread run (the scoring is numpy, single-threaded)
#   rows: f32 (PPL of the reference; skip it: every KLD row prints it, from the cache when cached) q8_0 q4_0 iq4_nl Q4_K_M Q2_K cb4:C cb2:C  (default: all of them, cb4 C=1,4,8,16, cb2 C=4,16)
#         cb4:C:calib, cb2:C:calib, mix:NAME:calib = the same with importance weights from --calib $CALIB
#           (env CALIB, default /tmp/sp/sentencepiece-0.2.3/test/botchan.txt: docs/codebooks.md "Calibration text")
#         mix:NAME = lowbit quantize --format cb2 --keep-cb4 PATTERNS (cb4 C=16 on the matching tensors), NAME:
#           gu = cb2 on ffn_gate + ffn_up, cb4 elsewhere;  up = cb2 on ffn_up only;
#           qkv = cb2 on attn_q/k/v only (15.6% of SmolLM2's weights: 4.19 bpw, under llama.cpp Q2_K's 4.23);
#           qkv4 = the same with cb2 C=4 (the cb2 default before session 5; the other mixes use cb2 C=16)
# Then: python scripts/codebooks/render_table.py $J [lane JSONs]  (the markdown table)
# Files: the reference is stories260K's F32 GGUF / SmolLM2's shipped Q4_1 run as F32. lowbit rows come from
# `lowbit quantize` of that file; Q4_K_M/Q2_K from llama.cpp's quantizer (llama-cpp-python, the `peer` extra,
# scripts/peer_venv.sh) on an F32 GGUF (`lowbit export-gguf --type f32`; for SmolLM2 the dequantized Q4_1),
# token_embd kept F32. Every row runs with --format q8_0 (same embedding/output + Q8_0 activations).
set -e
cd "$(dirname "$0")/../.."
model=$1; shift
W=${W:-/work/shared/data/wikitext-2-raw/wiki.test.raw}
D=${D:-/tmp/qt}; mkdir -p $D
PEER_PY=${PEER_PY:-${LOWBIT_PEER_VENV:-/work/cache/peer-venv}/bin/python}
case $model in
  stories) M=src/lowbit/data/stories260K.gguf; F32=$M; CHUNKS=${CHUNKS:-0} ;;
  smol) M=${SMOL:-$HOME/.cache/lowbit/models/SmolLM2-135M-Instruct.Q4_1.gguf}; F32=$D/smol_f32.gguf; CHUNKS=${CHUNKS:-64}
        [ -f $F32 ] || python -m lowbit.cli export-gguf $M -o $F32 --type f32 ;;
  *) echo "model: stories or smol"; exit 2 ;;
esac
rows=${*:-f32 q8_0 q4_0 iq4_nl Q4_K_M Q2_K cb4:1 cb4:4 cb4:8 cb4:16 cb2:4 cb2:16}
chunk_arg=; [ "$CHUNKS" != 0 ] && chunk_arg="--chunks $CHUNKS"
J=${J:-$D/${model}_${CHUNKS}.json}
thr_arg=; [ -n "$THREADS" ] && thr_arg="-t $THREADS"
if [ -n "$LANES" ]; then   # round-robin the rows over LANES background runs of this script, one thread each
  set -- $rows
  first=$1; shift
  LANES= bash "$0" $model $first     # builds the reference cache (if missing) with every core
  pids=()
  for ((i = 0; i < LANES; i++)); do
    lane_rows=(); n=0
    for r in "$@"; do (( n++ % LANES == i )) && lane_rows+=("$r"); done
    [ ${#lane_rows[@]} -gt 0 ] || continue
    LANES= THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 J=${J%.json}_lane$i.json \
      bash "$0" $model "${lane_rows[@]}" > $D/${model}_lane$i.log 2>&1 &
    pids+=($!)
  done
  fail=0; for p in "${pids[@]}"; do wait $p || fail=1; done
  cat $D/${model}_lane*.log
  exit $fail
fi
for row in $rows; do
  IFS=: read fmt C cal <<< "$row"
  out=$D/${model}_${fmt}${C:+_$C}${cal:+_$cal}.gguf
  calarg=
  if [ "$cal" = calib ]; then
    CALIB=${CALIB:-/tmp/sp/sentencepiece-0.2.3/test/botchan.txt}
    [ -f "$CALIB" ] || { echo "calibration text $CALIB not found (docs/codebooks.md: Calibration text)"; exit 2; }
    calarg="--calib $CALIB"
  elif [ -n "$cal" ]; then echo "unknown row suffix :$cal (only :calib)"; exit 2; fi
  t0=$(date +%s)
  case $fmt in
    f32) out=$M ;;
    Q4_K_M|Q2_K) [ -f $out ] || $PEER_PY scripts/codebooks/llama_quantize.py $F32 $out $fmt --keep-embd > $out.log 2>&1 ;;
    mix) cbc="--codebooks 16"
         case $C in gu) keep='*.attn_*,*.ffn_down.*' ;; up) keep='*.attn_*,*.ffn_gate.*,*.ffn_down.*' ;;
                 qkv) keep='*.attn_output.*,*.ffn_*' ;;
                 qkv4) keep='*.attn_output.*,*.ffn_*'; cbc="--codebooks 4" ;;
           *) echo "unknown mix $C"; exit 2 ;; esac
         [ -f $out ] || python -m lowbit.cli quantize $M --format cb2 $cbc --keep-cb4 "$keep" $calarg -o $out 2>/dev/null | tail -2 ;;
    *) args="--format $fmt $calarg"; [ -n "$C" ] && args="$args --codebooks $C"
       [ -f $out ] || python -m lowbit.cli quantize $M $args -o $out 2>/dev/null | tail -2 ;;
  esac
  t1=$(date +%s)
  if [ $fmt = f32 ]; then   # the reference itself: PPL only (its KLD is 0 by construction)
    python -m lowbit.cli perplexity $M --format f32 --text $W $chunk_arg --no-progress $thr_arg --json $J --label f32 \
      2>&1 | grep -E "PPL"
  else
    # every KLD row records the reference PPL (json ref_ppl; computed with the cache, or read back from it): the
    # F32 row of render_table.py
    # --checkpoint: a row stopped part-way (a killed session) resumes where it was when the script runs it again
    python -m lowbit.cli perplexity $out --format q8_0 --text $W $chunk_arg --kld-ref $M --ref-format f32 --no-progress \
      $thr_arg --json $J --label "$row" --checkpoint $D/${model}_${CHUNKS}_${row//:/_}.ckpt.npz 2>&1 | grep -E "PPL|KLD|resum"
  fi
  t2=$(date +%s)
  python - "$J" "$row" "$out" $((t1 - t0)) $((t2 - t1)) <<'PY'
import json, sys
sys.path.insert(0, "scripts/codebooks")
from bpw import blk_bpw
j, row, path, tq, tp = sys.argv[1:]
data = json.load(open(j))
data["perplexity"][-1].update(bpw=blk_bpw(path), quantize_s=int(tq), perplexity_s=int(tp))
if row.startswith("mix:"):   # cb2 tables per tensor of the mixture (render_table's C column)
    data["perplexity"][-1]["cb2_C"] = 4 if row.split(":")[1] == "qkv4" else 16
json.dump(data, open(j, "w"), indent=1)
PY
  echo "$row: quantize ${t0:+$((t1 - t0))} s, perplexity $((t2 - t1)) s"
done
