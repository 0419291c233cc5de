#!/bin/bash
# docs/codebooks.md quality table: WikiText-2 test PPL (ctx 512) + mean KLD vs the reference, for each row.
# usage: scripts/codebooks/quality_table.sh stories|smol [ROW ...]
#   env: CHUNKS (default: all for stories, 64 for smol), D (work dir, default /tmp/qt), W (text), SMOL (Q4_1 GGUF)
#   rows: f32 (PPL of the reference; skip it: the first KLD row prints it too) q8_0 q4_0 iq4_nl Q4_K_M Q2_K cb4:C cb2:C  (default: all of them, cb4 C=1,4,8,16, cb2 C=4,16)
#         cb4:C:calib, cb2:C:calib, mix:NAME:calib = the same with importance weights from --calib $CALIB
#           (env CALIB, default /tmp/sp/sentencepiece-0.2.3/test/botchan.txt: docs/codebooks.md "Calibration text")
#         mix:NAME = lowbit quantize --format cb2 --keep-cb4 PATTERNS (cb4 C=16 on the matching tensors), NAME:
#           gu = cb2 on ffn_gate + ffn_up, cb4 elsewhere;  up = cb2 on ffn_up only;
#           qkv = cb2 on attn_q/k/v only (15.6% of SmolLM2's weights: 4.19 bpw, under llama.cpp Q2_K's 4.23)
# Then: python scripts/codebooks/render_table.py $D/<model>_<chunks>.json  (the markdown table)
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
J=$D/${model}_${CHUNKS}.json
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
    mix) case $C in gu) keep='*.attn_*,*.ffn_down.*' ;; up) keep='*.attn_*,*.ffn_gate.*,*.ffn_down.*' ;;
                 qkv) keep='*.attn_output.*,*.ffn_*' ;;
           *) echo "unknown mix $C"; exit 2 ;; esac
         [ -f $out ] || python -m lowbit.cli quantize $M --format cb2 --keep-cb4 "$keep" $calarg -o $out 2>/dev/null | tail -2 ;;
    *) args="--format $fmt $calarg"; [ -n "$C" ] && args="$args --codebooks $C"
       [ -f $out ] || python -m lowbit.cli quantize $M $args -o $out 2>/dev/null | tail -2 ;;
  esac
  t1=$(date +%s)
  if [ $fmt = f32 ]; then   # the reference itself: PPL only (its KLD is 0 by construction)
    python -m lowbit.cli perplexity $M --format f32 --text $W $chunk_arg --no-progress --json $J --label f32 2>&1 | grep -E "PPL"
  else
    # the first row also computes the reference log-probs (cached); its "reference PPL" line is the F32 row
    python -m lowbit.cli perplexity $out --format q8_0 --text $W $chunk_arg --kld-ref $M --ref-format f32 --no-progress \
      --json $J --label "$row" 2>&1 | grep -E "PPL|KLD" | tee $D/last.log
  fi
  ref_ppl=$(grep -o "reference PPL = .*" $D/last.log 2>/dev/null || true); rm -f $D/last.log
  t2=$(date +%s)
  python - "$J" "$row" "$out" $((t1 - t0)) $((t2 - t1)) "$ref_ppl" <<'PY'
import json, sys
sys.path.insert(0, "scripts/codebooks")
from bpw import blk_bpw
j, row, path, tq, tp, ref = sys.argv[1:]
data = json.load(open(j))
data["perplexity"][-1].update(bpw=blk_bpw(path), quantize_s=int(tq), perplexity_s=int(tp))
if ref:   # "reference PPL = 12.3 +/- 0.4"
    data["perplexity"][-1]["ref_ppl"] = [float(ref.split()[3]), float(ref.split()[5])]
json.dump(data, open(j, "w"), indent=1)
PY
  echo "$row: quantize ${t0:+$((t1 - t0))} s, perplexity $((t2 - t1)) s"
done
