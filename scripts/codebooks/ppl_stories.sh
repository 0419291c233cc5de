#!/bin/bash
# docs/codebooks.md PPL/KLD table. stories260K: quantize with lowbit quantize, then PPL + KLD vs the F32 file on WikiText-2 test (first 20 chunks of 512)
set -e
M=${M:-$(python -c "from lowbit.registry import embedded_model; print(embedded_model())")}
W=${W:-/work/shared/data/wikitext-2-raw/wiki.test.raw}
CAL=${CAL:-/tmp/sp/sentencepiece-0.2.3/test/botchan.txt}   # see docs/codebooks.md
D=${D:-/tmp/ppl}; mkdir -p $D

for cfg in q8_0 q4_0 iq4_nl cb4:1 cb4:4 cb4:8 cb4:16 cb2:4 cb2:16 cb4:4:calib cb2:4:calib; do
  IFS=: read fmt C cal <<< "$cfg"
  out=$D/s260_${fmt}${C:+_c$C}${cal:+_cal}.gguf
  args="--format $fmt"; [ -n "$C" ] && args="$args --codebooks $C"; [ -n "$cal" ] && args="$args --calib $CAL"
  python -m lowbit.cli quantize $M $args -o $out 2>/dev/null | tail -2
  # --format q8_0: every row runs its non-cb matrices (the tied output) and activations the same way
  python -m lowbit.cli perplexity $out --format q8_0 --text $W --chunks 20 --kld-ref $M --no-progress --json $D/s260.json --label "$cfg" 2>&1 | grep -E "PPL|KLD"
done
