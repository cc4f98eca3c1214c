#!/bin/bash
# Issue 13 on the GPU machine, from the project root there: each option of bench_fast_decode.py in its own process.
# usage: bash benchmarks/gpu/fast_decode.sh SIZE(1b|8b) "OPTION ..." PROBE_DIR TOKENIZER_DIR
# Appends one JSON line per option to $OUT/fast_decode_SIZE.jsonl and every log to $OUT/fast_decode_SIZE.log.
# STAGE_S caps one option's seconds; DEADLINE (epoch seconds) stops starting options that would run past it.
set -u
SIZE=$1
OUT=${OUT:-/tmp}
DEADLINE=${DEADLINE:-0}
[ -d /tmp/m$SIZE ] || python3 "$3/make_model.py" /tmp/m$SIZE $SIZE "$4" 2>&1 | tail -1
for o in $2; do
  limit=${STAGE_S:-240}
  if [ "$DEADLINE" -gt 0 ]; then
    left=$(( DEADLINE - $(date +%s) ))
    [ $left -lt 45 ] && { echo "$SIZE $o skipped: ${left}s left before the deadline"; continue; }
    [ $left -lt $limit ] && limit=$left
  fi
  echo "=== $o (limit ${limit}s)" >> $OUT/fast_decode_$SIZE.log
  timeout $limit python3 benchmarks/gpu/bench_fast_decode.py $o /tmp/m$SIZE --out $OUT/fast_decode_$SIZE.jsonl > /tmp/fd_$o.log 2>&1
  rc=$?
  grep -v -E "Loading weights|it/s\]" /tmp/fd_$o.log | tail -60 >> $OUT/fast_decode_$SIZE.log
  echo "$SIZE $o rc=$rc $(grep RESULT /tmp/fd_$o.log | python3 -c 'import sys,json; d=json.loads(sys.stdin.read().split(" ",1)[1]); print({k: d.get(k) for k in ("tok_per_s","decode_ms_per_token","prefill_s","peak_gib","warm_up_s","greedy_tokens_equal_to_eager")})' 2>/dev/null || tail -3 /tmp/fd_$o.log)"
done
