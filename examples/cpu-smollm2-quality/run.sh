#!/usr/bin/env bash
# The committed CPU quality sweep on SmolLM2-135M-Instruct (issue 33), from the repository root:
#   flock /tmp/servesweep-heavy.lock bash examples/cpu-smollm2-quality/run.sh
# Each part is skipped when its result exists (delete a folder to measure it again).
set -uo pipefail
cd "$(git rev-parse --show-toplevel)"
OUT=examples/cpu-smollm2-quality
SS=(python -m servesweep)
NOISE=${NOISE:-0.1}
MODEL=$(python -m servesweep.models.smollm2 | tail -1) || exit 2
DAMAGED=${DAMAGED:-/tmp/smollm2-damaged-$NOISE}
EM=scenarios/gate-smollm2-exact-match.yaml
PPL=scenarios/gate-smollm2-perplexity.yaml
stamp() { echo "[$(date +%H:%M:%S)] $*"; }

# 1. fp32 / fp16 / bf16: drift and the perplexity gate, unloaded and under 8 streams (3 server starts).
if [ ! -f $OUT/sweep/recommendation.json ]; then
  stamp "sweep"; /usr/bin/time -f "sweep: %e s" "${SS[@]}" sweep scenarios/cpu-smollm2-quality.yaml --out $OUT/sweep --no-progress
  stamp "sweep exit $?"
fi
# A sweep whose servers did not start measured nothing: stop before writing gates that cannot be judged.
grep -q '"status": *"ok"' $OUT/sweep/points.jsonl 2>/dev/null || { stamp "no point measured: see $OUT/sweep"; exit 3; }
# 2. The exact-match gate per precision, against the fp32 reference (one server start each).
for p in fp32 fp16 bf16; do
  [ -f $OUT/exact-match/$p/gate.json ] && continue
  [ $p = fp32 ] && [ -f $OUT/exact-match/fp32/reference.json ] && continue
  common=(--spec $EM --backend vllm --model "$MODEL" --precision $p --max-model-len 1024 --out $OUT/exact-match/$p)
  if [ $p = fp32 ]; then "${SS[@]}" gate "${common[@]}" --record-reference
  else "${SS[@]}" gate "${common[@]}" --reference $OUT/exact-match/fp32/reference.json; fi
  stamp "exact match $p exit $?"
done
# 3. The damaged model (Gaussian noise of NOISE x each weight tensor's std): both gates must fail.
[ -f "$DAMAGED/model.safetensors" ] || python -m servesweep.models.smollm2 --noise "$NOISE" --out "$DAMAGED"
ref_ppl=$(ls $OUT/sweep/configs/fp32*/gate-measurement.json | head -1)
if [ ! -f $OUT/damaged/perplexity/gate.json ] || [ ! -f $OUT/damaged/exact-match/gate.json ]; then
  # One server for both gates (exit 1 from each = failed, as it must).
  python $OUT/gates_on_one_server.py "$DAMAGED" fp32 $OUT/damaged "$PPL:$ref_ppl" \
    "$EM:$OUT/exact-match/fp32/reference.json"
  stamp "damaged model done"
fi
cp "$DAMAGED/servesweep-degraded.json" $OUT/damaged/ 2>/dev/null
# 4. fp8 on the CPU build: what it does with --quantization fp8 (no FP8 tensor cores here).
if [ ! -f $OUT/fp8-cpu/gate.json ]; then
  "${SS[@]}" gate --spec $PPL --backend vllm --model "$MODEL" --precision fp8 --max-model-len 1024 \
    --reference "$ref_ppl" --out $OUT/fp8-cpu
  stamp "fp8 on the CPU exit $?"
fi
"${SS[@]}" report $OUT/sweep >/dev/null
stamp "done"
