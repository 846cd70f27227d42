#!/usr/bin/env bash
# One call on the lent GPU machine: build the dummy Llama-3-8B directory, run (or resume) the
# H100 sweep for the precisions given, and pack the results into $OUT.
#   bash bench/gpu_sweep.sh "bf16 fp8"      (vLLM already installed into /tmp/site)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
PRECISIONS=${1:-"bf16 fp8 fp16 fp32"}
BUDGET=${2:-540}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -d /tmp/llama3-8b-dummy ] || python3 -m servesweep.models.tiny --shape llama3-8b --out /tmp/llama3-8b-dummy
sed "s/precision: \[.*\]/precision: [$(echo $PRECISIONS | sed 's/ /, /g')]/" scenarios/h100-llama3-8b.yaml > /tmp/h100.yaml
timeout "$BUDGET" python3 -m servesweep sweep /tmp/h100.yaml --out /tmp/h100-sweep --no-progress --no-report
echo "sweep exit: $?"
tar -C /tmp -czf "$OUT/h100-sweep.tar.gz" --exclude='records.jsonl' h100-sweep
tar -C /tmp -czf "$OUT/h100-records.tar.gz" h100-sweep --wildcards '*/records.jsonl' 2>/dev/null || true
ls -la "$OUT"
