#!/bin/bash
# One device call (from the repository root, carrying .whl/gpu and .gpu: see benchmarks/gpu/prepare_wheels.py): the full-depth memory benchmark and the four architectures' plumbing, side by side.
# usage: bash benchmarks/gpu/architectures.sh "ARCHS" "MEMORY RUN SPECS" MEMORY_BUDGET_S [extra finetune_memory args]
REPO=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/gpu/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$REPO HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export LLAMA_UNSLOTH_GPU_TOKENIZER=$REPO/.gpu/tok
mkdir -p $OUT/logs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > $OUT/logs/gpu.txt
pip list 2>/dev/null | grep -i -E "^(torch|transformers|peft|trl|unsloth|unsloth.zoo|bitsandbytes|triton) " > $OUT/logs/versions.txt
ARCHS=$1; SPECS=$2; BUDGET=$3; shift 3
if [ -n "$SPECS" ]; then
  runs=""; for s in $SPECS; do runs="$runs --run $s"; done
  (mkdir -p /tmp/w_mem && cd /tmp/w_mem && python3 -m benchmarks.gpu.finetune_memory --tokenizer-dir $REPO/.gpu/tok --work /tmp/fm $runs --steps 2 --budget-s $BUDGET --out $OUT/gpu_finetune_memory.json "$@" > $OUT/logs/memory.log 2>&1; mkdir -p $OUT/logs/memory; cp /tmp/fm/*.log $OUT/logs/memory/ 2>/dev/null) &
fi
for a in $ARCHS; do
  (mkdir -p /tmp/w_$a && cd /tmp/w_$a && LLAMA_UNSLOTH_GPU_RESULTS=$OUT/arch_$a.jsonl timeout $((BUDGET+40)) python3 -m pytest -q -ra -p no:cacheprovider --rootdir $REPO -c $REPO/pyproject.toml -m gpu $REPO/tests/recipes/test_gpu_$a.py --basetemp=/tmp/pt_$a --junitxml=$OUT/junit_$a.xml > $OUT/logs/pytest_$a.log 2>&1; mkdir -p $OUT/logs/$a; for f in /tmp/pt_$a/*/*.log; do cp $f $OUT/logs/$a/ 2>/dev/null; done) &
done
wait
tail -n 3 $OUT/logs/pytest_*.log
grep -h '"spec"' $OUT/logs/memory.log | cut -c1-400
