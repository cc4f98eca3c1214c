#!/bin/bash
# Issue 13 on the GPU machine, from the project root there: each option of bench_fast_decode.py in its own process.
# usage: bash benchmarks/gpu/fast_decode.sh SIZE(1b|8b) "OPTION ..." PROBE_DIR TOKENIZER_DIR
# Appends one JSON line per option to $OUT/fast_decode_SIZE.jsonl and every log to $OUT/fast_decode_SIZE.log.
set -u
SIZE=$1
OUT=${OUT:-/tmp}
[ -d /tmp/m$SIZE ] || python3 "$3/make_model.py" /tmp/m$SIZE $SIZE "$4" 2>&1 | tail -1
for o in $2; do
  echo "=== $o" >> $OUT/fast_decode_$SIZE.log
  timeout ${STAGE_S:-240} python3 benchmarks/gpu/bench_fast_decode.py $o /tmp/m$SIZE --out $OUT/fast_decode_$SIZE.jsonl > /tmp/fd_$o.log 2>&1
  rc=$?
  grep -v -E "Loading weights|it/s\]" /tmp/fd_$o.log | tail -40 >> $OUT/fast_decode_$SIZE.log
  echo "$SIZE $o rc=$rc $(grep RESULT /tmp/fd_$o.log | python3 -c 'import sys,json; d=json.loads(sys.stdin.read().split(" ",1)[1]); print({k: d.get(k) for k in ("tok_per_s","peak_gib","warm_up_s","greedy_tokens_equal_to_eager")})' 2>/dev/null || tail -3 /tmp/fd_$o.log)"
done
