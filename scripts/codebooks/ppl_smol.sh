#!/bin/bash
# docs/codebooks.md SmolLM2-135M PPL/KLD rows: reference = the F32 dequantization of the shipped Q4_1 file.
# usage: M=/tmp/smol/smol.gguf CHUNKS=4 scripts/codebooks/ppl_smol.sh
set -e
M=${M:-/tmp/smol/smol.gguf}
W=${W:-/work/shared/data/wikitext-2-raw/wiki.test.raw}
CHUNKS=${CHUNKS:-4}
D=${D:-/tmp/ppl_smol}; mkdir -p $D
for cfg in q4_0 cb4:16 cb2:4; do
  IFS=: read fmt C <<< "$cfg"
  out=$D/smol_${fmt}${C:+_c$C}.gguf
  args="--format $fmt"; [ -n "$C" ] && args="$args --codebooks $C"
  python -m lowbit.cli quantize $M $args -o $out 2>/dev/null | tail -2
  # --format q8_0: the untouched tied embedding/output runs as q8_0 in every row (auto would pick I8 for cb files)
  python -m lowbit.cli perplexity $out --format q8_0 --text $W --chunks $CHUNKS --kld-ref $M --ref-format f32 --no-progress \
    --json $D/smol.json --label "$cfg" 2>&1 | grep -E "PPL|KLD"
done
