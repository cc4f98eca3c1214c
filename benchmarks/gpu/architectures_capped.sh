#!/bin/bash
# Third call: Gemma-2-27B under a 22 GB cap and Mistral-Nemo-12B (full depth), Phi-3 and Gemma-2 plumbing again.
REPO=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/gpu/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$REPO HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export LLAMA_UNSLOTH_GPU_TOKENIZER=$REPO/.gpu/tok
L=/tmp/logs; mkdir -p $L
pip list 2>/dev/null | grep -i -E "^(torch|transformers|peft|trl|unsloth|unsloth.zoo|bitsandbytes|triton) " > $L/versions.txt
mem() { mkdir -p /tmp/w_$1 && cd /tmp/w_$1 && python3 -m benchmarks.gpu.finetune_memory --tokenizer-dir $REPO/.gpu/tok --work /tmp/fm_$1 $2 --steps 2 --budget-s 390 --out $OUT/gpu_finetune_memory_$1.json > $L/memory_$1.log 2>&1; mkdir -p $L/memory_$1; cp /tmp/fm_$1/*.log $L/memory_$1/ 2>/dev/null; }
plumb() { mkdir -p /tmp/w_$1 && cd /tmp/w_$1 && LLAMA_UNSLOTH_GPU_RESULTS=$OUT/arch_$1.jsonl timeout 420 python3 -m pytest -q -ra -p no:cacheprovider --rootdir $REPO -c $REPO/pyproject.toml -m gpu $REPO/tests/recipes/test_gpu_$1.py --basetemp=/tmp/pt_$1 --junitxml=$L/junit_$1.xml > $L/pytest_$1.log 2>&1; mkdir -p $L/$1; for f in /tmp/pt_$1/*/*.log; do cp $f $L/$1/; done; }
mem gemma "--run gemma2-27b:2x4@2048:cap22" &
mem nemo "--run mistral-nemo-12b:2x4@2048 --run mistral-nemo-12b:1x8@2048" &
plumb phi3_medium_14b &
plumb gemma2_27b &
wait
tar czf $OUT/logs.tgz -C /tmp logs
tail -n 2 $L/pytest_*.log
grep -h '"spec"' $L/memory_*.log | cut -c1-700
